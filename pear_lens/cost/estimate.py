"""The estimate itself: count each stage's passes, probe the device, price the passes, add up time and memory.

:func:`estimate_cost` loads the model (or takes a loaded one), reads its shape, builds the passes of the head
scan, one training and an evaluation (:mod:`pear_lens.cost.work`), probes the kinds of pass they use on the
model's device (:mod:`pear_lens.cost.probes`) and returns a :class:`CostEstimate`: per stage the predicted
seconds, the peak memory (weights plus the largest pass's activations: estimated from the shapes, or on CUDA
scaled from what the probes allocated), and what was counted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from pear_lens.config import check_fields, option
from pear_lens.cost.advice import WorkerAdvice, advise_workers
from pear_lens.cost.probes import Clock, Rates, probe_eval, probe_scan, probe_train
from pear_lens.cost.shape import ModelShape
from pear_lens.cost.work import (Kind, Pass, batches_of, describe, generation_passes, likelihood_passes, scan_passes,
                                 train_passes)
from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import TaskName
from pear_lens.heads import check_heads

if TYPE_CHECKING:
    from pear_lens.heads import Head
    from pear_lens.models.loaded import LoadedModel, ModelLike
    from pear_lens.proxy_task import ProxyTask
    from pear_lens.recipe import Recipe

STAGES = ("scan", "train", "eval")
"""The stages an estimate prices: the head scan, one training, one evaluation."""


@dataclass
class EvalWork:
    """The size of one evaluation (``pear-lens eval``'s options that set what it costs)."""

    task: str = option("kv", choices=[t.value for t in TaskName],
                       help="the RAG task evaluated (`pear-lens eval --task`)")
    n: int = option(300, help="items (`pear-lens eval --n`)")
    batch_size: int = option(16, help="prompts per batch (`pear-lens eval --batch-size`)")
    conditions: int = option(2, help="conditions evaluated, each on every item (baseline and PEAR: 2)")
    likelihood: bool = option(False, help="also the teacher-forced likelihood endpoints "
                                          "(`pear-lens eval --likelihood`)")
    cad: bool = option(False, help="also context-aware decoding (`pear-lens eval --cad`): one more condition, "
                                   "each of whose passes runs again on the context-free prompt")
    seed: int = option(0, help="seed of the generated items (`pear-lens eval --seed`)")

    def __post_init__(self) -> None:
        check_fields(self)
        TaskName.parse(self.task)
        for name in ("n", "batch_size", "conditions"):
            if getattr(self, name) < 1:
                raise PearLensError(f"eval {name} must be at least 1, got {getattr(self, name)}")
        if self.cad and TaskName.parse(self.task) is TaskName.CLOSED_BOOK:
            raise PearLensError("eval.cad contrasts the model with and without the context; the closed-book task has "
                                "none: leave out --eval.cad or choose another --eval.task")


@dataclass(frozen=True)
class StageCost:
    """One stage's predicted time and peak memory, and what was counted."""

    stage: str
    seconds: float
    peak_bytes: int
    peak_measured: bool
    """True on CUDA (scaled from the probes' allocations), False where estimated from the shapes."""
    what: str
    """The work priced, in words."""
    passes: tuple[Pass, ...] = field(repr=False)
    parts: dict[str, float] = field(default_factory=dict)
    """Seconds of each part of the stage (e.g. an evaluation's decoding and likelihood)."""
    upper_seconds: float | None = None
    """An evaluation's seconds if every answer ran to ``max_new_tokens`` (``seconds`` expects each to end after
    the gold answer's length)."""

    @property
    def minutes(self) -> float:
        return self.seconds / 60


@dataclass
class CostEstimate:
    """What the head scan, one training and one evaluation of a model should take on a device."""

    model: str
    device: str
    dtype: str
    shape: ModelShape
    stages: list[StageCost]
    load_seconds: float | None
    """Seconds the model took to load here (None: it was handed over loaded)."""
    probe_seconds: float
    rates: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def stage(self, name: str) -> StageCost:
        for s in self.stages:
            if s.stage == name:
                return s
        raise PearLensError(f"this estimate has no stage {name!r}; it has {', '.join(s.stage for s in self.stages)}")

    def to_dataframe(self) -> pd.DataFrame:
        """One row per stage: seconds, minutes, peak memory (GB) and whether measured, the passes, what."""
        return pd.DataFrame([{"model": self.model, "device": self.device, "stage": s.stage, "seconds": s.seconds,
                              "minutes": s.minutes, "peak_gb": s.peak_bytes / 1e9, "peak_measured": s.peak_measured,
                              "passes": sum(p.count for p in s.passes), "what": s.what} for s in self.stages])

    def advise(self, jobs: int, kind: str, deadline_hours: float | int | None = None) -> WorkerAdvice:
        """How many workers ``jobs`` jobs of stage ``kind`` (each loading the model) need to end within
        ``deadline_hours`` (:func:`pear_lens.cost.advice.advise_workers`)."""
        per_job = self.stage(kind).seconds + (self.load_seconds or 0.0)
        return advise_workers(jobs, per_job, deadline_hours, kind=kind, device=self.device)

    def lines(self) -> list[str]:
        s = self.shape
        head = (f"{self.model} on {self.device} in {self.dtype}: {s.n_layers} layers x {s.n_heads} heads "
                f"({s.n_kv_heads} key-value), d_model {s.d_model}, MLP {s.d_mlp}, vocabulary {s.d_vocab:,}, "
                f"{s.params / 1e6:.1f} M parameters ({s.weight_bytes / 1e9:.2f} GB)")
        out = [head]
        for st in self.stages:
            how = "measured on the probes" if st.peak_measured else "estimated from the shapes"
            upper = f" (up to {_duration(st.upper_seconds)} if every answer runs to the token limit)" \
                if st.upper_seconds is not None and st.upper_seconds > 1.05 * st.seconds else ""
            out.append(f"  {st.stage:<5} ~{_duration(st.seconds):>9}{upper}  "
                       f"peak ~{st.peak_bytes / 1e9:.2f} GB ({how})")
            out.append(f"        {st.what}")
        load = f"model load {self.load_seconds:.1f} s; " if self.load_seconds is not None else ""
        out.append(f"  {load}probes {self.probe_seconds:.1f} s on this device; the model load is not in the stages")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- the estimate


def estimate_cost(model: "ModelLike", *, task: "ProxyTask | None" = None, recipe: "Recipe | None" = None,
                  heads: Sequence["Head"] = (), evaluation: EvalWork | None = None,
                  stages: Sequence[str] = STAGES, device: str | None = None, dtype: str = "float32",
                  device_map: str | dict[str, Any] | None = None, budget: float = 1.0) -> CostEstimate:
    """Predict the time and peak memory of the head scan on ``task`` (default: the reference proxy task), one
    training with ``recipe`` (default: the reference recipe) and the evaluation ``evaluation`` (default:
    :class:`EvalWork`'s) of ``model`` on its device.

    ``model``: a loaded model, or a name or folder to load on ``device`` (or spread by ``device_map``) in
    ``dtype`` (the load is timed: each job of a study pays it). ``heads``: the heads the training trains (the
    backward pass reaches down to the lowest of them; none given: layer 0, an upper bound). ``budget``: about how
    many seconds each series of probes may run (more: a steadier estimate).

    >>> from pear_lens import load_model, ProxyTask, Recipe
    >>> est = estimate_cost(load_model("tiny-llama"), task=ProxyTask(settings=((4, 8),)),
    ...                     recipe=Recipe(steps=2, batch_size=2, micro_batch=2, n=8), stages=("scan", "train"),
    ...                     budget=0.05)
    >>> [s.stage for s in est.stages]
    ['scan', 'train']
    """
    from pear_lens.models.loaded import LoadedModel, as_loaded, check_device, load_model
    from pear_lens.proxy_task import ProxyTask
    from pear_lens.recipe import as_recipe

    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise PearLensError(f"unknown stage {unknown[0]!r}; choose among {', '.join(STAGES)}" if unknown
                            else f"give at least one stage to estimate ({', '.join(STAGES)})")
    if not budget > 0:
        raise PearLensError(f"budget must be a positive number of seconds, got {budget}")
    task = task if task is not None else ProxyTask()
    recipe = as_recipe(recipe)
    evaluation = evaluation if evaluation is not None else EvalWork()
    load_seconds = None
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, str):
        if device_map is None:
            check_device(device)
        t0 = time.perf_counter()
        placed = {"device_map": device_map} if device_map is not None else {"device": device}
        loaded = load_model(model, dtype=dtype, **placed)
        load_seconds = time.perf_counter() - t0
    else:
        loaded = as_loaded(model)
    heads = check_heads(heads, loaded.n_layers, loaded.n_heads) if heads else [(0, 0)]
    shape = ModelShape.of(loaded)
    clock = Clock(loaded.cfg.device)
    weights = _allocated(clock) or shape.weight_bytes
    observations, planned = [], {}
    if "scan" in stages:
        task.check_fits(loaded)
        planned["scan"] = (*_scan_plan(loaded, shape, task), weights)
        observations += probe_scan(loaded, shape, task, clock, budget)
    if "train" in stages:
        lowest = min(layer for layer, _ in heads)
        planned["train"] = ({"train": train_passes(shape, recipe, lowest)},
                            f"{recipe.steps} steps of batch {recipe.batch_size} in micro-batches of "
                            f"{recipe.micro_batch}, n {recipe.n}, {recipe.precision}, backward down to layer {lowest}",
                            weights)
        observations += probe_train(loaded, shape, recipe, heads, clock, budget)
    if "eval" in stages:
        parts, what, eval_obs, copy_bytes, longest = _eval_plan(loaded, shape, evaluation, clock, budget)
        planned["eval"] = (parts, what, weights + copy_bytes, longest)
        observations += eval_obs
    rates = Rates(shape, observations)
    costs = [_stage_cost(name, *planned[name], rates=rates, act_bytes=shape.bytes_per_param, measured=clock.cuda)
             for name in STAGES if name in planned]
    return CostEstimate(model=loaded.name, device=str(loaded.cfg.device), dtype=loaded.dtype, shape=shape,
                        stages=costs, load_seconds=load_seconds, probe_seconds=clock.spent, rates=rates.to_dict())


