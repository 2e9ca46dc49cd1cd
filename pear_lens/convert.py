"""Fold learned head coefficients into a plain Hugging Face model.

A head's output enters the residual stream through the attention output
projection, whose input is the head-major concatenation of the per-query-head
outputs. Multiplying head ``h`` by ``τ`` is therefore the same as multiplying
the ``h``-th ``d_head``-wide slice of the projection's input dimension by
``τ``: the folded model has the same architecture, parameter count and speed
as the original.

This module depends only on torch, transformers, safetensors and the standard
library; it is importable without TransformerLens.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

import torch

from pear_lens.errors import PearLensError
from pear_lens.families import Family, family_for

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Head = tuple[int, int]


def fingerprint(model: "PreTrainedModel") -> str:
    """A digest of every tensor in ``model.state_dict()`` (names, dtypes, shapes, bytes).

    Artifacts record the fingerprint of the weights they were trained on; folding
    into any other weights (including an already folded copy) is refused.
    """
    h = hashlib.blake2b(digest_size=16)
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.contiguous().cpu().numpy().tobytes())
    return "blake2b:" + h.hexdigest()


def _get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise PearLensError(
            f"{type(model).__name__} has no module {path!r}; is this a causal LM of the family "
            "its config claims? (pear_lens.families lists the expected module paths)"
        ) from None


def output_projection(model: "PreTrainedModel", layer: int) -> tuple[torch.Tensor, Family]:
    """The weight of layer ``layer``'s attention output projection, and its family."""
    family = family_for(model.config.model_type)
    module = _get_module(model, family.o_proj.format(layer=layer))
    return module.weight, family


def head_slice(weight: torch.Tensor, family: Family, head: int, n_heads: int) -> torch.Tensor:
    """The view of ``weight`` that multiplies query head ``head``'s output."""
    in_dim = weight.shape[1] if family.layout == "linear" else weight.shape[0]
    if in_dim % n_heads:
        raise PearLensError(f"projection input width {in_dim} is not divisible by {n_heads} heads")
    d_head = in_dim // n_heads
    cols = slice(head * d_head, (head + 1) * d_head)
    return weight[:, cols] if family.layout == "linear" else weight[cols, :]


def n_layers_heads(model: "PreTrainedModel") -> tuple[int, int]:
    cfg = getattr(model.config, "text_config", None) or model.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


@torch.no_grad()
def fold_coefficients(model: "PreTrainedModel", coefficients: Mapping[Head, float]) -> "PreTrainedModel":
    """Scale each ``(layer, head)``'s output-projection slice by its coefficient, in place."""
    n_layers, n_heads = n_layers_heads(model)
    for (layer, head), tau in coefficients.items():
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise PearLensError(
                f"head ({layer}, {head}) is outside this model ({n_layers} layers × {n_heads} heads)"
            )
        tau = float(tau)
        if not torch.isfinite(torch.tensor(tau)):
            raise PearLensError(f"coefficient of head ({layer}, {head}) is not finite: {tau}")
        weight, family = output_projection(model, layer)
        head_slice(weight, family, head, n_heads).mul_(tau)
    return model
