"""What every scoring method shares: the registry, the ablations and the loop over settings.

A scoring method is a function ``(model, task, metric, *, difference, seed, progress,
options) -> HeadScores`` registered under a key with its options dataclass (each field an
Enum or a typed value with a docstring): the API builds and checks that dataclass once
(:func:`pear_lens.mediation.method_options`), the command line offers its fields, and the
method takes the instance and records it as given (:func:`record_options`). Each computes, for every
(batch, n) setting of the task, the clean π and the patched π̃ of every head;
the shared code turns those into Δπ and averages over settings.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pear_lens import hooks
from pear_lens.errors import PearLensError
from pear_lens.io import as_json
from pear_lens.mediation._forward import capture
from pear_lens.mediation.checkpoint import ScanCheckpoint, batch_key, scan_key
from pear_lens.metrics import Difference, Metric, MetricFn, check_metric, delta, evaluate, metric_name
from pear_lens.results import HeadScores
from pear_lens.vocabulary import StrEnum
from pear_lens.heads import Head

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.prompt_task import ScoredBatch, ScoredTask


class Ablation(StrEnum):
    """What replaces a head's output."""

    MEAN = "mean"
    """Its mean over the batch, position by position (the reference)."""
    ZERO = "zero"
    """Zeros."""
    RESAMPLE = "resample"
    """The same head's output on another sequence of the batch (a seeded derangement)."""
    CORRUPTED = "corrupted"
    """The same head's output on the prompt's corrupted version (a task with corrupted prompts): patching from a
    corrupted run."""


class Positions(StrEnum):
    """Where a head's output is replaced."""

    ALL = "all"
    """Every position up to the scored one."""
    END = "end"
    """Only the scored position ``end``."""

    def index(self, end: int) -> int | slice:
        """The positions replaced, as an index into the sequence axis (``end``: the scored position)."""
        return end if self is Positions.END else slice(None)


class Implementation(StrEnum):
    """How an exact scan is computed."""

    FAST = "fast"
    """The fast exact scan (batched or cached; see the method's module)."""
    PLAIN = "plain"
    """One full hooked forward per head: the slow reference the tests compare against."""


@dataclass(frozen=True)
class NoOptions:
    """A scoring method without options of its own."""


def derangement(n: int, seed: int) -> Tensor:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        if n < 2 or not bool((perm == torch.arange(n)).any()):
            return perm


def ablate(z: Tensor, ablation: Ablation, perm: Tensor | None = None, corrupt: Tensor | None = None) -> Tensor:
    """Replacement for one head's clean output ``z`` of shape ``[batch, ...]``; ``corrupt`` is the same slice of
    the corrupted run (only for :attr:`Ablation.CORRUPTED`)."""
    if ablation is Ablation.MEAN:
        return z.mean(0, keepdim=True).expand_as(z)
    if ablation is Ablation.ZERO:
        return torch.zeros_like(z)
    if ablation is Ablation.RESAMPLE:
        assert perm is not None
        return z[perm]
    if ablation is Ablation.CORRUPTED:
        assert corrupt is not None and corrupt.shape == z.shape
        return corrupt
    raise PearLensError(f"unknown ablation {ablation!r}")


Replace = Callable[..., Tensor]
"""``replace(z, corrupt=None)``: the replacement of one head's clean output slice ``z`` (``corrupt``: the same
slice of the corrupted run, needed by :attr:`Ablation.CORRUPTED` only)."""


def replacer(ablation: Ablation, batch_size: int, seed: int) -> Replace:
    """:func:`ablate` for one setting: resample's derangement of the batch is drawn once, from ``seed``."""
    perm = derangement(batch_size, seed) if ablation is Ablation.RESAMPLE else None
    return lambda z, corrupt=None: ablate(z, ablation, perm, corrupt)


