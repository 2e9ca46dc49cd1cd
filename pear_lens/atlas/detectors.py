"""The head detectors pear_lens ships, each a registered function of one recording.

Previous-token, duplicate-token and induction scores are TransformerLens's ``head_detector``
definitions: its detection patterns and its ``"mul"`` measure (the share of a head's attention that
falls on the detection pattern's query-key pairs, over every query row). ``detect_head`` runs on the
bridge, but it takes one *string* at a time, re-tokenises it and runs its own forward, and the proxy
prompts are token ids; so the same patterns and measure are applied here, batched, to the shared
recording (``tests/test_atlas.py`` checks the two agree on the bridge).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from transformer_lens import head_detector as tl_head_detector

from pear_lens.atlas.base import PromptSet, Recording, register_detector
from pear_lens.convert import head_slice, output_projection

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

TL_SOURCE = "TransformerLens head_detector ('mul' measure)"


@dataclass(frozen=True)
class PatternOptions:
    """Options of TransformerLens's detection-pattern scores."""

    exclude_bos: bool = False
    """Ignore attention paid to position 0 (TransformerLens's exclude_bos)."""
    exclude_current_token: bool = False
    """Ignore attention a position pays to itself (TransformerLens's exclude_current_token)."""


def _detection(kind: str, tokens: Tensor) -> Tensor:
    """TransformerLens's detection pattern of ``kind`` for each sequence, ``[batch, seq, seq]``."""
    make = getattr(tl_head_detector, f"get_{kind}_detection_pattern")
    return torch.stack([make(seq.cpu()).float() for seq in tokens])


def pattern_score(patterns: list[Tensor], detection: Tensor, options: PatternOptions) -> Tensor:
    """TransformerLens's ``"mul"`` measure for every head of every sequence, ``[batch, n_layers, n_heads]``."""
    out = []
    for p in patterns:  # [batch, heads, q, k]
        if options.exclude_bos or options.exclude_current_token:
            p = p.clone()
            if options.exclude_bos:
                p[..., 0] = 0
            if options.exclude_current_token:
                p.diagonal(dim1=-2, dim2=-1).zero_()
        out.append((p * detection[:, None]).sum((-1, -2)) / p.sum((-1, -2)))
    return torch.stack(out, dim=1)


def _pattern_detector(kind: str):
    def detect(model: "LoadedModel", rec: Recording, options: PatternOptions) -> Tensor:
        return pattern_score(rec.patterns, _detection(kind, rec.tokens), options)
    return detect


register_detector(
    "previous_token", "prev-token",
    "Share of the head's attention on the previous position.",
    TL_SOURCE, prompts=PromptSet.PROXY, options=PatternOptions,
)(_pattern_detector("previous_token_head"))

register_detector(
    "duplicate_token", "dup-token",
    "Share of the head's attention on earlier occurrences of the current token.",
    TL_SOURCE, prompts=PromptSet.PROXY, options=PatternOptions,
)(_pattern_detector("duplicate_token_head"))

register_detector(
    "induction", "induction",
    "Share of the head's attention on the position after an earlier occurrence of the current token.",
    TL_SOURCE + "; Olsson et al. 2022, arXiv 2209.11895", prompts=PromptSet.PROXY, options=PatternOptions,
)(_pattern_detector("induction_head"))


@register_detector(
    "sink", "sink",
    "Mean attention on the first position, over every later query position (an attention sink parks "
    "attention there).",
    "Xiao et al. 2023 (attention sinks), arXiv 2309.17453", prompts=PromptSet.PROXY)
def attention_sink(model: "LoadedModel", rec: Recording, options) -> Tensor:
    return torch.stack([p[:, :, 1:, 0].mean(-1) for p in rec.patterns], dim=1)


# --------------------------------------------------------------------------- copy suppression


def head_output_weights(model: "LoadedModel", layer: int) -> Tensor:
    """``[n_heads, d_head, d_model]``: what each query head's ``z`` is multiplied by to reach the residual."""
    weight, family = output_projection(model.bridge.original_model, layer)
    slices = [head_slice(weight, family, h, model.n_heads) for h in range(model.n_heads)]
    return torch.stack([s.T if family.layout == "linear" else s for s in slices]).detach()


class LogitReadout:
    """``logit[token] − mean(logits)`` from a final normalised hidden state, without the full vocabulary.

    Linear in the hidden state, so the logit soft-capping some families apply afterwards is left out.
    """

    def __init__(self, model: "LoadedModel"):
        head = model.bridge.unembed.original_component
        self.weight = head.weight.detach()
        bias = getattr(head, "bias", None)
        self.bias = bias.detach() if bias is not None else torch.zeros(self.weight.shape[0], dtype=self.weight.dtype,
                                                                        device=self.weight.device)
        self.weight_mean, self.bias_mean = self.weight.mean(0), self.bias.mean()

    def __call__(self, hidden: Tensor, tokens: Tensor) -> Tensor:
        """``hidden [..., d_model]`` read at ``tokens [...]``."""
        hidden = hidden.to(self.weight.device, self.weight.dtype)
        tokens = tokens.to(self.weight.device)
        target = (hidden * self.weight[tokens]).sum(-1) + self.bias[tokens]
        return (target - (hidden @ self.weight_mean + self.bias_mean)).float().cpu()


