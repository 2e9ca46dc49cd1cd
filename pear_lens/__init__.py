"""pear_lens: find the attention heads that make a language model ignore its context, and fix them.

The method is PEAR (arXiv 2409.19745); the fix costs nothing at inference.

The method reads top to bottom in the package layout: ``proxy_task`` (the copy
proxy task), ``mediation`` (per-head Δπ scores), ``reweight`` (learn one scalar
per suppression head), ``convert`` (fold the scalars into a Hugging Face model),
``evaluation`` and ``plots``; ``atlas`` puts each head's Δπ beside known head roles. ``pear_lens.commands`` holds the ``pear-lens``
commands, which call this library and are never imported by it. ``docs/architecture.md`` lists the layers
and every module.

Public names are imported lazily so that ``import pear_lens.convert`` works
without TransformerLens installed.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "pear_lens.models.loaded",
    "list_models": "pear_lens.models.registry",
    "LoadedModel": "pear_lens.models.loaded",
    "ProxyTask": "pear_lens.proxy_task",
    "PromptTask": "pear_lens.prompt_task",
    "Metric": "pear_lens.metrics",
    "Difference": "pear_lens.metrics",
    "HeadScores": "pear_lens.results",
    "score_heads": "pear_lens.mediation",
    "rescore": "pear_lens.mediation",
    "METHODS": "pear_lens.mediation",
    "PearLensError": "pear_lens.errors",
    "TrainConfig": "pear_lens.recipe",
    "Recipe": "pear_lens.recipe",
    "train_coefficients": "pear_lens.reweight",
    "reweighted": "pear_lens.reweight",
    "Artifact": "pear_lens.artifact",
    "load_artifact": "pear_lens.artifact",
    "fold_into_hf": "pear_lens.convert",
    "head_atlas": "pear_lens.atlas",
    "HeadAtlas": "pear_lens.atlas",
    "intervention": "pear_lens.evaluation.conditions",
    "INTERVENTIONS": "pear_lens.evaluation.conditions",
    "register_intervention": "pear_lens.evaluation.conditions",
    "run_report": "pear_lens.run_page",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pear_lens' has no attribute {name!r}")
