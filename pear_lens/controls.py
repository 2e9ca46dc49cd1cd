"""Random-head controls: heads drawn to differ from a chosen set in which heads they are, and nothing else.

One home for every draw of control heads (the K sweep's random-K rows, the evaluation's controls, a study's
dozens of controls): :func:`random_heads` draws K heads uniformly (optionally avoiding some);
:func:`layer_matched_heads` draws as many heads per layer as a reference set; :func:`draw_control` names the
two kinds (:class:`ControlKind`) and records how a draw relates to the reference. Draws depend on the seed
alone (a torch generator), so a control is rebuilt from its seed.

"Uniform" here means *heads drawn uniformly*; scaling every head by one τ is the evaluation's
all-heads condition (:func:`pear_lens.evaluation.conditions.all_heads`).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Sequence

import torch

from pear_lens.errors import PearLensError
from pear_lens.heads import Head


def random_heads(n_layers: int, n_heads: int, k: int, seed: int, exclude: Sequence[Head] = ()) -> list[Head]:
    """``k`` distinct heads drawn uniformly (seeded), optionally avoiding ``exclude`` (e.g. the top heads)."""
    banned = {(int(l), int(h)) for l, h in exclude}
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in banned]
    if not 1 <= k <= len(pool):
        raise PearLensError(f"cannot draw {k} random heads from {len(pool)} available")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:k]
    return sorted(pool[int(i)] for i in order)


@dataclass(frozen=True)
class LayerMatchedDraw:
    """Heads drawn layer by layer to match a reference set (:func:`layer_matched_heads`)."""

    heads: list[Head]
    """As many heads per layer as the reference has there, sorted."""
    partial_layers: tuple[int, ...]
    """Layers with fewer other heads than reference heads: there the draw also holds reference heads."""

    @property
    def partial(self) -> bool:
        return bool(self.partial_layers)


def layer_matched_heads(n_heads: int, reference: Sequence[Head], seed: int) -> LayerMatchedDraw:
    """A seeded control with the same number of heads per layer as ``reference`` (e.g. the PEAR heads).

    In each layer the heads are drawn from that layer's *other* heads; where fewer other heads exist than
    reference heads (more than half the layer is in ``reference``) all other heads are taken and the rest
    drawn from the layer's reference heads, so the counts per layer always match and the layer is listed
    in ``partial_layers``. A difference between the reference and such controls cannot come from which
    layers were re-weighted, only from which heads.

    >>> draw = layer_matched_heads(4, [(0, 1), (2, 3), (2, 0)], seed=0)
    >>> sorted(l for l, _ in draw.heads), draw.partial
    ([0, 2, 2], False)
    """
    wanted: dict[int, set[int]] = {}
    for l, h in reference:
        if not 0 <= int(h) < n_heads:
            raise PearLensError(f"head ({l}, {h}) is outside a layer of {n_heads} heads")
        wanted.setdefault(int(l), set()).add(int(h))
    gen = torch.Generator().manual_seed(seed)

    def draw(pool: list[int], k: int) -> list[int]:
        return [pool[int(i)] for i in torch.randperm(len(pool), generator=gen)[:k]]

    heads, partial = [], []
    for layer in sorted(wanted):  # sorted: the draw depends on the seed alone, not on the reference's order
        mine = sorted(wanted[layer])
        others = [h for h in range(n_heads) if h not in wanted[layer]]
        if len(others) >= len(mine):
            picked = draw(others, len(mine))
        else:
            picked = others + draw(mine, len(mine) - len(others))
            partial.append(layer)
        heads += [(layer, h) for h in picked]
    return LayerMatchedDraw(sorted(heads), tuple(partial))



class ControlKind(str, Enum):
    UNIFORM = "uniform"
    """K heads drawn uniformly from the whole model (avoiding PEAR's where at least 2K heads exist)."""
    LAYER_MATCHED = "layer_matched"
    """As many heads per layer as PEAR, drawn from the other heads of those layers."""

    @property
    def label(self) -> str:
        return {"uniform": "uniform random-K", "layer_matched": "layer-matched random-K"}[self.value]


@dataclass(frozen=True)
class ControlDraw:
    """The heads of one control and how they relate to PEAR's."""

    kind: ControlKind
    seed: int
    heads: list[Head]
    note: dict[str, Any]
    """``avoids_pear_heads`` (uniform) or ``partial_layers`` and ``partial`` (layer-matched)."""


def draw_control(kind: ControlKind | str, n_layers: int, n_heads: int, pear: Sequence[Head], seed: int) -> ControlDraw:
    """The heads of control ``kind`` for ``seed`` (the seed draws heads only; training uses PEAR's recipe)."""
    kind = ControlKind(kind)
    pear = [(int(l), int(h)) for l, h in pear]
    if kind is ControlKind.UNIFORM:
        avoid = n_layers * n_heads >= 2 * len(pear)  # enough other heads left (K above half cannot avoid them)
        heads = random_heads(n_layers, n_heads, len(pear), seed, exclude=pear if avoid else ())
        return ControlDraw(kind, seed, heads, {"avoids_pear_heads": avoid})
    draw = layer_matched_heads(n_heads, pear, seed)
    return ControlDraw(kind, seed, draw.heads, {"partial": draw.partial, "partial_layers": list(draw.partial_layers)})
