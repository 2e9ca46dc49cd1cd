"""Timed probes: each kind of pass run for real, briefly, on the device, and the seconds per unit of work fitted.

A probe runs the very function a stage runs (the copy check, path patching's clean forward and layer step, a
training micro-batch's forward and backward, greedy decoding and the likelihood passes, timed call by call through
hooks on the Hugging Face model) on a few rows first (what a call costs however small) and then on as many rows as
fill about ``budget`` seconds, never more than the work itself uses. Each observation is a :class:`Pass` with its
seconds; :func:`fit` prices every kind as ``a × calls + b × block calls + c × GFLOP + d × cache GB`` (non-negative
least squares on relative error), which is what :class:`Rates` predicts any pass of that kind with. On a CUDA device each probe
also records the memory it allocated beyond the weights (``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch

from pear_lens.cost.work import COPY_CHECK_ROWS, Kind, Pass
from pear_lens.errors import PearLensError

if TYPE_CHECKING:
    from pear_lens.cost.shape import ModelShape
    from pear_lens.heads import Head
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.proxy_task import ProxyTask
    from pear_lens.recipe import Recipe

FALLBACK = {Kind.CONTINUATION: Kind.PREFILL, Kind.DECODE: Kind.PREFILL, Kind.COPY_CHECK: Kind.SCAN_CLEAN}
"""A kind no probe observed is priced as this one (the same forward, on other shapes)."""


@dataclass(frozen=True)
class Observation:
    """One probed pass and what it took."""

    step: Pass
    seconds: float
    peak_bytes: int | None = None
    """CUDA only: memory allocated at the pass's peak beyond what was allocated before it."""


class Clock:
    """Wall-clock seconds of a call on ``device`` (a CUDA device is synchronised around it) and, on CUDA, the
    memory the call allocated at its peak."""

    def __init__(self, device: str | torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.spent = 0.0

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn: Callable[[], Any], repeats: int = 1) -> tuple[float, int | None]:
        """Median seconds over ``repeats`` calls, and the largest peak allocation among them."""
        times, peak = self.samples(fn, repeats)
        return statistics.median(times), peak

    def samples(self, fn: Callable[[], Any], repeats: int = 1) -> tuple[list[float], int | None]:
        """Seconds of each of ``repeats`` calls, and the largest peak allocation among them."""
        times, peak = [], None
        for _ in range(repeats):
            if self.cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
            if self.cuda:
                peak = max(peak or 0, torch.cuda.max_memory_allocated() - before)
        self.spent += sum(times)
        return times, peak


def _observe(clock: Clock, step: Pass, fn: Callable[[], Any], budget: float) -> Observation:
    """``fn`` timed once, and again (the median of three) when three calls fit in the budget: one call is at the
    mercy of whatever else the machine is doing at that moment."""
    times, peak = clock.samples(fn, 1)
    if 3 * times[0] < budget:
        more, peak_more = clock.samples(fn, 2)
        times += more
        peak = None if peak is None else max(peak, peak_more or 0)
    return Observation(step, statistics.median(times), peak)


def _next_size(sizes: Sequence[int], seconds: Sequence[float], most: int, budget: float) -> int | None:
    """The next size to time after ``sizes`` took ``seconds`` (None: done). A second size is always timed when the
    work has more rows than the first (one size cannot tell a call's fixed cost from its cost per row): four
    times the first, or twice when the first already took the budget; then, within the budget, as many as the
    cost per added unit says fill it. Never more than the work's ``most`` or three sizes."""
    if len(sizes) >= 3 or sizes[-1] >= most:
        return None
    if len(sizes) == 1:
        return min(most, (2 if seconds[0] >= budget else 4) * sizes[0])
    if seconds[-1] >= budget:
        return None
    per = max((seconds[-1] - seconds[-2]) / max(sizes[-1] - sizes[-2], 1), 1e-9)
    return int(min(most, max(sizes[-1] + 1, sizes[-1] + (budget - seconds[-1]) / per)))


