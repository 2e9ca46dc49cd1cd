"""Activation patching: the total effect of replacing one head's output.

The head's ``hook_z`` is replaced (zero, batch-mean or resample) at every
position or only at the scored one, and everything downstream is recomputed,
later attention included. ``plain`` runs one full hooked forward per head.

The fast implementations are exact and differ by what the patch can reach:

- all positions: every position changes from the head's block upwards, so each
  patched forward starts at that block (the blocks below cannot change) and
  computes logits only at the scored position. This costs (n_layers − layer)
  blocks at every position per head: about half a forward on average, which
  bounds the speed-up over the plain loop near 2.5×.
- ``end`` only: the positions before ``end`` cannot change (attention is
  causal), so their keys and values are those of the clean run. Each patched
  forward is a *one-token* step at ``end`` from the head's block upwards on a
  copy of the clean key-value cache: every later attention layer still
  recomputes its query, key and value at ``end``, nothing else.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pear_lens import hooks
from pear_lens.mediation._forward import capture, passing_kv_cache, run_from
from pear_lens.mediation.base import (
    Ablation,
    Implementation,
    Positions,
    SettingScan,
    corrupted_z,
    each_head,
    one_forward_per_head,
    patch_head,
    replacer,
    scoring_method,
)
from pear_lens.metrics import Metric, MetricFn, evaluate
from pear_lens.heads import Head

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.prompt_task import ScoredBatch

Heads = list[Head] | None


@torch.no_grad()
def setting_fast(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation,
                 positions: Positions, seed: int, bar, heads: Heads = None) -> SettingScan:
    if positions is Positions.END:
        with passing_kv_cache(model.bridge):
            result = _setting_fast_end(model, batch, metric, ablation, seed, bar, heads)
        if result is not None:
            return result
        warnings.warn(f"{model.name}: the bridge did not fill the key-value cache of every layer, so activation "
                      "patching at `end` reruns whole sequences from each head's block instead (exact, slower)",
                      stacklevel=2)
    bridge, n_layers = model.bridge, model.n_layers
    end = batch.end
    tokens = batch.tokens[:, : end + 1]
    names = [hooks.z(l) for l in range(n_layers)] + [hooks.resid_pre(l) for l in range(n_layers)]
    logits, acts = capture(bridge, tokens, names, logits_to_keep=1)
    corrupt = corrupted_z(model, batch, ablation, upto=end + 1)
    clean_each = evaluate(metric, logits[:, -1], batch)
    replace = replacer(ablation, batch.batch_size, seed)
    where = positions.index(end)

    def patched_logits(layer: int, head: int) -> Tensor:
        name = hooks.z(layer)
        value = replace(acts[name][:, where, head], corrupt[name][:, where, head] if corrupt else None)
        return run_from(bridge, tokens, layer, acts[hooks.resid_pre(layer)],
                        [(name, patch_head(head, where, value))], logits_to_keep=1)[:, -1]

    return each_head(model, heads, bar, patched_logits, batch, metric, clean_each)


@torch.no_grad()
def _setting_fast_end(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation,
                      seed: int, bar, heads: Heads = None) -> SettingScan | None:
    """Patch at ``end`` only: one-token steps on the clean key-value cache of the positions before it
    (run it under :func:`passing_kv_cache`).

    ``None`` when the cache does not hold every layer's keys for all ``end`` earlier positions (an
    architecture whose attention bridge ignores the cache): the steps would silently see one token.
    """
    bridge, n_layers = model.bridge, model.n_layers
    end = batch.end
    _, prefix_cache = bridge(batch.tokens[:, :end], return_type="logits_and_cache", use_cache=True, logits_to_keep=1)
    try:
        filled = all(prefix_cache.get_seq_length(layer) == end for layer in range(n_layers))
    except (AttributeError, IndexError, TypeError):
        filled = False
    if not filled:
        return None
    step = batch.tokens[:, end:end + 1]
    names = [hooks.z(l) for l in range(n_layers)] + [hooks.resid_pre(l) for l in range(n_layers)]
    logits, acts = capture(bridge, step, names, past_key_values=copy.deepcopy(prefix_cache))
    corrupt = corrupted_z(model, batch, ablation, pos=end, upto=end + 1)
    clean_each = evaluate(metric, logits[:, -1], batch)
    replace = replacer(ablation, batch.batch_size, seed)

    def patched_logits(layer: int, head: int) -> Tensor:
        name = hooks.z(layer)
        value = replace(acts[name][:, 0, head], corrupt[name][:, head] if corrupt else None)
        # the step appends its key and value to the cache it is given: each head gets a fresh copy
        return run_from(bridge, step, layer, acts[hooks.resid_pre(layer)],
                        [(name, patch_head(head, 0, value))],
                        past_key_values=copy.deepcopy(prefix_cache))[:, -1]

    return each_head(model, heads, bar, patched_logits, batch, metric, clean_each)


def setting_plain(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation,
                  positions: Positions, seed: int, bar, heads: Heads = None) -> SettingScan:
    """One full hooked forward per head on the whole sequence: the reference implementation."""
    return one_forward_per_head(model, batch, metric, ablation, positions.index(batch.end), seed, bar, heads)


@dataclass(frozen=True)
class ActivationOptions:
    """Options of ``activation``."""

    ablation: Ablation = Ablation.MEAN
    """what replaces the head's output"""
    positions: Positions = Positions.ALL
    """where the head's output is replaced: every position up to `end`, or only `end`"""
    implementation: Implementation = Implementation.FAST
    """fast: the exact scan from the head's block (cached at `end`); plain: one full forward per head"""


@scoring_method("activation", "AP", "activation patching: total effect of replacing one head's hook_z",
                ActivationOptions)
def activation_patching(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn",
                        options: ActivationOptions, seed: int, bar) -> SettingScan:
    """Score every head by its total effect on π. ``implementation='plain'`` is the slow reference."""
    fn = {Implementation.FAST: setting_fast, Implementation.PLAIN: setting_plain}[options.implementation]
    return fn(model, batch, metric, options.ablation, options.positions, seed, bar)
