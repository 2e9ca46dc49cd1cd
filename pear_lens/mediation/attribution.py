"""Attribution patching: a first-order estimate of activation patching.

One forward and one backward pass give ∂π/∂z for every head at every
position; the effect of replacing ``z`` by ``z̃`` is estimated as
``Σ (z̃ − z) · ∂π/∂z``. It is a linear approximation: compare it with the exact
``activation`` scores (``pear_lens.compare`` or ``benchmarks/discovery.py``
report the rank correlation) before trusting it on a new model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pear_lens import hooks
from pear_lens.mediation.base import (
    Ablation,
    Positions,
    replacer,
    scoring_method,
)
from pear_lens.metrics import Metric, per_example

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.proxy_task import TaskBatch


def _setting(model: "LoadedModel", batch: "TaskBatch", metric: Metric, ablation: Ablation,
             positions: Positions, seed: int, bar) -> tuple[Tensor, float]:
    bridge, n_layers, n_heads = model.bridge, model.n_layers, model.n_heads
    end = batch.end
    tokens = batch.tokens[:, : end + 1]
    names = [hooks.z(l) for l in range(n_layers)]
    clean_z: dict[str, Tensor] = {}
    leaves: dict[str, Tensor] = {}

    def attach(name: str):
        # z + 0 with a leaf 0: the gradient on the leaf is the *total* derivative
        # of π with respect to z, through every later layer (detaching z would cut it)
        def hook_fn(z: Tensor, hook) -> Tensor:
            clean_z[name] = z.detach()
            leaves[name] = torch.zeros_like(z, requires_grad=True)
            return z + leaves[name]
        return hook_fn

    with torch.enable_grad():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=[(n, attach(n)) for n in names], logits_to_keep=1)
        pi = per_example(logits[:, -1], batch.targets, metric).mean()
        grads = torch.autograd.grad(pi, [leaves[n] for n in names])
    clean = pi.item()
    replace = replacer(ablation, batch.batch_size, seed)
    where = positions.index(end)

    estimate = torch.empty(n_layers, n_heads)
    for layer, (name, grad) in enumerate(zip(names, grads)):
        z = clean_z[name]
        for head in range(n_heads):
            z_h = z[:, where, head]
            estimate[layer, head] = ((replace(z_h) - z_h) * grad[:, where, head]).sum().float()
    bar.update(n_layers)
    return clean + estimate, clean


@dataclass(frozen=True)
class AttributionOptions:
    """Options of ``attribution`` (a one-pass estimate: it has no plain reference of its own)."""

    ablation: Ablation = Ablation.MEAN
    """what replaces the head's output"""
    positions: Positions = Positions.ALL
    """where the head's output is replaced: every position up to `end`, or only `end`"""


@scoring_method("attribution", "AtP",
                "attribution patching: linear estimate of activation patching (1 fwd + 1 bwd)", AttributionOptions)
def attribution_patching(model: "LoadedModel", batch: "TaskBatch", metric: Metric, options: AttributionOptions,
                         seed: int, bar) -> tuple[Tensor, float]:
    """Estimate every head's activation-patching score from one forward and one backward pass."""
    return _setting(model, batch, metric, options.ablation, options.positions, seed, bar)