def _allocated(clock: Clock) -> int | None:
    import torch

    return int(torch.cuda.memory_allocated()) if clock.cuda else None


def _stage_cost(name: str, parts: dict[str, list[Pass]], what: str, base_bytes: int,
                longest: dict[str, list[Pass]] | None = None, *, rates: Rates, act_bytes: int,
                measured: bool) -> StageCost:
    passes = [p for group in parts.values() for p in group]
    seconds = {part: sum(rates.seconds(p) for p in group) for part, group in parts.items()}
    upper = None
    if longest:  # every answer decoded to max_new_tokens
        upper = sum(seconds.values()) + sum(sum(rates.seconds(p) for p in group) - seconds[part]
                                            for part, group in longest.items())
    peaks = [(rates.measured_peak(p, act_bytes) if measured else None) for p in passes]
    measured = measured and all(v is not None for v in peaks)
    activations = max((v if measured else p.activation_bytes(rates.shape, act_bytes)) or 0
                      for v, p in zip(peaks, passes))
    return StageCost(name, sum(seconds.values()), int(base_bytes + activations), measured,
                     f"{what}: {describe(passes)}", tuple(passes), seconds, upper)


def _scan_plan(model: "LoadedModel", shape: ModelShape, task: "ProxyTask") -> tuple[dict[str, list[Pass]], str]:
    from pear_lens.mediation._forward import LinearReadout
    from pear_lens.mediation.path import heads_per_pass
    from pear_lens.metrics import Metric

    readout = LinearReadout.for_model(model.bridge, Metric.LOGIT_MINUS_MEAN)
    per = min(heads_per_pass(model, b, readout) for b, _ in task.settings)
    settings = ",".join(f"{b}x{n}" for b, n in task.settings)
    passes = scan_passes(shape, task, per, readout is not None)
    copy = [p for p in passes if p.kind is Kind.COPY_CHECK]
    return ({"copy check": copy, "scan": [p for p in passes if p.kind is not Kind.COPY_CHECK]},
            f"path patching on the proxy settings {settings}, after the copy check")


