"""Reference path patching (the head search of PEAR, arXiv 2409.19745): the default scoring method.

Sender: one head's output at the scored position ``end``, replaced by its mean
over the batch. Frozen: q, k and v of every head in every layer keep their
clean values, so every other head's output is clean too; MLPs are recomputed.
Receiver: the final residual stream at ``end``. The effect is the head's direct
effect plus its effect through later MLPs.

Because attention is frozen and the patch sits at one position, only position
``end`` changes, and only through MLPs and norms. The fast scan therefore
recomputes blocks ``layer …`` on a *one-token* sequence per example, with every
head's output pinned to its clean value at ``end`` (the patched one excepted),
for all heads of a layer at once. ``plain`` keeps the obvious implementation —
one full hooked forward per head — as the reference the tests compare against.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from pear_lens import hooks
from pear_lens.mediation._forward import LinearReadout, capture, run_from
from pear_lens.mediation.base import (
    Ablation,
    Implementation,
    Positions,
    Replace,
    SettingScan,
    corrupted_z,
    one_forward_per_head,
    replacer,
    scoring_method,
)
from pear_lens.metrics import Metric, MetricFn, evaluate
from pear_lens.heads import Head

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.prompt_task import ScoredBatch

MAX_LOGIT_FLOATS = 2**26
"""Cap on rows × vocab of one logits tensor in the fast scan (256 MB in fp32)."""


def _patch_values(z_end: Tensor, replace: Replace, corrupt_end: Tensor | None) -> Tensor:
    """``[batch, n_heads, d_head]`` replacement of every head's output at ``end``."""
    return torch.stack([replace(z_end[:, h], corrupt_end[:, h] if corrupt_end is not None else None)
                        for h in range(z_end.shape[1])], dim=1)


def _pinning_hooks(acts: dict[str, Tensor], layer: int, heads: list[int], patch: Tensor, n_layers: int):
    """hook_z overrides for blocks ``layer…``: clean outputs at ``end``, one patched head per group.

    Row group ``i`` (``batch`` rows each) patches head ``heads[i]`` of ``layer``.
    """
    N = patch.shape[0]

    def pinned(j: int):
        def hook_fn(z: Tensor, hook) -> Tensor:
            out = acts[hooks.z(j)][:, None].repeat(len(heads), 1, 1, 1)  # [g*N, 1, H, d_head]
            if j == layer:
                for i, h in enumerate(heads):
                    out[i * N:(i + 1) * N, 0, h] = patch[:, h]
            return out
        return hook_fn

    return [(hooks.z(j), pinned(j)) for j in range(layer, n_layers)]