def _series(clock: Clock, step: Callable[[int], Pass], run: Callable[[int], Any], first: int, most: int,
            budget: float, prepare: Callable[[int], Any] = lambda size: None) -> list[Observation]:
    """``run(size)`` timed at up to three sizes from ``first`` to ``most`` (:func:`_next_size`), after one untimed
    call that pays for lazy set-up. ``step(size)`` is the pass one call of ``run(size)`` makes; ``prepare(size)``
    runs untimed before a size is timed."""
    prepare(first)
    run(first)
    sizes, out = [first], [_observe(clock, step(first), lambda: run(first), budget)]
    while (nxt := _next_size(sizes, [o.seconds for o in out], most, budget)) is not None:
        sizes.append(nxt)
        prepare(nxt)
        out.append(_observe(clock, step(nxt), lambda r=nxt: run(r), budget))
    return out


# --------------------------------------------------------------------------- the scan


def probe_scan(model: "LoadedModel", shape: "ModelShape", task: "ProxyTask", clock: Clock,
               budget: float) -> list[Observation]:
    """The copy check's forward, path patching's clean forward, and its layer step at one block and at several."""
    import dataclasses

    from pear_lens.copy_accuracy import clean_copy
    from pear_lens.mediation.base import Ablation, replacer
    from pear_lens.mediation._forward import LinearReadout
    from pear_lens.mediation.path import clean_end, heads_per_pass, scan_layer
    from pear_lens.metrics import Metric

    L, offset = shape.n_layers, int(task.prepend_bos)
    n = max(n for _, n in task.settings)
    most = max(b for b, _ in task.settings)
    seq = 2 * n + offset
    metric = Metric.LOGIT_MINUS_MEAN
    readout = LinearReadout.for_model(model.bridge, metric)

    def sized(rows: int, half: int = n) -> "ProxyTask":
        return dataclasses.replace(task, settings=((rows, half),))

    out = _series(clock, lambda r: Pass(Kind.COPY_CHECK, r, seq - 1, L, (seq - 1) / 2, logits=n),
                  lambda r: clean_copy(model, sized(r)), 1, min(COPY_CHECK_ROWS, most), budget)
    out += _series(clock, lambda r: Pass(Kind.SCAN_CLEAN, r, seq - 1, L, (seq - 1) / 2, logits=1),
                   lambda r: clean_end(model, sized(r).batches(model)[0], metric, Ablation.MEAN), 2, most, budget)

    # the layer step's cost does not depend on the sequence's length: its clean forward runs on short ones
    captured: dict[int, tuple[Any, Any]] = {}

    def capture(rows: int) -> None:
        if rows not in captured:
            batch = sized(rows, 2).batches(model)[0]
            captured[rows] = (batch, clean_end(model, batch, metric, Ablation.MEAN))

    def layer_run(rows: int, layer: int) -> Callable[[], Any]:
        batch, clean = captured[rows]
        replace = replacer(Ablation.MEAN, rows, 0)
        return lambda: scan_layer(model, batch, clean, layer, replace, readout, metric)

    def layer_pass(rows: int, layer: int) -> Pass:
        g = heads_per_pass(model, rows, readout)  # one call runs ceil(n_heads / g) forwards of g heads' rows
        return Pass(Kind.SCAN_LAYER, g * rows, 1, L - layer, 1, logits=0 if readout else 1,
                    count=-(-shape.n_heads // g))

    one_block = _series(clock, lambda r: layer_pass(r, L - 1), lambda r: layer_run(r, L - 1)(), 2, most, budget,
                        prepare=capture)
    out += one_block
    big = one_block[-1]
    rows = max(captured)
    blocks = int(min(L, max(2, round(budget / max(big.seconds, 1e-6)))))
    if blocks > 1:
        out.append(_observe(clock, layer_pass(rows, L - blocks), layer_run(rows, L - blocks), budget))
    return out


# --------------------------------------------------------------------------- training


def probe_train(model: "LoadedModel", shape: "ModelShape", recipe: "Recipe", heads: Sequence["Head"], clock: Clock,
                budget: float) -> list[Observation]:
    """One micro-batch's forward and backward as :func:`pear_lens.reweight.train_coefficients` runs it."""
    from pear_lens.proxy_task import TaskBatch, sample_batch
    from pear_lens.reweight import copy_loss, frozen

    task = recipe.task()
    task.check_fits(model)
    ids = task.candidate_ids(model)
    bos = model.tokenizer.bos_token_id if recipe.prepend_bos else None
    gen = torch.Generator().manual_seed(recipe.seed)
    device = model.cfg.device
    tau = torch.nn.Parameter(torch.ones(len(heads)))
    tokens = 2 * recipe.n + int(recipe.prepend_bos) - 1
    lowest = min(layer for layer, _ in heads)

    def step(rows: int) -> None:
        batch = sample_batch(ids, rows, recipe.n, gen, bos)
        micro = TaskBatch(batch.tokens.to(device), batch.n, batch.offset)
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=recipe.precision == "bf16"):
            loss = copy_loss(model, micro, list(heads), tau)
        loss.backward()
        tau.grad = None

    with frozen(model.bridge):
        return _series(clock, lambda r: Pass(Kind.TRAIN_STEP, r, tokens, shape.n_layers, tokens / 2, logits=recipe.n,
                                             backward_blocks=shape.n_layers - lowest),
                       step, 1, min(recipe.micro_batch, recipe.batch_size), budget)


# --------------------------------------------------------------------------- evaluation


@contextlib.contextmanager
def forward_log(hf: Any, clock: Clock) -> Iterator[list[tuple[int, int, int, int, float]]]:
    """Every forward of ``hf`` while inside: ``(rows, tokens fed, positions cached before, logits kept, seconds)``."""
    calls: list[tuple[int, int, int, int, float]] = []
    started: list[float] = []

    def pre(module, args, kwargs):
        clock.sync()
        ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        keep = kwargs.get("logits_to_keep") or 0
        calls.append((ids.shape[0], ids.shape[1], past, int(keep) if keep else ids.shape[1], 0.0))
        started.append(time.perf_counter())

    def post(module, args, kwargs, output):
        clock.sync()
        calls[-1] = (*calls[-1][:4], time.perf_counter() - started[-1])

    handles = [hf.register_forward_pre_hook(pre, with_kwargs=True),
               hf.register_forward_hook(post, with_kwargs=True)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def _logged(shape: "ModelShape", calls, total: float, later: Kind, peak: int | None) -> list[Observation]:
    """The forwards of one probed call as observations: the first a prompt pass, the rest ``later`` passes, which
    also carry their share of the time spent outside any forward (decoding's bookkeeping, cache copies)."""
    outside = max(total - sum(c[4] for c in calls), 0.0)
    rest = len(calls) - 1
    out = []
    for i, (rows, fed, past, keep, seconds) in enumerate(calls):
        kind = Kind.PREFILL if i == 0 else later
        share = outside / rest if rest and i else (outside if not rest else 0.0)
        step = Pass(kind, rows, fed, shape.n_layers, past + fed / 2 if kind is not Kind.DECODE else past + 1,
                    logits=min(keep, fed))
        out.append(Observation(step, seconds + share, peak))
    return out


SHORT_PROMPT = 16
"""Tokens kept of each prompt where a probe times the steps after the prompt pass on a whole batch."""


def probe_eval(hf: Any, tokenizer: Any, shape: "ModelShape", prompts: Sequence[Sequence[int]],
               candidates: Sequence[Sequence[Sequence[int]]] | None, first: Sequence[int], max_new_tokens: int,
               clock: Clock, budget: float) -> list[Observation]:
    """The evaluation's passes on the prompts of its first batch (``first``: their indices, longest first).

    Prompt passes and a few decoding steps on the whole cache: greedy decoding of one prompt, then of as many as
    fill the budget. Decoding steps and, given ``candidates``, candidate passes on the whole batch too, each prompt
    cut to its last :data:`SHORT_PROMPT` tokens so that its prompt pass is cheap (and, for the candidates, on one
    whole prompt): what the steps cost per row and per GB of cache is fitted from both."""
    from pear_lens.evaluation.generate import greedy_generate
    from pear_lens.evaluation.likelihood import continuation_logprobs

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    short = {i: list(prompts[i])[-SHORT_PROMPT:] for i in first}
    steps = min(max_new_tokens, 4)

    def timed(run: Callable[[], Any], later: Kind) -> tuple[list[Observation], float]:
        with forward_log(hf, clock) as calls:
            seconds, peak = clock.time(run)
        return _logged(shape, calls, seconds, later, peak), seconds

    def decode(texts: Sequence[Sequence[int]], new: int = steps) -> tuple[list[Observation], float]:
        return timed(lambda: greedy_generate(hf, tokenizer, texts, max_new_tokens=new, batch_size=len(texts),
                                             stop_at_newline=False, progress=False), Kind.DECODE)

    def score(texts: Sequence[Sequence[int]], idx: Sequence[int]) -> list[Observation]:
        return timed(lambda: continuation_logprobs(hf, texts, [candidates[i] for i in idx], batch_size=len(idx),
                                                   pad_token_id=pad, progress=False), Kind.CONTINUATION)[0]

    decode([prompts[first[0]]], 1)  # lazy set-up (and decoding's token tables), not timed
    out: list[Observation] = []
    sizes, times = [1], []
    while True:
        observed, seconds = decode([prompts[i] for i in first[:sizes[-1]]])
        out += observed
        times.append(seconds)
        nxt = _next_size(sizes, times, len(first), budget)
        if nxt is None:
            break
        sizes.append(nxt)
    if len(first) > sizes[-1]:
        out += decode([short[i] for i in first])[0]
    if candidates is not None:
        out += score([prompts[first[0]]], first[:1])
        out += score([short[i] for i in first], first)
    return out


# --------------------------------------------------------------------------- the fit


class Rates:
    """Seconds per call, per block call and per GFLOP of every probed kind, fitted to the observations."""

    def __init__(self, shape: "ModelShape", observations: Sequence[Observation]):
        self.shape = shape
        self.observations = list(observations)
        self.coefficients: dict[Kind, np.ndarray] = {}
        for kind in Kind:
            mine = [o for o in self.observations if o.step.kind is kind]
            if mine:
                self.coefficients[kind] = fit(shape, mine)

    def _for(self, kind: Kind) -> np.ndarray:
        seen = kind
        while seen not in self.coefficients and seen in FALLBACK:
            seen = FALLBACK[seen]
        if seen not in self.coefficients:
            raise PearLensError(f"no probe timed a {kind.value} pass; estimate the stage that runs it")
        return self.coefficients[seen]

    def seconds(self, step: Pass) -> float:
        """Predicted seconds of all ``step.count`` passes."""
        return float(np.dot(self._for(step.kind), step.features(self.shape)))

    def measured_peak(self, step: Pass, act_bytes: int) -> int | None:
        """On CUDA: the activation memory of ``step`` scaled from the largest probe of its kind, else None."""
        probes = [o for o in self.observations if o.step.kind is step.kind and o.peak_bytes is not None]
        if not probes:
            return None
        largest = max(probes, key=lambda o: o.step.rows * o.step.tokens)
        # what the probe allocated, scaled by how much more (or less) the shapes say this pass holds
        scale = step.activation_bytes(self.shape, act_bytes) / max(largest.step.activation_bytes(self.shape,
                                                                                                  act_bytes), 1)
        return int(largest.peak_bytes * scale)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {kind.value: {"s_per_call": float(c[0]), "s_per_block_call": float(c[1]), "s_per_gflop": float(c[2]),
                             "s_per_cache_gb": float(c[3])} for kind, c in self.coefficients.items()}


def fit(shape: "ModelShape", observations: Sequence[Observation]) -> np.ndarray:
    """Non-negative ``(a, b, c, d)`` with ``seconds ≈ a × calls + b × block calls + c × GFLOP + d × cache GB``,
    fitted on relative error (so the small probes that show a call's fixed cost weigh as much as the large ones)."""
    from scipy.optimize import nnls

    X = np.array([o.step.features(shape) for o in observations], dtype=float)
    y = np.array([o.seconds for o in observations], dtype=float)
    weight = 1.0 / np.maximum(y, 1e-6)
    coef, _ = nnls(X * weight[:, None], y * weight)
    return coef