@dataclass(frozen=True)
class CopySuppressionOptions:
    """Options of the copy-suppression score."""

    include_bos: bool = False
    """Let a BOS token (position 0 of a task with BOS) count as the attended token (by default it never does:
    its logit means nothing here)."""


@register_detector(
    "copy_suppression", "copy-supp",
    "Direct effect of the head's output on the logit (minus the mean logit) of the token it attends to "
    "most, at the copy half's positions: the change when the head's output is removed from the final "
    "residual stream, the final norm recomputed. Negative: the head suppresses what it attends to.",
    "McDougall et al. 2023 (copy suppression), arXiv 2310.04625", prompts=PromptSet.PROXY,
    options=CopySuppressionOptions, higher_is_role=False)
def copy_suppression(model: "LoadedModel", rec: Recording, options: CopySuppressionOptions) -> Tensor:
    if rec.n is None:
        raise ValueError("copy suppression reads the proxy task's copy half")
    positions = torch.arange(rec.offset + rec.n, rec.seq_len - 1)
    readout = LogitReadout(model)
    device = readout.weight.device
    ln_final = model.bridge.ln_final
    resid = rec.resid_final[:, positions].to(device, readout.weight.dtype)  # [batch, pos, d_model]
    with torch.no_grad():
        full = ln_final(resid)
        out = []
        for layer, pattern in enumerate(rec.patterns):
            rows = pattern[:, :, positions].clone()  # [batch, heads, pos, key]
            if not options.include_bos and rec.offset:
                rows[..., 0] = -1.0
            src = rows.argmax(-1)  # [batch, heads, pos]
            attended = torch.gather(rec.tokens[:, None, :].expand(-1, rows.shape[1], -1), 2, src)
            attended = attended.permute(0, 2, 1)  # [batch, pos, heads]
            w = head_output_weights(model, layer).to(device, readout.weight.dtype)
            z = rec.z[layer][:, positions].to(device, readout.weight.dtype)  # [batch, pos, heads, d_head]
            head_out = torch.einsum("bphd,hdm->bphm", z, w)
            without = ln_final(resid[:, :, None] - head_out)
            effect = readout(full[:, :, None].expand_as(without), attended) - readout(without, attended)
            out.append(effect.mean(1))  # [batch, heads]
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------- retrieval


@dataclass(frozen=True)
class RetrievalOptions:
    """Options of the retrieval score."""

    all_prompts: bool = False
    """Average over every prompt; by default only over those whose greedy answer reproduced the needle
    (Wu et al. score heads while the model copies)."""


def retrieval_hits(pattern_rows: Tensor, tokens: Tensor, emitted: Tensor, needle: tuple[int, int]) -> Tensor:
    """Share of the needle's tokens each head copies, ``[n_heads]``.

    ``pattern_rows [n_heads, steps, seq]``: each head's attention at the query position of each decoding
    step; ``emitted [steps]``: the token emitted at that step; ``tokens [seq]``. A head hits a needle
    position when, at some step, its most-attended position is that position and holds the emitted
    token; the score counts distinct positions hit, over the needle's length.
    """
    start, end = needle
    top = pattern_rows.argmax(-1)  # [heads, steps]
    inside = (top >= start) & (top < end)
    same = tokens[top] == emitted[None, :]
    hits = inside & same
    scores = torch.zeros(pattern_rows.shape[0])
    for h in range(pattern_rows.shape[0]):
        scores[h] = len(set(top[h][hits[h]].tolist())) / (end - start)
    return scores


@register_detector(
    "retrieval", "retrieval",
    "Share of the needle's tokens the head copies while the model reproduces an invented fact from a "
    "haystack in greedy decoding: a hit when the head's most-attended position lies in the needle and "
    "holds the token being emitted.",
    "Wu et al. 2024 (retrieval heads), arXiv 2404.15574", prompts=PromptSet.NEEDLE, options=RetrievalOptions)
def retrieval(model: "LoadedModel", rec: Recording, options: RetrievalOptions) -> Tensor:
    out = torch.full((rec.batch_size, model.n_layers, model.n_heads), float("nan"))
    for b, info in enumerate(rec.needle):
        if not options.all_prompts and not info["copied"]:
            continue
        prompt_len = info["prompt_len"]
        steps = torch.arange(prompt_len, rec.seq_len)
        emitted = rec.tokens[b, steps]
        for layer, pattern in enumerate(rec.patterns):
            rows = pattern[b][:, steps - 1]  # the query that emitted token j sits at j - 1
            out[b, layer] = retrieval_hits(rows, rec.tokens[b], emitted, (info["needle_start"], info["needle_end"]))
    return out
