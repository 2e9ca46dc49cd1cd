"""Error bars, tests per head and stability across seeds, computed from each prompt's clean and patched metric.

A head's score is the mean over the proxy task's settings of ``delta(mean π̃, mean π)`` over each setting's
prompts (:func:`score_statistic`). Its interval comes from a stratified, paired bootstrap over prompts
(:func:`bootstrap_ci`; :func:`bootstrap_replicates` gives its replicates to statistics of the whole
map, such as a correlation over heads), its p-value from a t-test on a per-prompt linearisation of the score
(:func:`head_pvalues`), corrected over all heads with Benjamini–Hochberg (:func:`fdr`); :func:`stability` says
how often each head is in the top k across score maps made with different seeds. Plain arrays in and out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from jaxtyping import Bool, Float, Int

from pear_lens.errors import PearLensError
from pear_lens.metrics import Difference
from pear_lens.vocabulary import parse_member
from pear_lens.heads import Head

MIN_BOOT = 1000
"""Fewer bootstrap replicates than this make the tails of a 95 % interval too coarse to report."""
ZERO_CLEAN = 1e-12
"""A clean mean this close to 0 makes a relative Δπ undefined (the threshold of :func:`pear_lens.metrics.delta`)."""
_CHUNK_ELEMENTS = 1 << 22
"""Float64 values held per bootstrap chunk (32 MiB): replicates are drawn in chunks of this many head values."""


@dataclass(frozen=True)
class _Prompts:
    """The inputs as float64, prompts grouped by setting (in ascending order of the setting's label)."""

    patched: np.ndarray  # [P, L*H]
    clean: np.ndarray  # [P]
    groups: list[np.ndarray]  # prompt indices of each setting
    difference: Difference
    shape: tuple[int, int]
    eps: float  # the resolution of the inputs' float type (float32's, for a scan's values)


def _prompts(patched, clean, setting, difference) -> _Prompts:
    patched, clean, setting = np.asarray(patched), np.asarray(clean), np.asarray(setting)
    eps = float(np.finfo(np.result_type(patched.dtype, clean.dtype, np.float16)).eps)
    patched, clean = patched.astype(np.float64), clean.astype(np.float64)
    if patched.ndim != 3 or clean.shape != patched.shape[:1] or setting.shape != patched.shape[:1]:
        raise PearLensError(f"patched must be [n_prompts, n_layers, n_heads] with clean and setting [n_prompts]; "
                            f"got {patched.shape}, {clean.shape}, {setting.shape}")
    if patched.shape[0] == 0:
        raise PearLensError("there are no prompts to compute an interval or a test from")
    if not (np.isfinite(patched).all() and np.isfinite(clean).all()):
        raise PearLensError("the per-prompt metrics hold NaN or infinite values; rescore without them")
    labels, inverse = np.unique(setting, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    groups = np.split(order, np.cumsum(np.bincount(inverse, minlength=len(labels)))[:-1])
    return _Prompts(patched.reshape(patched.shape[0], -1), clean, groups,
                    parse_member(Difference, difference, "difference"), patched.shape[1:], eps)


def _zero_clean() -> PearLensError:
    return PearLensError("a setting's clean mean is zero (in the data or in a bootstrap resample), so a relative "
                         "Δπ is undefined; use difference='absolute'")


def _delta(patched_mean: np.ndarray, clean_mean: np.ndarray | float, difference: Difference) -> np.ndarray:
    if difference is Difference.ABSOLUTE:
        return patched_mean - clean_mean
    if (np.abs(clean_mean) < ZERO_CLEAN).any():
        raise _zero_clean()
    return patched_mean / clean_mean - 1.0


def _statistic(data: _Prompts) -> np.ndarray:
    total = np.zeros(data.patched.shape[1])
    for idx in data.groups:
        total += _delta(data.patched[idx].mean(0), data.clean[idx].mean(), data.difference)
    return total / len(data.groups)


def score_statistic(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
    setting: Int[np.ndarray, " n_prompts"], difference: str,
) -> Float[np.ndarray, "n_layers n_heads"]:
    """The score of every head, in float64: for each setting s (each distinct value of ``setting``),
    Δ_s = delta(mean π̃, mean π) over the prompts of s, where delta is ``π̃/π − 1`` (``difference="relative"``)
    or ``π̃ − π`` (``"absolute"``); the score is the unweighted mean of Δ_s over the settings.

    ``patched[i, l, h]`` is π̃ of prompt i with head (l, h) patched, ``clean[i]`` its π. This is how
    :attr:`HeadScores.scores <pear_lens.results.HeadScores.scores>` is made, so it reproduces it.
    """
    data = _prompts(patched, clean, setting, difference)
    return _statistic(data).reshape(data.shape)


def constant_effects(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
) -> Bool[np.ndarray, "n_layers n_heads"]:
    """Heads whose per-prompt effect π̃_i − π_i is the same for every prompt (typically 0: patching the
    head changes nothing), up to the rounding of the inputs' float type: the effects' range is at most
    4 eps × the largest |π̃_i| + |π_i| (eps of float32 for a scan's values). Their p-value is NaN
    (:func:`head_pvalues`): there is no variation to test against, and such a head is never a finding."""
    data = _prompts(patched, clean, np.zeros(len(clean), dtype=np.int64), "absolute")
    return _constant(data).reshape(data.shape)


def _constant(data: _Prompts) -> np.ndarray:
    d = data.patched - data.clean[:, None]
    scale = np.abs(data.patched).max(0) + np.abs(data.clean).max()
    return np.ptp(d, axis=0) <= 4 * data.eps * scale


def _draw_counts(rng: np.random.Generator, size: int, n: int, m: int) -> np.ndarray:
    """``[size, n]``: how often each of n prompts is drawn in each of ``size`` resamples of m draws with
    replacement."""
    draws = rng.integers(0, n, size=(size, m)) + (np.arange(size) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=size * n).reshape(size, n).astype(np.float64)


def _product(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``counts @ values``. A small product skips BLAS: OpenBLAS's threads cost milliseconds per call on a
    busy machine, more than einsum's own loop takes for it."""
    if counts.size * values.shape[1] < 1 << 20:
        return np.einsum("bn,nk->bk", counts, values)
    return counts @ values


def bootstrap_ci(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
    setting: Int[np.ndarray, " n_prompts"], difference: str, *, n_boot: int = 2000, level: float = 0.95,
    seed: int = 0,
) -> tuple[Float[np.ndarray, "n_layers n_heads"], Float[np.ndarray, "n_layers n_heads"]]:
    """Percentile bootstrap interval ``(lo, hi)`` of :func:`score_statistic` for every head, float64.

    Each of ``n_boot`` replicates resamples prompts with replacement *within each setting* (stratified),
    keeping each prompt's π̃ and π together (paired), and recomputes the statistic; ``lo`` and ``hi`` are the
    replicates' ``(1 − level)/2`` and ``(1 + level)/2`` quantiles (numpy's linear interpolation). A setting of
    n_s prompts contributes n_s − 1 draws (one if n_s = 1): the with-replacement bootstrap for stratified
    samples of McCarthy and Snowden (1985), Rao and Wu's (1988) rescaling bootstrap with m_s = n_s − 1, whose
    resampled means have the unbiased variance s²/n_s where n_s draws give (n_s − 1)/n_s of it; with settings of
    a dozen prompts that is a point of coverage. Every head sees the same resamples; the same inputs and
    ``seed`` give the same interval. Replicates are drawn in chunks, so memory stays near 32 MiB plus
    ``n_boot × n_heads`` values. Like any percentile interval it covers a little less than ``level`` when
    settings are small (0.936 absolute, 0.928 relative for 0.95 with settings of 15–45 prompts:
    tests/test_uncertainty.py).

    A head whose per-prompt effects are all identical (:func:`constant_effects`) gets ``lo = hi =`` its score
    when ``difference`` is absolute or the common effect is 0 (its replicates differ only by rounding); with a
    relative difference and a non-zero common effect the interval still carries the clean means' variation.
    Refused: ``n_boot`` below 1000, and a relative difference where a setting's clean mean is 0 in the data or
    in a resample.
    """
    if n_boot < MIN_BOOT:
        raise PearLensError(f"n_boot={n_boot} is too few for the tails of an interval; use n_boot >= {MIN_BOOT}")
    if not 0 < level < 1:
        raise PearLensError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
    data = _prompts(patched, clean, setting, difference)
    point = _statistic(data)
    replicates = _replicates(data, n_boot, np.random.default_rng(seed))
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [tail, 1.0 - tail], axis=0)
    constant = _constant(data)
    if data.difference is Difference.RELATIVE:  # a common effect of 0 only: otherwise the clean means vary it
        constant &= np.abs(point) <= 4 * data.eps * (np.abs(point) + 1)
    lo[constant] = hi[constant] = point[constant]
    return lo.reshape(data.shape), hi.reshape(data.shape)


def bootstrap_replicates(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
    setting: Int[np.ndarray, " n_prompts"], difference: str, *, n_boot: int = 2000,
    seed: int | np.random.Generator = 0,
) -> Float[np.ndarray, "n_boot n_layers n_heads"]:
    """The ``n_boot`` bootstrap replicates of :func:`score_statistic` that :func:`bootstrap_ci` takes its
    quantiles of, float64: prompts resampled within each setting (n_s − 1 draws of a setting of n_s prompts),
    each prompt's π̃ and π kept together, every head seeing the same resamples.

    For statistics of the whole score map that :func:`bootstrap_ci` does not compute (a correlation over
    heads: :meth:`pear_lens.atlas.HeadAtlas.statistics`). ``seed`` may be a ``numpy.random.Generator``, which
    is drawn from (so one generator can feed several resamplings); the same int seed gives the replicates
    :func:`bootstrap_ci` uses. A plain mean over prompts is the statistic of ``clean = 0``, one setting and an
    absolute difference. Refused: ``n_boot`` below 1, and a relative difference where a setting's clean mean
    is 0 in the data or in a resample.
    """
    if n_boot < 1:
        raise PearLensError(f"n_boot must be at least 1, got {n_boot}")
    data = _prompts(patched, clean, setting, difference)
    return _replicates(data, n_boot, np.random.default_rng(seed)).reshape(n_boot, *data.shape)


def _replicates(data: _Prompts, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_values]`` replicates of :func:`_statistic`, drawn in chunks of about 32 MiB."""
    n_values = data.patched.shape[1]
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n_values, data.patched.shape[0])))
    replicates = np.empty((n_boot, n_values))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        total = np.zeros((size, n_values))
        for idx in data.groups:
            n = len(idx)
            m = max(n - 1, 1)  # draws per setting: n − 1 makes the resampled mean's variance unbiased
            counts = _draw_counts(rng, size, n, m)
            total += _delta(_product(counts, data.patched[idx]) / m, _product(counts, data.clean[idx, None]) / m,
                            data.difference)
        replicates[start:start + size] = total / len(data.groups)
    return replicates


def linearised_effects(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
    setting: Int[np.ndarray, " n_prompts"], difference: str,
) -> Float[np.ndarray, "n_prompts n_layers n_heads"]:
    """Each prompt's share e_i of the score, whose mean over prompts is :func:`score_statistic`.

    With S settings, prompt i in setting s of n_s prompts and P prompts in all:
    ``e_i = (π̃_i − π_i) · P / (S · n_s)`` (absolute) and ``e_i = (π̃_i − π_i) · P / (S · n_s · c_s)``
    (relative, c_s the clean mean of setting s, held fixed: the first-order term of π̃/π − 1 in π̃).
    """
    data = _prompts(patched, clean, setting, difference)
    return _linearised(data).reshape(-1, *data.shape)


def _linearised(data: _Prompts) -> np.ndarray:
    n_prompts, n_settings = data.patched.shape[0], len(data.groups)
    effects = np.empty_like(data.patched)
    for idx in data.groups:
        scale = n_prompts / (n_settings * len(idx))
        if data.difference is Difference.RELATIVE:
            clean_mean = data.clean[idx].mean()
            if abs(clean_mean) < ZERO_CLEAN:
                raise _zero_clean()
            scale /= clean_mean
        effects[idx] = (data.patched[idx] - data.clean[idx, None]) * scale
    return effects


def head_pvalues(
    patched: Float[np.ndarray, "n_prompts n_layers n_heads"], clean: Float[np.ndarray, " n_prompts"],
    setting: Int[np.ndarray, " n_prompts"], difference: str,
) -> Float[np.ndarray, "n_layers n_heads"]:
    """Two-sided p-value of every head for "its effect is 0": ``scipy.stats.ttest_1samp(e, 0, axis=0)`` on the
    per-prompt effects e of :func:`linearised_effects` (their mean is the score).

    The test treats the P values e_i as one sample. With settings whose mean effects differ this overstates
    the variance (the between-setting spread counts as noise), so the test errs on the conservative side; with
    a relative difference it ignores the variation of the clean means in the denominators. A head whose
    per-prompt effects are all identical (:func:`constant_effects`), or whose e_i are, gets NaN: it is never
    a finding. Fewer than 2 prompts are refused.
    """
    from scipy import stats

    data = _prompts(patched, clean, setting, difference)
    if data.patched.shape[0] < 2:
        raise PearLensError("a test per head needs at least 2 prompts")
    effects = _linearised(data)
    degenerate = _constant(data) | (np.ptp(effects, axis=0) == 0)
    p = np.full(effects.shape[1], np.nan)
    if (~degenerate).any():
        p[~degenerate] = stats.ttest_1samp(effects[:, ~degenerate], 0.0, axis=0).pvalue
    return p.reshape(data.shape)


def fdr(pvalues: Float[np.ndarray, "*shape"], alpha: float = 0.05
        ) -> tuple[Bool[np.ndarray, "*shape"], Float[np.ndarray, "*shape"]]:
    """Benjamini–Hochberg over all given p-values: ``(reject, qvalues)`` of the same shape, from
    ``statsmodels.stats.multitest.multipletests(method="fdr_bh")``. NaN p-values take no part in the
    correction; their q is NaN and they are never rejected."""
    from statsmodels.stats.multitest import multipletests

    if not 0 < alpha < 1:
        raise PearLensError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    tested = ~np.isnan(flat)
    reject = np.zeros(flat.shape, dtype=bool)
    q = np.full(flat.shape, np.nan)
    if tested.any():
        reject[tested], q[tested], _, _ = multipletests(flat[tested], alpha=alpha, method="fdr_bh")
    return reject.reshape(p.shape), q.reshape(p.shape)


# --------------------------------------------------------------------------- stability across seeds


TIE_RULE = ("ties are ranked in flat head order, the lower layer first and then the lower head (a stable sort); "
            "a ranking decided by this rule alone is reported as undefined, never as a finding")
"""The one rule every ranking of heads in pear_lens follows (:meth:`HeadScores.ranks
<pear_lens.results.HeadScores.ranks>`, :meth:`HeadScores.top_k <pear_lens.results.HeadScores.top_k>`, the
atlas's role ranks, :func:`top_k_flat`). Rank correlations use average ranks for ties instead
(:func:`pear_lens.agreement.spearman`), so a tie moves ρ by the same amount whichever head is listed first."""


def why_unranked(values: Any, label: str = "the score") -> str:
    """Why ``values`` cannot rank heads, or ``""`` when they can.

    Undefined: no values, any NaN or infinite value (its place in an order is arbitrary), or every value
    the same (every order is then the tie rule's, :data:`TIE_RULE`, not the data's).

    >>> why_unranked([0.5, 0.5, 0.5], "Δπ")
    'Δπ is the same (0.5) for all 3 heads'
    >>> why_unranked([0.1, 0.3, 0.2])
    ''
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return f"{label} has no heads"
    bad = int((~np.isfinite(v)).sum())
    if bad:
        return f"{label} is NaN or infinite for {bad} of {v.size} heads"
    if v.size > 1 and bool((v == v[0]).all()):
        return f"{label} is the same ({float(v[0]):.4g}) for all {v.size} heads"
    return ""


def why_top_k_undefined(values: Any, k: int, label: str = "the score", descending: bool = True) -> str:
    """Why the top ``k`` of ``values`` is not decided by the values, or ``""``: :func:`why_unranked`, or a tie
    across the k-th place (heads with the same value both inside and outside the top k, so the tie rule, not
    the data, picks which are in).

    >>> why_top_k_undefined([3.0, 2.0, 2.0, 1.0], 2, "Δπ")
    'Δπ ties across the 2nd place (2 heads share 2, 1 of them inside the top 2)'
    >>> why_top_k_undefined([3.0, 2.0, 2.0, 1.0], 3)
    ''
    """
    reason = why_unranked(values, label)
    if reason:
        return reason
    v = np.asarray(values, dtype=np.float64).ravel()
    if not 1 <= k < v.size:
        return ""
    ordered = np.sort(v)[::-1] if descending else np.sort(v)
    edge = float(ordered[k - 1])
    if float(ordered[k]) != edge:
        return ""
    n_tied, inside = int((v == edge).sum()), int((ordered[:k] == edge).sum())
    return (f"{label} ties across the {_ordinal(k)} place ({n_tied} heads share {edge:.4g}, {inside} of them "
            f"inside the top {k})")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def top_k_flat(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` largest scores, largest first; ties keep flat index order (the rule of
    :meth:`HeadScores.top_k <pear_lens.results.HeadScores.top_k>`, :data:`TIE_RULE`: a
    stable descending argsort)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64).ravel(), kind="stable")[:k]


@dataclass(frozen=True)
class Stability:
    """How stable the top-k heads are across several score maps of one model (different seeds)."""

    k: int
    top_k_probability: Float[np.ndarray, "n_layers n_heads"]
    """Fraction of the maps in which each head is in the top k."""
    mean_score: Float[np.ndarray, "n_layers n_heads"]
    """Each head's score averaged over the maps."""
    overlap: Float[np.ndarray, "n_maps n_maps"]
    """``|A ∩ B| / k`` for the top-k sets A, B of every pair of maps (1 on the diagonal); NaN where
    :attr:`undefined` is set."""
    undefined: str = ""
    """Why the top-k sets, and so the overlaps and top-k probabilities, are undefined (a map whose top k would
    be picked by the tie rule: constant, or tied across the k-th place), or ``""``."""

    @property
    def n_maps(self) -> int:
        return int(self.overlap.shape[0])

    @property
    def mean_overlap(self) -> float:
        """The mean of :attr:`overlap` over distinct pairs of maps; NaN where :attr:`undefined` is set."""
        off = ~np.eye(self.n_maps, dtype=bool)
        return float(self.overlap[off].mean())

    def to_dataframe(self) -> pd.DataFrame:
        """One row per head: layer, head, top_k_probability, mean_score and rank (1 = largest mean score)."""
        n_layers, n_heads = self.mean_score.shape
        order = top_k_flat(self.mean_score, self.mean_score.size)
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(1, order.size + 1)
        layers, heads = np.meshgrid(np.arange(n_layers), np.arange(n_heads), indexing="ij")
        return pd.DataFrame({"layer": layers.ravel(), "head": heads.ravel(),
                             "top_k_probability": self.top_k_probability.ravel(),
                             "mean_score": self.mean_score.ravel(), "rank": rank})

    def stable_heads(self, threshold: float = 1.0) -> list[Head]:
        """Heads in the top k of at least ``threshold`` of the maps (1.0: of every map), by mean score."""
        n_heads = self.mean_score.shape[1]
        chosen = self.top_k_probability.ravel() >= threshold - 1e-12  # a fraction m/n of maps, not a rounding
        return [(int(i) // n_heads, int(i) % n_heads) for i in top_k_flat(self.mean_score, self.mean_score.size)
                if chosen[i]]


def stability(score_maps: Sequence[np.ndarray], k: int) -> Stability:
    """Top-k stability of two or more ``[n_layers, n_heads]`` score maps of the same shape: for each head
    the fraction of maps with it in the top k (:func:`top_k_flat`'s tie rule), each map's mean, and the
    pairwise overlap ``|A ∩ B| / k`` of the maps' top-k sets.

    Where any map's top k would be picked by the tie rule rather than its scores (a constant map, or a tie
    across the k-th place: :func:`why_top_k_undefined`), the overlaps and top-k
    probabilities are NaN and ``undefined`` says which map and why: agreement between tie-broken sets is the
    tie rule agreeing with itself."""
    maps = [np.asarray(m, dtype=np.float64) for m in score_maps]
    if len(maps) < 2:
        raise PearLensError(f"stability needs at least 2 score maps (one per seed), got {len(maps)}")
    shapes = {m.shape for m in maps}
    if len(shapes) != 1 or maps[0].ndim != 2:
        raise PearLensError(f"stability needs score maps of one [n_layers, n_heads] shape; got "
                            f"{sorted(shapes)}")
    if not all(np.isfinite(m).all() for m in maps):
        raise PearLensError("a score map holds NaN or infinite values; its top k is undefined")
    size = maps[0].size
    if not 1 <= k <= size:
        raise PearLensError(f"k must be between 1 and {size}, got {k}")
    member = np.zeros((len(maps), size), dtype=bool)
    for i, m in enumerate(maps):
        member[i, top_k_flat(m, k)] = True
    overlap = (member.astype(np.float64) @ member.T.astype(np.float64)) / k
    probability = member.mean(0).reshape(maps[0].shape)
    reasons = [f"map {i + 1}: {r}" for i, m in enumerate(maps) if (r := why_top_k_undefined(m, k, "the score"))]
    if reasons:
        overlap = np.full_like(overlap, np.nan)
        probability = np.full_like(probability, np.nan)
    return Stability(k=k, top_k_probability=probability, mean_score=np.mean(maps, axis=0), overlap=overlap,
                     undefined="; ".join(reasons))

