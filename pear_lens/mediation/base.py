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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pear_lens import hooks
from pear_lens.errors import PearLensError
from pear_lens.io import json_value
from pear_lens.mediation._forward import capture
from pear_lens.metrics import Difference, Metric, delta, per_example
from pear_lens.results import HeadScores
from pear_lens.vocabulary import StrEnum

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.proxy_task import ProxyTask, TaskBatch


class Ablation(StrEnum):
    """What replaces a head's output."""

    MEAN = "mean"
    """Its mean over the batch, position by position (the reference)."""
    ZERO = "zero"
    """Zeros."""
    RESAMPLE = "resample"
    """The same head's output on another sequence of the batch (a seeded derangement)."""


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


def ablate(z: Tensor, ablation: Ablation, perm: Tensor | None = None) -> Tensor:
    """Replacement for one head's clean output ``z`` of shape ``[batch, ...]``."""
    if ablation is Ablation.MEAN:
        return z.mean(0, keepdim=True).expand_as(z)
    if ablation is Ablation.ZERO:
        return torch.zeros_like(z)
    if ablation is Ablation.RESAMPLE:
        assert perm is not None
        return z[perm]
    raise PearLensError(f"unknown ablation {ablation!r}")


def replacer(ablation: Ablation, batch_size: int, seed: int) -> Callable[[Tensor], Tensor]:
    """:func:`ablate` for one setting: resample's derangement of the batch is drawn once, from ``seed``."""
    perm = derangement(batch_size, seed) if ablation is Ablation.RESAMPLE else None
    return lambda z: ablate(z, ablation, perm)


def check_batch(task: "ProxyTask", ablation: Ablation) -> None:
    if ablation in (Ablation.MEAN, Ablation.RESAMPLE):
        small = [b for b, _ in task.settings if b < 2]
        if small:
            raise PearLensError(
                f"{ablation.value} ablation needs a batch of at least 2 sequences (got {small[0]}); "
                "increase the batch or use ablation='zero'"
            )


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
    record = {k: json_value(v) for k, v in {**given, **values}.items()}
    first = [k for k in RECORD_ORDER if k in record]
    return {k: record[k] for k in first + [k for k in record if k not in first]}


SettingFn = Callable[["TaskBatch", "tqdm"], tuple[Tensor, float]]


def run_settings(
    model: "LoadedModel",
    task: "ProxyTask",
    metric: Metric,
    difference: Difference,
    method: str,
    per_setting: SettingFn,
    *,
    options: dict,
    progress: bool,
    steps_per_setting: int,
) -> HeadScores:
    """Loop over the task's settings, collect π̃ and π, and build the :class:`HeadScores`."""
    batches = task.batches(model)
    deltas, cleans, seconds = [], [], []
    bar = tqdm(total=steps_per_setting * len(batches), desc=f"{method} scan", unit="layer",
               disable=not progress, leave=False)
    with bar:
        for batch in batches:
            bar.set_postfix_str(f"N={batch.batch_size} n={batch.n}")
            t0 = time.perf_counter()
            patched, clean = per_setting(batch, bar)
            seconds.append(time.perf_counter() - t0)
            deltas.append(delta(patched.double(), clean, difference).float())
            cleans.append(float(clean))
    per = torch.stack(deltas)
    return HeadScores(
        scores=per.mean(0), per_setting=per, clean_metric=cleans, model=model.name, method=method,
        metric=metric.value, difference=difference.value, task=task.to_dict(), options=options,
        fingerprint=model.fingerprint, extra={"seconds_per_setting": seconds, "seconds": sum(seconds)},
    )


Scan = Callable[["LoadedModel", "TaskBatch", Metric, Any, int, "tqdm"], tuple[Tensor, float]]
"""One setting of a scoring method: ``scan(model, batch, metric, options, seed, bar)`` returns π̃ of every head
(``[n_layers, n_heads]``) and the clean π, advancing ``bar`` once per layer."""


