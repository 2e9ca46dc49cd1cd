"""The head atlas: each head's causal Δπ beside the roles researchers already know.

Detectors (:data:`DETECTORS`) score every head from activations recorded once per prompt set:
previous-token, duplicate-token and induction (TransformerLens's ``head_detector`` definitions),
attention sink, copy suppression (McDougall et al. 2023) and retrieval (Wu et al. 2024). A new
detector is one function registered with :func:`register_detector`; it reaches ``pear-lens atlas``.
"""
from __future__ import annotations

from pear_lens.atlas.base import DETECTORS, Detector, PromptSet, Recording, register_detector
from pear_lens.atlas.core import check_detectors, head_atlas
from pear_lens.atlas.needle import NeedleConfig
from pear_lens.atlas.result import HeadAtlas

__all__ = ["DETECTORS", "Detector", "HeadAtlas", "NeedleConfig", "PromptSet", "Recording", "check_detectors",
           "head_atlas", "register_detector"]
