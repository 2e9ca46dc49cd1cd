"""Uncertainty for accuracies measured on a few hundred items.

Every accuracy gets a seeded percentile-bootstrap confidence interval. Two
conditions scored on the *same* items are compared with the exact McNemar
test, which only looks at the discordant items (one condition right, the other
wrong) and asks whether the split between them could be a fair coin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool

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