def check_batches(batches: Sequence["ScoredBatch"], ablation: Ablation, max_batch: int | None = None) -> None:
    """Refuse, before any scoring, a batch the ablation cannot use (one line with the fix); ``max_batch``: the
    task's (a task that splits the prompts of one length into several batches)."""
    if ablation in (Ablation.MEAN, Ablation.RESAMPLE) and max_batch is not None:
        raise PearLensError(
            f"{ablation.value} ablation draws on all the prompts of one length, and this task splits them into "
            f"batches of at most {max_batch}; build the task without max_batch, or use ablation='zero' or 'corrupted'"
        )
    if ablation in (Ablation.MEAN, Ablation.RESAMPLE):
        small = [b.batch_size for b in batches if b.batch_size < 2]
        if small:
            raise PearLensError(
                f"{ablation.value} ablation needs a batch of at least 2 sequences (got {small[0]}); "
                "increase the batch (on a task of your own: at least 2 prompts of each scored length) or use "
                "ablation='zero' or 'corrupted'"
            )
    if ablation is Ablation.CORRUPTED and any(getattr(b, "corrupted", None) is None for b in batches):
        raise PearLensError("ablation 'corrupted' needs a corrupted version of every prompt; give corrupted=... "
                            "to the task (the copy proxy task has none), or use ablation='mean'")


def corrupted_z(model: "LoadedModel", batch: "ScoredBatch", ablation: Ablation, pos: int | None = None,
                upto: int | None = None) -> dict[str, Tensor]:
    """Every layer's ``hook_z`` on the batch's corrupted prompts (tokens up to ``upto``, kept at ``pos``), for
    :attr:`Ablation.CORRUPTED`; empty for any other ablation."""
    if ablation is not Ablation.CORRUPTED:
        return {}
    tokens = batch.corrupted if upto is None else batch.corrupted[:, :upto]
    _, acts = capture(model.bridge, tokens, [hooks.z(l) for l in range(model.n_layers)], pos=pos, logits_to_keep=1)
    return acts


@dataclass
class SettingScan:
    """What one scan of one batch gives: the mean patched metric of every head, the clean one, and both per
    prompt (the error bars are computed from these)."""

    patched: Tensor
    """``[n_layers, n_heads]``: the batch mean of π̃ with each head patched (NaN where a head was not scored)."""
    clean: float
    """The batch mean of the clean π."""
    patched_each: Tensor
    """``[batch, n_layers, n_heads]``: π̃ of every prompt."""
    clean_each: Tensor
    """``[batch]``: the clean π of every prompt."""


@dataclass(frozen=True)
class Method:
    """A registered scoring method."""

    name: str
    short: str
    """Short label for legends."""
    description: str
    fn: Callable[..., HeadScores]
    options: type = NoOptions
    """Dataclass of the method's own options: ``fn`` takes an instance as ``options=`` (None: the defaults)."""


METHODS: dict[str, Method] = {}


def register(name: str, short: str, description: str, options: type = NoOptions):
    """Register ``fn`` as scoring method ``name``; ``options`` is the dataclass of its own options.

    A name registered twice is refused (a silent replacement would change what ``--method NAME`` runs);
    to redefine a method, ``del METHODS[name]`` first.
    """
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of scoring method {name!r} must be a dataclass, got {options!r}")
    if name in METHODS:
        raise PearLensError(f"a scoring method named {name!r} is already registered; choose another name "
                            f"(or remove the old one first: del pear_lens.mediation.METHODS[{name!r}])")

    def wrap(fn: Callable[..., HeadScores]) -> Callable[..., HeadScores]:
        METHODS[name] = Method(name, short, description, fn, options)
        return fn
    return wrap


RECORD_ORDER = ("ablation", "positions", "implementation")
"""Options several methods share, recorded first and in this order so the columns of different
methods' tables line up."""


def record_options(options: object, **values: object) -> dict[str, object]:
    """What :class:`HeadScores` records of a method's options: every field of the ``options`` dataclass as
    given (an Enum by its value), then ``values`` (what the method fixes, e.g. ``path`` patches only at
    ``end``, and the seed), the shared options first in :data:`RECORD_ORDER`."""
    given = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    record = {k: as_json(v) for k, v in {**given, **values}.items()}
    first = [k for k in RECORD_ORDER if k in record]
    return {k: record[k] for k in first + [k for k in record if k not in first]}


SettingFn = Callable[["ScoredBatch", "tqdm"], SettingScan]


