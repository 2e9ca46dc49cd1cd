"""Uncertainty for accuracies measured on a few hundred items.

Every accuracy gets a seeded percentile-bootstrap confidence interval. Two
conditions scored on the *same* items are compared with the exact McNemar
test, which only looks at the discordant items (one condition right, the other
wrong) and asks whether the split between them could be a fair coin.
Items that share a source (counterfactual items of one fact) are resampled
as whole clusters; PEAR is compared with the mean of its random-head controls
on jointly resampled items; a family of tests is corrected with Holm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from jaxtyping import Bool, Float

from pear_lens.errors import PearLensError

N_RESAMPLES = 2000
LEVEL = 0.95


def bootstrap_ci(correct: Bool[np.ndarray, " n"], *, n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``correct`` (items resampled with replacement)."""
    x = np.asarray(correct, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise PearLensError(f"bootstrap_ci needs a non-empty 1-D array of outcomes, got shape {x.shape}")
    if not 0 < level < 1:
        raise PearLensError(f"level must be between 0 and 1, got {level}")
    rng = np.random.default_rng(seed)
    # resampling counts per item instead of indices: same distribution, far less memory for large n
    counts = rng.multinomial(x.size, np.full(x.size, 1.0 / x.size), size=n_resamples)
    means = counts @ x / x.size
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class McNemar:
    """Exact (binomial) McNemar test of condition A against condition B on paired items."""

    a_only: int
    """Items A got right and B got wrong."""
    b_only: int
    """Items B got right and A got wrong."""
    p_value: float
    """Two-sided exact p-value; 1.0 when there is no discordant item."""


def mcnemar_exact(a: Bool[np.ndarray, " n"], b: Bool[np.ndarray, " n"]) -> McNemar:
    """Two-sided exact McNemar test: ``2 · P(X ≤ min(a_only, b_only))``, X ~ Binomial(a_only+b_only, ½)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise PearLensError(f"paired outcomes must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    if n == 0:
        return McNemar(a_only, b_only, 1.0)
    tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n  # exact ints: no overflow
    return McNemar(a_only, b_only, min(1.0, 2.0 * tail))


def empirical_p(value: float, controls: "np.ndarray | list[float]") -> float:
    """Rank of ``value`` among control values as an empirical p-value: ``(1 + #{c ≥ value}) / (1 + #controls)``.

    Small when ``value`` beats every control (with 6 controls the smallest possible is 1/7 ≈ 0.14: rank, not
    significance, is what so few controls can say); 1 when every control does at least as well.

    >>> empirical_p(0.6, [0.5, 0.55, 0.58])
    0.25
    """
    c = np.asarray(controls, dtype=np.float64)
    return float((1 + np.sum(c >= value)) / (1 + c.size))


# --------------------------------------------------------------------------- many comparisons


def holm(pvalues: "np.ndarray | Sequence[float]") -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone in the raw p, capped at 1), in input order.

    A confirmatory table tests PEAR on several tasks at once; Holm keeps the chance of any false "helps"
    at ``alpha`` without Bonferroni's loss of power. NaN entries (comparisons not made) are passed through
    and do not count towards the family size.

    >>> holm([0.01, 0.04, 0.03, 0.005]).round(4).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise PearLensError(f"holm needs a 1-D list of p-values, got shape {p.shape}")
    tested = ~np.isnan(p)
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise PearLensError(f"p-values must lie in [0, 1], got {p[tested].tolist()}; pass raw p-values, not log-p")
    out = p.copy()
    idx = np.flatnonzero(tested)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    steps = (m - np.arange(m)) * p[order]                       # (m - i) · p_(i), i = 0 … m-1
    out[order] = np.minimum(1.0, np.maximum.accumulate(steps))  # never below a smaller raw p's adjustment
    return out


# --------------------------------------------------------------------------- clustered resampling


@dataclass(frozen=True)
class BootstrapDiff:
    """A difference of accuracies with its percentile-bootstrap interval, from resampled items or clusters."""

    estimate: float
    """The observed difference (on all items)."""
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided percentile-bootstrap p-value (the level at which the interval would just touch 0):
    ``2 · min(#(d* ≤ 0), #(d* ≥ 0)) / n_resamples`` with a +1 in numerator and denominator, capped at 1;
    its resolution is about ``2 / n_resamples``."""
    n_items: int
    n_clusters: int
    """Resampling units; equal to ``n_items`` when items are independent."""
    p_at_floor: bool = False
    """No resample fell on the far side of 0: ``p_value`` is the smallest the resamples allow, an upper bound
    rather than a measured value."""


def _cluster_index(clusters: "np.ndarray | Sequence[str] | Sequence[int] | None", n: int) -> tuple[np.ndarray, int]:
    """Each item's cluster number (0 … G-1, in order of first appearance) and G; no clusters = one per item."""
    if clusters is None:
        return np.arange(n), n
    labels = np.asarray(clusters)
    if labels.shape != (n,):
        raise PearLensError(f"clusters must name one cluster per item ({n} items), got shape {labels.shape}")
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    # number clusters by first appearance, so clusters listed like items resample like items
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)], first.size


