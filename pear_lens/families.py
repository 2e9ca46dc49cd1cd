"""Declarative table of the model families pear_lens can fold into.

Each family names where a layer's attention output projection lives in the
Hugging Face model and how its weight is laid out. The input of that projection
is the concatenation of the per-query-head outputs, head-major, so scaling one
head's output is scaling one contiguous slice of the projection's *input*
dimension. Grouped-query attention does not change that: the slice is per
query head.

This module imports nothing from TransformerLens, so the converter can use it
on a plain Hugging Face install.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pear_lens.errors import PearLensError

Layout = Literal["linear", "conv1d"]


@dataclass(frozen=True)
class Family:
    """How to find and scale one family's per-head output projection."""

    name: str
    model_types: tuple[str, ...]
    """Hugging Face ``config.model_type`` values that belong to the family."""
    o_proj: str
    """Module path of layer ``{layer}``'s output projection."""
    layout: Layout
    """``linear``: ``nn.Linear`` weight ``[d_model, n_heads*d_head]`` (scale
    columns). ``conv1d``: GPT-2's ``Conv1D`` stores the transpose,
    ``[n_heads*d_head, d_model]`` (scale rows)."""
    positional: str
    """Position scheme, for documentation and the model list."""


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma2", "gemma"),
               "model.layers.{layer}.self_attn.o_proj", "linear", "rotary"),
        Family("gpt2", ("gpt2",), "transformer.h.{layer}.attn.c_proj", "conv1d", "learned absolute"),
        Family("opt", ("opt",), "model.decoder.layers.{layer}.self_attn.out_proj", "linear",
               "learned absolute"),
        Family("bloom", ("bloom",), "transformer.h.{layer}.self_attention.dense", "linear", "ALiBi"),
        Family("gpt_neox", ("gpt_neox",), "gpt_neox.layers.{layer}.attention.dense", "linear",
               "rotary (partial)"),
    )
}

_BY_MODEL_TYPE = {mt: fam for fam in FAMILIES.values() for mt in fam.model_types}


def family_for(model_type: str) -> Family:
    """Return the family of a Hugging Face ``model_type``, or explain what is supported."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        supported = ", ".join(sorted(_BY_MODEL_TYPE))
        raise PearLensError(
            f"model_type {model_type!r} is not supported for folding; supported model types: "
            f"{supported}. Add a row to pear_lens.families.FAMILIES to support it."
        ) from None