def run_settings(
    model: "LoadedModel",
    task: "ScoredTask",
    metric: "Metric | MetricFn",
    difference: Difference,
    method: str,
    per_setting: SettingFn,
    *,
    options: dict,
    progress: bool,
    steps_per_setting: int,
    batches: Sequence["ScoredBatch"] | None = None,
    checkpoint: "str | os.PathLike | None" = None,
) -> HeadScores:
    """Scan every batch of the task, pool the batches of each setting, and build the :class:`HeadScores`.

    A setting's Δπ compares the mean π̃ and the mean π over its prompts (a setting scanned in one batch keeps
    the batch's own means, so the proxy task's scores are what they always were); the score is the mean over
    settings. Per-prompt values are kept in the task's prompt order. ``checkpoint``: a folder each batch's scan
    is saved into as it is made and read back from on a later run (:mod:`pear_lens.mediation.checkpoint`).
    """
    batches = task.batches(model) if batches is None else batches
    saved = ScanCheckpoint(checkpoint) if checkpoint is not None else None
    key_of_scan = scan_key(model, method, options, metric) if saved is not None else ""
    scans: list[SettingScan] = []
    seconds = []
    resumed = 0
    bar = tqdm(total=steps_per_setting * len(batches), desc=f"{method} scan", unit="layer",
               disable=not progress, leave=False)
    with bar:
        for batch in batches:
            bar.set_postfix_str(batch.label)
            key = batch_key(key_of_scan, batch) if saved is not None else ""
            done = saved.load(key) if saved is not None else None
            if done is not None:
                scans.append(SettingScan(done.patched, done.clean, done.patched_each, done.clean_each))
                seconds.append(done.seconds)
                resumed += 1
                bar.update(steps_per_setting)
                continue
            t0 = time.perf_counter()
            scans.append(per_setting(batch, bar))
            seconds.append(time.perf_counter() - t0)
            if saved is not None:
                new = scans[-1]
                saved.save(key, new.patched, new.clean, new.patched_each, new.clean_each, seconds[-1])
    settings = [int(b.setting) for b in batches]
    deltas, cleans = [], []
    for s in range(max(settings) + 1):
        mine = [(b, scan) for b, scan in zip(batches, scans) if b.setting == s]
        if len(mine) == 1:
            patched, clean = mine[0][1].patched, mine[0][1].clean
        else:  # a setting scanned in several batches (prompts of different lengths): means over all its prompts
            n = sum(b.batch_size for b, _ in mine)
            patched = sum(scan.patched.double() * b.batch_size for b, scan in mine) / n
            clean = float(sum(scan.clean * b.batch_size for b, scan in mine) / n)
        deltas.append(delta(patched.double(), clean, difference).float())
        cleans.append(float(clean))
    per = torch.stack(deltas)
    order = torch.cat([b.prompt_index if getattr(b, "prompt_index", None) is not None
                       else torch.full((b.batch_size,), -1) for b in batches])
    each = torch.cat([scan.patched_each for scan in scans])
    clean_each = torch.cat([scan.clean_each for scan in scans])
    setting_each = torch.cat([torch.full((b.batch_size,), int(b.setting)) for b in batches])
    if bool((order >= 0).all()):  # back to the order the user gave the prompts in
        inverse = torch.argsort(order)
        each, clean_each, setting_each = each[inverse], clean_each[inverse], setting_each[inverse]
    return HeadScores(
        scores=per.mean(0), per_setting=per, clean_metric=cleans, model=model.name, method=method,
        metric=metric_name(metric), difference=difference.value, task=task.to_dict(), options=options,
        fingerprint=model.fingerprint,  # of the weights in model.dtype, recorded beside it
        extra={"seconds_per_setting": seconds, "seconds": sum(seconds), "dtype": model.dtype,
               **({"resumed_batches": resumed} if saved is not None else {})},
        per_prompt=each, clean_per_prompt=clean_each, prompt_setting=setting_each,
    )


Scan = Callable[["LoadedModel", "ScoredBatch", "Metric | MetricFn", Any, int, "tqdm"], SettingScan]
"""One batch of a scoring method: ``scan(model, batch, metric, options, seed, bar)`` returns its
:class:`SettingScan`, advancing ``bar`` once per layer."""