def _eval_plan(model: "LoadedModel", shape: ModelShape, work: EvalWork, clock: Clock,
               budget: float) -> tuple[dict[str, list[Pass]], str, list, int, dict[str, list[Pass]]]:
    """The evaluation's passes (its items generated and encoded as ``pear-lens eval`` does), the probes of its
    first batch on a fresh Hugging Face copy (the one each condition builds: timed, and priced per condition),
    and the bytes that copy takes."""
    from pear_lens.cost.probes import Observation
    from pear_lens.evaluation.likelihood import encode_candidates
    from pear_lens.evaluation.runner import encode_items
    from pear_lens.evaluation.tasks import generate_items
    from pear_lens.evaluation.tasks.calibration import settings_for
    from pear_lens.evaluation.tasks.facts import closed_book_items, load_facts
    from pear_lens.evaluation.tasks.candidates import without_context
    from pear_lens.evaluation.tasks.prompts import PromptStyle, encode

    name = TaskName.parse(work.task)
    settings = settings_for(model.name, name, model.tokenizer)
    style = PromptStyle.parse(settings.prompt_style)
    facts = load_facts() if name is TaskName.COUNTERFACTUAL else None  # which the model knows is found by running it
    items = generate_items(name, settings, work.n, seed=work.seed, known_facts=facts)
    prompts = encode_items(items, style, model.tokenizer, n_ctx=model.n_ctx, max_new_tokens=settings.max_new_tokens)
    lengths = [len(p) for p in prompts]
    answers = _answer_tokens(items, style, model.tokenizer)
    # context-aware decoding's second side: each item asked without its context
    free = ([len(encode(without_context(it), style, model.tokenizer)) for it in items] if work.cad else None)
    # each condition's model is built afresh for decoding and again for the likelihood endpoints
    builds = (work.conditions + work.cad) * (2 if work.likelihood else 1)
    parts = {"build": [Pass(Kind.BUILD, 0, 0, 0, 0, count=builds)],
             "generate": generation_passes(shape, lengths, work.batch_size, settings.max_new_tokens, work.conditions,
                                           answers)}
    longest = {"generate": generation_passes(shape, lengths, work.batch_size, settings.max_new_tokens,
                                             work.conditions)}
    if free is not None:
        parts["generate (CAD)"] = generation_passes(shape, lengths, work.batch_size, settings.max_new_tokens,
                                                    answer_tokens=answers, context_free_lengths=free)
        longest["generate (CAD)"] = generation_passes(shape, lengths, work.batch_size, settings.max_new_tokens,
                                                      context_free_lengths=free)
    what = (f"{name.value}, {len(items)} items x {work.conditions} conditions{' and CAD' if work.cad else ''} in "
            f"batches of {work.batch_size} "
            f"({style.value} prompts of {min(lengths)}-{max(lengths)} tokens), greedy decoding expected to stop "
            f"after the gold answer's length (at most {settings.max_new_tokens} new tokens)")
    if free is not None:
        what += f"; CAD runs every pass again on the context-free prompts ({min(free)}-{max(free)} tokens)"
    if name is TaskName.COUNTERFACTUAL:  # the baseline's closed-book check picks the facts it knows
        cb = settings_for(model.name, TaskName.CLOSED_BOOK, model.tokenizer)
        cb_items, cb_style = closed_book_items(facts), PromptStyle.parse(cb.prompt_style)
        cb_lengths = [len(p) for p in encode_items(cb_items, cb_style, model.tokenizer, n_ctx=model.n_ctx,
                                                   max_new_tokens=cb.max_new_tokens)]
        parts["closed-book check"] = generation_passes(
            shape, cb_lengths, work.batch_size, cb.max_new_tokens,
            answer_tokens=_answer_tokens(cb_items, cb_style, model.tokenizer))
        longest["closed-book check"] = generation_passes(shape, cb_lengths, work.batch_size, cb.max_new_tokens)
        what += f", after the closed-book check of {len(cb_items)} facts"
    candidates = None
    if work.likelihood:
        candidates = encode_candidates(items, style, model.tokenizer)[1]
        cand_lengths = [[len(c) for c in cs] for cs in candidates]
        parts["likelihood"] = likelihood_passes(shape, lengths, cand_lengths, work.batch_size, work.conditions)
        if free is not None:
            parts["likelihood (CAD)"] = likelihood_passes(shape, lengths, cand_lengths, work.batch_size,
                                                          context_free_lengths=free)
        what += f"; likelihood of {sum(len(c) for c in candidates)} candidate answers"
    before = _allocated(clock)
    t0 = time.perf_counter()
    hf = model.fresh_hf()
    build = time.perf_counter() - t0
    clock.spent += build
    copy_bytes = (_allocated(clock) - before) if before is not None else shape.weight_bytes
    first = batches_of(lengths, work.batch_size)[0]
    observations = probe_eval(hf, model.tokenizer, shape, prompts, candidates, first, settings.max_new_tokens,
                              clock, budget)
    del hf
    observations.append(Observation(Pass(Kind.BUILD, 0, 0, 0, 0), build))  # each condition builds its model afresh
    return parts, what, observations, copy_bytes, longest


def _answer_tokens(items: Sequence[Any], style: Any, tokenizer: Any) -> list[int]:
    """Tokens of each item's gold answer as it follows the prompt."""
    from pear_lens.evaluation.tasks.candidates import continuation

    return [len(tokenizer(continuation(it.answers[0], it.prompt(), style), add_special_tokens=False)["input_ids"])
            for it in items]
