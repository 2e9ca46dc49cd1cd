"""The weight fingerprint: one digest that says which weights a run, an artifact or a fold belongs to.

Discovery runs and artifacts record it; training, folding and evaluation refuse weights whose
fingerprint differs. It needs only torch, so the artifact reader and the converter both use it
without importing each other.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def fingerprint(model: "PreTrainedModel") -> str:
    """A digest of every tensor in ``model.state_dict()`` (names, dtypes, shapes, bytes).

    Artifacts record the fingerprint of the weights they were trained on; folding
    into any other weights (including an already folded copy) is refused.
    """
    return fingerprint_state(model.state_dict())


def fingerprint_state(state: Mapping[str, torch.Tensor]) -> str:
    """:func:`fingerprint` of a state dict (for weights that are no longer one plain model)."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.contiguous().cpu().numpy().tobytes())
    return "blake2b:" + h.hexdigest()