def scoring_method(name: str, short: str, description: str, options_type: type, **fixed: object):
    """Make and register scoring method ``name`` from its per-batch :data:`Scan`.

    The decorated function scans one batch; the name it is bound to becomes the public method, with the
    signature every method shares, ``(model, task, metric, *, difference, seed, progress, options) ->
    HeadScores``, and the scan's docstring. The method refuses a batch the ablation cannot use and a metric the
    task cannot give, runs the scan on each batch and records ``options`` as given, then ``fixed`` (what the
    method fixes, e.g. ``path``'s positions) and the seed (:func:`record_options`).
    """
    def make(scan: Scan) -> Callable[..., HeadScores]:
        def method(
            model: "LoadedModel",
            task: "ScoredTask",
            metric: "Metric | MetricFn" = Metric.LOGIT_MINUS_MEAN,
            *,
            difference: Difference = Difference.RELATIVE,
            seed: int = 0,
            progress: bool = True,
            options: Any = None,
            checkpoint: "str | os.PathLike | None" = None,
        ) -> HeadScores:
            options = options or options_type()
            batches = task.batches(model)
            check_batches(batches, options.ablation, getattr(task, "max_batch", None))
            check_metric(metric, batches[0])
            return run_settings(model, task, metric, difference, name,
                                lambda batch, bar: scan(model, batch, metric, options, seed, bar),
                                options=record_options(options, **fixed, seed=seed), progress=progress,
                                steps_per_setting=model.n_layers, batches=batches, checkpoint=checkpoint)

        method.__name__, method.__qualname__ = scan.__name__, scan.__qualname__
        method.__module__, method.__doc__ = scan.__module__, scan.__doc__
        return register(name, short, description, options_type)(method)
    return make


def each_head(model: "LoadedModel", heads: list[Head] | None, bar,
              patched_logits: Callable[[int, int], Tensor], batch: "ScoredBatch", metric: "Metric | MetricFn",
              clean_each: Tensor) -> SettingScan:
    """π̃ of every head (or of ``heads``; NaN where not scored): the loop of the one-head-at-a-time scans.
    ``patched_logits(layer, head)`` returns the logits at ``end`` with that head patched; ``bar`` advances once
    per layer (once per head when ``heads`` is given).
    """
    n_layers, n_heads = model.n_layers, model.n_heads
    patched = torch.full((n_layers, n_heads), float("nan"))
    each = torch.full((batch.batch_size, n_layers, n_heads), float("nan"))
    todo = heads if heads is not None else [(l, h) for l in range(n_layers) for h in range(n_heads)]
    for layer, head in todo:
        values = evaluate(metric, patched_logits(layer, head), batch)
        patched[layer, head] = values.mean().float()
        each[:, layer, head] = values.float().cpu()
        if head == n_heads - 1 or heads is not None:
            bar.update(1)
    return SettingScan(patched, clean_each.mean().item(), each, clean_each.float().cpu())


def patch_head(head: int, where: int | slice, value: Tensor):
    """A ``hook_z`` hook that writes ``value`` into ``head`` at ``where`` (a position or a slice)."""
    def hook_fn(z: Tensor, hook) -> Tensor:
        z = z.clone()
        z[:, where, head] = value
        return z
    return hook_fn


@torch.no_grad()
def one_forward_per_head(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn",
                         ablation: Ablation, where: int | slice, seed: int, bar,
                         heads: list[Head] | None = None, frozen: Sequence[str] = ()) -> SettingScan:
    """The plain reference scan: one full hooked forward per head on the whole sequence, the head's output
    replaced at ``where`` (a position or a slice) and the activations named in ``frozen`` pinned to their
    clean values. Every fast scan is tested against it."""
    bridge, n_layers = model.bridge, model.n_layers
    end = batch.end
    logits, acts = capture(bridge, batch.tokens, [*frozen] + [hooks.z(l) for l in range(n_layers)])
    corrupt = corrupted_z(model, batch, ablation)
    clean_each = evaluate(metric, logits[:, end], batch)
    replace = replacer(ablation, batch.batch_size, seed)

    def freeze(name: str):
        return lambda t, hook: acts[name]

    def patched_logits(layer: int, head: int) -> Tensor:
        name = hooks.z(layer)
        value = replace(acts[name][:, where, head], corrupt[name][:, where, head] if corrupt else None)
        patch = (name, patch_head(head, where, value))
        return bridge.run_with_hooks(batch.tokens, fwd_hooks=[(n, freeze(n)) for n in frozen] + [patch])[:, end]

    return each_head(model, heads, bar, patched_logits, batch, metric, clean_each)
