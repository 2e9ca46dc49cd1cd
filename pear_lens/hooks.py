"""Every TransformerLens hook name pear_lens uses, built in one place.

``tests/test_hooks.py`` checks each of them against the hook dictionary of a
real bridge for every supported family.
"""
from __future__ import annotations


def z(layer: int) -> str:
    """Per-query-head attention output before the output projection, ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def q(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_q"


def k(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_k"


def v(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_v"


def pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def resid_pre(layer: int) -> str:
    """Residual stream entering block ``layer``."""
    return f"blocks.{layer}.hook_resid_pre"


def final_norm_input() -> str:
    """Residual stream entering the final norm, ``[batch, pos, d_model]``."""
    return "ln_final.hook_in"


def all_used(n_layers: int) -> list[str]:
    return [f(layer) for layer in range(n_layers) for f in (z, q, k, v, pattern, resid_pre)] + [final_norm_input()]