def _cluster_resamples(values: np.ndarray, clusters, n_resamples: int, seed: int) -> tuple[np.ndarray, int]:
    """Means of ``values`` over ``n_resamples`` cluster bootstrap samples (all items of each drawn cluster)."""
    if values.ndim != 1 or values.size == 0:
        raise PearLensError(f"need a non-empty 1-D array of per-item values, got shape {values.shape}")
    index, g = _cluster_index(clusters, values.size)
    sums = np.bincount(index, weights=values, minlength=g)
    sizes = np.bincount(index, minlength=g).astype(np.float64)
    rng = np.random.default_rng(seed)
    # counts per cluster rather than indices, as in bootstrap_ci (with singleton clusters the draws coincide)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_resamples)
    return (counts @ sums) / (counts @ sizes), g


def _interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise PearLensError(f"level must be between 0 and 1, got {level}")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(low), float(high)


def cluster_bootstrap_ci(correct: Bool[np.ndarray, " n"],
                         clusters: "np.ndarray | Sequence[str] | Sequence[int] | None" = None, *,
                         n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of an accuracy whose items come in clusters (resample clusters, keep their items).

    Counterfactual items share facts (two items per fact), so their outcomes are not independent and the
    item-level interval is too narrow; drawing whole facts keeps that dependence. With one item per
    cluster (or ``clusters=None``) it is :func:`bootstrap_ci`, draw for draw.
    """
    x = np.asarray(correct, dtype=np.float64)
    means, _ = _cluster_resamples(x, clusters, n_resamples, seed)
    return _interval(means, level)


def _diff(per_item: np.ndarray, clusters, n_resamples: int, level: float, seed: int) -> BootstrapDiff:
    draws, g = _cluster_resamples(per_item, clusters, n_resamples, seed)
    low, high = _interval(draws, level)
    below, above = np.sum(draws <= 0), np.sum(draws >= 0)
    p = min(1.0, 2.0 * (1 + min(below, above)) / (1 + n_resamples))
    return BootstrapDiff(float(per_item.mean()), low, high, p, int(per_item.size), g, bool(min(below, above) == 0))


def paired_cluster_bootstrap_diff(a: Bool[np.ndarray, " n"] | Float[np.ndarray, " n"],
                                  b: Bool[np.ndarray, " n"] | Float[np.ndarray, " n"],
                                  clusters: "np.ndarray | Sequence[str] | Sequence[int] | None" = None, *,
                                  n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                                  seed: int = 0) -> BootstrapDiff:
    """Accuracy (or mean of any per-item value, e.g. a log-probability) of A minus B's on the same items, both
    resampled with the same clusters.

    Pairing removes the between-item variance both conditions share, so the interval is much narrower than
    two separate intervals suggest; clustering keeps items of one fact together (McNemar cannot).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise PearLensError(f"paired outcomes must have one shape, got {a.shape} and {b.shape}")
    return _diff(a - b, clusters, n_resamples, level, seed)


def paired_diff_vs_controls(pear: Bool[np.ndarray, " n"], controls: Bool[np.ndarray, "m n"],
                            clusters: "np.ndarray | Sequence[str] | Sequence[int] | None" = None, *,
                            n_resamples: int = N_RESAMPLES, level: float = LEVEL, seed: int = 0) -> BootstrapDiff:
    """PEAR's accuracy minus the mean accuracy of the controls (one row each), all on the same resampled items.

    The question a reviewer asks is whether PEAR's heads beat random heads trained the same way, not whether
    it beats the baseline; resampling items (or clusters) jointly for PEAR and every control keeps the
    comparison paired. Only items are resampled: the spread over control draws is
    :func:`controls_distribution`'s to show.
    """
    pear = np.asarray(pear, dtype=np.float64)
    ctrl = np.asarray(controls, dtype=np.float64)
    if ctrl.ndim != 2 or ctrl.shape[0] == 0 or ctrl.shape[1:] != pear.shape:
        raise PearLensError(f"controls must be one row of {pear.size} outcomes per control, got shape {ctrl.shape}")
    # the mean over controls is linear, so resampling per-item differences resamples every condition jointly
    return _diff(pear - ctrl.mean(axis=0), clusters, n_resamples, level, seed)


@dataclass(frozen=True)
class ControlsSpread:
    """Where the controls' deltas lie: median, the 10–90 % range (``np.quantile``'s linear interpolation) and
    the extremes (with fewer than ten controls the quantiles are interpolations, so a reader wants these)."""

    median: float
    q10: float
    q90: float
    n: int
    low: float
    high: float


def controls_distribution(deltas: "np.ndarray | Sequence[float]") -> ControlsSpread:
    """Median and 10–90 % quantiles of the controls' deltas (e.g. each control's accuracy minus the baseline's).

    With a handful of controls a mean hides one lucky draw; the median and the 10–90 % band show where
    random heads land, so PEAR's delta can be read against them.

    >>> s = controls_distribution([0.0, 0.01, 0.02, 0.03, 0.04])
    >>> round(s.median, 6), round(s.q10, 6), round(s.q90, 6), s.n, s.low, s.high
    (0.02, 0.004, 0.036, 5, 0.0, 0.04)
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or np.isnan(d).any():
        raise PearLensError(f"controls_distribution needs a non-empty 1-D list of deltas without NaN, got {d.tolist()}")
    q10, median, q90 = np.quantile(d, [0.1, 0.5, 0.9])
    return ControlsSpread(median=float(median), q10=float(q10), q90=float(q90), n=int(d.size),
                          low=float(d.min()), high=float(d.max()))
