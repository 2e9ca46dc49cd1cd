"""The copy metric π and how a change in it is reported.

π is read at the scored position ``end`` (the second-to-last token of the proxy
sequence), whose target is the token the model should copy next. It is the
batch mean of a per-example quantity.
"""
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from pear_lens.errors import PearLensError
from pear_lens.vocabulary import StrEnum


class Metric(StrEnum):
    """Per-example copy metric, averaged over the batch."""

    LOGIT_MINUS_MEAN = "logit_minus_mean"
    """``logit[target] - mean(logits)``: the reference code's metric (default)."""
    PROB = "prob"
    """Softmax probability of the target: the paper's formula."""


class Difference(StrEnum):
    """How a patched π̃ is compared with the clean π."""

    RELATIVE = "relative"
    """Δπ = π̃/π − 1 (the paper's formula; default)."""
    ABSOLUTE = "absolute"
    """Δπ = π̃ − π (what the reference code stores)."""


def per_example(
    logits: Float[Tensor, "batch vocab"], targets: Int[Tensor, " batch"], metric: Metric
) -> Float[Tensor, " batch"]:
    """The metric of each example, from the logits at the scored position."""
    logits = logits.float()
    targets = targets.to(logits.device)  # with a device map, logits come off the last device
    if metric is Metric.LOGIT_MINUS_MEAN:
        return logits.gather(-1, targets[:, None])[:, 0] - logits.mean(-1)
    if metric is Metric.PROB:
        return logits.softmax(-1).gather(-1, targets[:, None])[:, 0]
    raise PearLensError(f"unknown metric {metric!r}")


def delta(patched: Tensor, clean: Tensor | float, difference: Difference) -> Tensor:
    """Δπ of batch-mean metrics; ``patched`` may hold one value per head."""
    clean = torch.as_tensor(clean, dtype=patched.dtype)
    if difference is Difference.ABSOLUTE:
        return patched - clean
    if clean.abs() < 1e-12:
        raise PearLensError(
            "the clean metric is zero, so a relative Δπ is undefined; use difference='absolute'"
        )
    return patched / clean - 1.0
