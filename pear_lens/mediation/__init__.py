"""Per-head mediation scores (Δπ) for the copy proxy task.

Every method has the signature ``(model, task, metric, **opts) -> HeadScores``
and is registered in :data:`METHODS`; :func:`score_heads` dispatches by name
and validates the closed vocabularies at the boundary.

- ``path`` (default): the PEAR reference path patching.
- ``activation``: total effect of replacing a head's output.
- ``attribution``: one-pass linear estimate of ``activation``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pear_lens.errors import PearLensError
from pear_lens.mediation import activation, attribution, path  # noqa: F401  (registers the methods)
from pear_lens.mediation.base import METHODS, Ablation, Method, Positions
from pear_lens.metrics import Difference, Metric, parse_enum
from pear_lens.results import HeadScores

if TYPE_CHECKING:
    from pear_lens.models import LoadedModel
    from pear_lens.task import ProxyTask

__all__ = ["METHODS", "Ablation", "Method", "Positions", "score_heads"]

_ENUM_OPTIONS = {"ablation": (Ablation, "ablation"), "positions": (Positions, "positions")}


def score_heads(
    model: "LoadedModel | str",
    task: "ProxyTask | None" = None,
    metric: Metric | str = Metric.LOGIT_MINUS_MEAN,
    method: str = "path",
    *,
    difference: Difference | str = Difference.RELATIVE,
    **opts: Any,
) -> HeadScores:
    """Score every attention head of ``model`` on the copy proxy task.

    >>> from pear_lens import load_model, ProxyTask
    >>> scores = score_heads(load_model("tiny-llama"), ProxyTask(settings=((4, 8),)), progress=False)
    >>> scores.scores.shape
    torch.Size([3, 4])
    """
    from pear_lens.models import as_loaded
    from pear_lens.task import ProxyTask

    if method not in METHODS:
        raise PearLensError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    for key, (enum, what) in _ENUM_OPTIONS.items():
        if key in opts:
            opts[key] = parse_enum(enum, opts[key], what)
    if "implementation" in opts and opts["implementation"] not in ("fast", "plain"):
        raise PearLensError(f"unknown implementation {opts['implementation']!r}; choose 'fast' or 'plain'")
    return METHODS[method].fn(
        as_loaded(model), task if task is not None else ProxyTask(),
        parse_enum(Metric, metric, "metric"), difference=parse_enum(Difference, difference, "difference"), **opts,
    )
