"""The metric π read at each prompt's scored position, and how a change in it is reported.

A metric maps the logits at the scored position ``end`` (``[batch, vocab]``) and the batch being scored to one
number per prompt. The built-in ones are the members of :class:`Metric`; a user metric is any callable
``fn(logits, batch) -> Tensor[batch]`` (``batch.targets`` holds each prompt's answer token, ``batch.foils`` its
foil token or ``None``, ``batch.tokens`` the prompts). π of a set of prompts is the mean of the per-prompt values.

On PEAR's copy proxy task the scored position is the second-to-last token and the answer is the token the model
should copy next.
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from pear_lens.errors import PearLensError
from pear_lens.vocabulary import StrEnum, parse_member


class Metric(StrEnum):
    """Built-in per-prompt metrics, read at the scored position."""

    LOGIT_MINUS_MEAN = "logit_minus_mean"
    """``logit[answer] - mean(logits)``: the PEAR reference code's metric (default)."""
    PROB = "prob"
    """Softmax probability of the answer: the paper's formula."""
    LOGIT_DIFF = "logit_diff"
    """``logit[answer] - logit[foil]``: the field's default for tasks with a foil (needs a foil per prompt)."""
    LOGPROB = "logprob"
    """Log-softmax probability of the answer."""


MetricFn = Callable[[Tensor, Any], Tensor]
"""A user metric: ``fn(logits [batch, vocab], batch) -> [batch]`` (see the module docstring)."""
MetricLike = Union[Metric, str, MetricFn]


class Difference(StrEnum):
    """How a patched π̃ is compared with the clean π."""

    RELATIVE = "relative"
    """Δπ = π̃/π − 1 (the paper's formula; default on the proxy task)."""
    ABSOLUTE = "absolute"
    """Δπ = π̃ − π (what the reference code stores; default on a task of your own)."""


def parse_metric(metric: MetricLike) -> Metric | MetricFn:
    """A :class:`Metric` from its name, or the user's callable as is."""
    if isinstance(metric, Metric) or (callable(metric) and not isinstance(metric, str)):
        return metric
    return parse_member(Metric, metric, "metric")


def metric_name(metric: Metric | MetricFn) -> str:
    """How a result records ``metric``: a built-in by its value, a callable as ``custom:<its qualified name>``."""
    if isinstance(metric, Metric):
        return metric.value
    return f"custom:{getattr(metric, '__qualname__', None) or type(metric).__name__}"


def per_example(
    logits: Float[Tensor, "batch vocab"], targets: Int[Tensor, " batch"], metric: Metric,
    foils: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """A built-in metric of each example, from the logits at the scored position."""
    logits = logits.float()
    targets = targets.to(logits.device)  # with a device map, logits come off the last device
    if metric is Metric.LOGIT_MINUS_MEAN:
        return logits.gather(-1, targets[:, None])[:, 0] - logits.mean(-1)
    if metric is Metric.PROB:
        return logits.softmax(-1).gather(-1, targets[:, None])[:, 0]
    if metric is Metric.LOGPROB:
        return logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]
    if metric is Metric.LOGIT_DIFF:
        if foils is None:
            raise PearLensError("metric 'logit_diff' needs a foil token for every prompt; give foils (or use "
                                "metric='logprob')")
        foils = foils.to(logits.device)
        return logits.gather(-1, targets[:, None])[:, 0] - logits.gather(-1, foils[:, None])[:, 0]
    raise PearLensError(f"unknown metric {metric!r}")


def check_metric(metric: Metric | MetricFn, batch: Any) -> None:
    """Refuse, before any scoring, a built-in metric the task cannot give (``logit_diff`` without foils)."""
    if metric is Metric.LOGIT_DIFF and getattr(batch, "foils", None) is None:
        raise PearLensError("metric 'logit_diff' needs a foil token for every prompt, and this task has none; "
                            "give foils, or use metric='logprob'")


def evaluate(metric: Metric | MetricFn, logits: Float[Tensor, "rows vocab"], batch: Any) -> Float[Tensor, " rows"]:
    """The metric of every row of ``logits``: ``rows`` is the batch's size or a multiple of it (a group of
    patched copies of the batch stacked, as the fast scans run them), in the batch's order within each copy.

    A user callable gets each copy's logits with ``batch`` itself; what it returns is checked: one finite number
    per prompt, else one line naming the problem.
    """
    size = int(batch.targets.shape[0])
    if logits.shape[0] % size:
        raise PearLensError(f"internal: {logits.shape[0]} rows of logits for a batch of {size}")
    copies = logits.shape[0] // size
    if isinstance(metric, Metric):
        targets, foils = batch.targets, getattr(batch, "foils", None)
        if copies > 1:
            targets = targets.repeat(copies)
            foils = foils.repeat(copies) if foils is not None else None
        return per_example(logits, targets, metric, foils)
    out = []
    for part in logits.split(size):
        value = metric(part, batch)
        name = metric_name(metric)
        if not isinstance(value, Tensor):
            raise PearLensError(f"metric {name} returned {type(value).__name__}; it must return a tensor with one "
                                f"number per prompt, shape [{size}]")
        if tuple(value.shape) != (size,):
            raise PearLensError(f"metric {name} returned shape {tuple(value.shape)}; it must return one number per "
                                f"prompt, shape [{size}] (reduce over the vocabulary, not over the prompts)")
        value = value.float()
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise PearLensError(f"metric {name} returned {bad} non-finite value(s) (NaN or inf) of {size}; fix "
                                "the metric (e.g. log of a probability of 0)")
        out.append(value)
    return torch.cat(out)


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