def heads_per_pass(model: "LoadedModel", batch_size: int, readout: LinearReadout | None) -> int:
    """Heads of one layer patched in one forward of the fast scan: all of them when the metric is read from the
    hidden state, else as many as keep one logits tensor under :data:`MAX_LOGIT_FLOATS`."""
    n_heads = model.n_heads
    return n_heads if readout else max(1, min(n_heads, MAX_LOGIT_FLOATS // (batch_size * model.d_vocab)))


@dataclass
class CleanEnd:
    """What the fast scan keeps of a batch's clean forward: the tokens up to ``end``, every layer's ``hook_z``
    and ``resid_pre`` at ``end`` (and the corrupted run's ``hook_z``), and the clean metric of every prompt."""

    tokens: Tensor
    acts: dict[str, Tensor]
    corrupt: dict[str, Tensor]
    clean_each: Tensor


@torch.no_grad()
def clean_end(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation) -> CleanEnd:
    """The fast scan's one clean forward of ``batch`` (logits at ``end`` only)."""
    n_layers, end = model.n_layers, batch.end
    tokens = batch.tokens[:, : end + 1]  # later positions cannot influence `end`
    names = [hooks.z(l) for l in range(n_layers)] + [hooks.resid_pre(l) for l in range(n_layers)]
    logits, acts = capture(model.bridge, tokens, names, pos=end, logits_to_keep=1)
    corrupt = corrupted_z(model, batch, ablation, pos=end, upto=end + 1)
    return CleanEnd(tokens, acts, corrupt, evaluate(metric, logits[:, -1], batch))


@torch.no_grad()
def scan_layer(model: "LoadedModel", batch: "ScoredBatch", clean: CleanEnd, layer: int, replace: Replace,
               readout: LinearReadout | None, metric: "Metric | MetricFn") -> Tensor:
    """``[n_heads, batch]``: π̃ of every prompt with each head of ``layer`` patched at ``end``, from blocks
    ``layer…`` rerun on one token per prompt (:func:`heads_per_pass` heads per forward)."""
    bridge, n_layers, n_heads = model.bridge, model.n_layers, model.n_heads
    end, N, acts = batch.end, batch.batch_size, clean.acts
    name = hooks.z(layer)
    patch = _patch_values(acts[name], replace, clean.corrupt.get(name))
    chunk = heads_per_pass(model, N, readout)
    out_rows = []
    for start in range(0, n_heads, chunk):
        heads = list(range(start, min(start + chunk, n_heads)))
        g = len(heads)
        with readout.hidden_states(bridge) if readout else contextlib.nullcontext():
            out = run_from(
                bridge, clean.tokens[:, end:end + 1].repeat(g, 1), layer,
                acts[hooks.resid_pre(layer)][:, None].repeat(g, 1, 1),
                _pinning_hooks(acts, layer, heads, patch, n_layers),
            )
        m = readout(out[:, -1], batch, g) if readout else evaluate(metric, out[:, -1], batch)
        out_rows.append(m.view(g, N))
    return torch.cat(out_rows)


@torch.no_grad()
def setting_fast(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation,
                 seed: int, bar) -> SettingScan:
    n_layers, n_heads, N = model.n_layers, model.n_heads, batch.batch_size
    clean = clean_end(model, batch, metric, ablation)
    replace = replacer(ablation, N, seed)
    readout = LinearReadout.for_model(model.bridge, metric)
    patched = torch.empty(n_layers, n_heads)
    each = torch.empty(N, n_layers, n_heads)
    for layer in range(n_layers):
        m = scan_layer(model, batch, clean, layer, replace, readout, metric)
        patched[layer] = m.mean(1).float().cpu()
        each[:, layer] = m.t().float().cpu()
        bar.update(1)
    return SettingScan(patched, clean.clean_each.mean().item(), each, clean.clean_each.float().cpu())


def setting_plain(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", ablation: Ablation,
                  seed: int, bar, heads: list[Head] | None = None) -> SettingScan:
    """One full hooked forward per head on the whole sequence, every query, key and value pinned to its clean
    value: the reference implementation."""
    frozen = [f(l) for l in range(model.n_layers) for f in (hooks.q, hooks.k, hooks.v)]
    return one_forward_per_head(model, batch, metric, ablation, batch.end, seed, bar, heads, frozen)


@dataclass(frozen=True)
class PathOptions:
    """Options of ``path``: it always patches at ``end`` (attention frozen), so it takes no ``positions``."""

    ablation: Ablation = Ablation.MEAN
    """what replaces the head's output at `end`"""
    implementation: Implementation = Implementation.FAST
    """fast: the exact one-token scan; plain: one full hooked forward per head (the reference)"""


@scoring_method("path", "PP", "reference path patching: batch-mean of one head at `end`, q/k/v frozen, MLPs free",
                PathOptions, positions=Positions.END)
def path_patching(model: "LoadedModel", batch: "ScoredBatch", metric: "Metric | MetricFn", options: PathOptions,
                  seed: int, bar) -> SettingScan:
    """Score every head by reference path patching. ``implementation='plain'`` is the slow reference."""
    fn = {Implementation.FAST: setting_fast, Implementation.PLAIN: setting_plain}[options.implementation]
    return fn(model, batch, metric, options.ablation, seed, bar)