def scoring_method(name: str, short: str, description: str, options_type: type, **fixed: object):
    """Make and register scoring method ``name`` from its per-setting :data:`Scan`.

    The decorated function scans one setting; the name it is bound to becomes the public method, with the
    signature every method shares, ``(model, task, metric, *, difference, seed, progress, options) ->
    HeadScores``, and the scan's docstring. The method refuses a batch too small for ``options.ablation``,
    runs the scan on each setting and records ``options`` as given, then ``fixed`` (what the method fixes,
    e.g. ``path``'s positions) and the seed (:func:`record_options`).
    """
    def make(scan: Scan) -> Callable[..., HeadScores]:
        def method(
            model: "LoadedModel",
            task: "ProxyTask",
            metric: Metric = Metric.LOGIT_MINUS_MEAN,
            *,
            difference: Difference = Difference.RELATIVE,
            seed: int = 0,
            progress: bool = True,
            options: Any = None,
        ) -> HeadScores:
            options = options or options_type()
            check_batch(task, options.ablation)
            return run_settings(model, task, metric, difference, name,
                                lambda batch, bar: scan(model, batch, metric, options, seed, bar),
                                options=record_options(options, **fixed, seed=seed), progress=progress,
                                steps_per_setting=model.n_layers)

        method.__name__, method.__qualname__ = scan.__name__, scan.__qualname__
        method.__module__, method.__doc__ = scan.__module__, scan.__doc__
        return register(name, short, description, options_type)(method)
    return make


def each_head(model: "LoadedModel", heads: list[tuple[int, int]] | None, bar,
              patched_logits: Callable[[int, int], Tensor], targets: Tensor, metric: Metric) -> Tensor:
    """π̃ of every head (or of ``heads``), ``[n_layers, n_heads]`` (NaN where not scored): the loop of the
    one-head-at-a-time scans. ``patched_logits(layer, head)`` returns the logits at ``end`` with that head
    patched; ``bar`` advances once per layer (once per head when ``heads`` is given).
    """
    n_layers, n_heads = model.n_layers, model.n_heads
    patched = torch.full((n_layers, n_heads), float("nan"))
    todo = heads if heads is not None else [(l, h) for l in range(n_layers) for h in range(n_heads)]
    for layer, head in todo:
        patched[layer, head] = per_example(patched_logits(layer, head), targets, metric).mean().float()
        if head == n_heads - 1 or heads is not None:
            bar.update(1)
    return patched


def patch_head(head: int, where: int | slice, value: Tensor):
    """A ``hook_z`` hook that writes ``value`` into ``head`` at ``where`` (a position or a slice)."""
    def hook_fn(z: Tensor, hook) -> Tensor:
        z = z.clone()
        z[:, where, head] = value
        return z
    return hook_fn


@torch.no_grad()
def one_forward_per_head(model: "LoadedModel", batch: "TaskBatch", metric: Metric, ablation: Ablation,
                         where: int | slice, seed: int, bar, heads: list[tuple[int, int]] | None = None,
                         frozen: Sequence[str] = ()) -> tuple[Tensor, float]:
    """The plain reference scan: one full hooked forward per head on the whole sequence, the head's output
    replaced at ``where`` (a position or a slice) and the activations named in ``frozen`` pinned to their
    clean values. Every fast scan is tested against it."""
    bridge, n_layers = model.bridge, model.n_layers
    end = batch.end
    logits, acts = capture(bridge, batch.tokens, [*frozen] + [hooks.z(l) for l in range(n_layers)])
    clean = per_example(logits[:, end], batch.targets, metric).mean().item()
    replace = replacer(ablation, batch.batch_size, seed)

    def freeze(name: str):
        return lambda t, hook: acts[name]

    def patched_logits(layer: int, head: int) -> Tensor:
        value = replace(acts[hooks.z(layer)][:, where, head])
        patch = (hooks.z(layer), patch_head(head, where, value))
        return bridge.run_with_hooks(batch.tokens, fwd_hooks=[(n, freeze(n)) for n in frozen] + [patch])[:, end]

    return each_head(model, heads, bar, patched_logits, batch.targets, metric), clean
