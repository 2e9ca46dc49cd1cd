"""How far two head rankings agree: rank correlation, top-k overlap and relative depth.

These statistics compare :class:`~pear_lens.results.HeadScores` (``pear_lens.compare`` builds its
tables from them and ``pear_lens.plots`` shows them); they need only numbers, so both import them
from here without importing each other.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from pear_lens.errors import PearLensError

if TYPE_CHECKING:
    from pear_lens.results import HeadScores

Values = Union[Sequence[float], Sequence[int], np.ndarray, Tensor]

MIN_RANK_POINTS = 3
"""Fewer paired values than this make a rank correlation meaningless (two points always give ±1)."""


def spearman(a: Values, b: Values) -> float:
    """Spearman rank correlation (average ranks for ties); NaN below 3 pairs, for a constant input or for
    an infinite value (:func:`pear_lens.uncertainty.why_unranked` says which); NaN pairs are left out."""
    sa = pd.Series(torch.as_tensor(a, dtype=torch.float64).flatten().numpy())
    sb = pd.Series(torch.as_tensor(b, dtype=torch.float64).flatten().numpy())
    if len(sa) != len(sb):
        raise PearLensError(f"spearman needs two equally long inputs, got {len(sa)} and {len(sb)}")
    keep = sa.notna() & sb.notna()
    if int(keep.sum()) < MIN_RANK_POINTS or not (np.isfinite(sa[keep]).all() and np.isfinite(sb[keep]).all()):
        return math.nan
    # Pearson of the ranks is Spearman's ρ; it needs no scipy.
    return float(sa[keep].rank().corr(sb[keep].rank()))


def layer_depth(layer: int, n_layers: int) -> float:
    """Relative depth ``layer / (n_layers - 1)``: 0 for the first block, 1 for the last (0 for a one-block model)."""
    return layer / (n_layers - 1) if n_layers > 1 else 0.0


def depth_bin(depth: float, n_bins: int) -> int:
    """Index of the equal-width bin of [0, 1] that holds ``depth`` (1.0 falls in the last bin)."""
    return min(int(depth * n_bins), n_bins - 1)


def pair_bins(n_layers_a: int, n_layers_b: int, bins: int) -> int:
    """How many depth bins two models can share without leaving a bin empty in either.

    Layer depths are ``1 / (L - 1)`` apart, so bins of width ``1 / B`` with
    ``B <= L - 1`` each hold at least one layer of an ``L``-layer model.
    """
    return max(1, min(bins, n_layers_a - 1, n_layers_b - 1))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else math.nan


def same_model(a: "HeadScores", b: "HeadScores") -> bool:
    """Heads can be matched one to one: same model name and shape.

    The weights may differ (bf16 against fp32, a re-weighted copy): head ``(l, h)``
    is still the same head.
    """
    return a.model == b.model and a.scores.shape == b.scores.shape
