"""Decoding-time interventions: context-aware decoding (CAD) and the no-empty-answer arm.

**Context-aware decoding** (Shi et al. 2023, arXiv 2305.14739) samples from
``softmax[(1 + α)·ℓ(y | c, x) − α·ℓ(y | x)]``: the logits with the context ``c``, pushed away from the
logits without it. It needs a second forward pass on the context-free prompt ``x``, so it costs two
passes where a folded condition costs one. :func:`cad_logits` is the formula; :class:`ContextAwareLogits`
applies it inside Hugging Face's ``generate``, and :mod:`pear_lens.evaluation.likelihood` applies it to
teacher-forced scores.

**No empty answer**: greedy accuracy counts an empty answer (end of sequence, or only white space, before
any text) as wrong, so it mixes "answers from the context" with "answers at all". :class:`NoEmptyAnswer`
forbids the end of sequence until the answer holds some text, a sensitivity arm in which an answer is empty
only if every allowed new token is white space.
"""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from pear_lens.errors import PearLensError
from pear_lens.models.loaded import input_device

CAD_ALPHA = 0.5
"""Shi et al.'s α for general context-grounded tasks (their summarisation and QA default); the paper uses
α = 1 on knowledge-conflict data (NQ-Swap, MemoTrap), which :data:`CAD_ALPHA_CONFLICT` records."""
CAD_ALPHA_CONFLICT = 1.0


def cad_logits(with_context: torch.Tensor, without_context: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(1 + α)·with_context − α·without_context`` (any shape, last axis the vocabulary)."""
    if not alpha >= 0:
        raise PearLensError(f"CAD's α must be ≥ 0, got {alpha}")
    dtype = torch.promote_types(with_context.dtype, torch.float32)
    return (1.0 + alpha) * with_context.to(dtype) - alpha * without_context.to(dtype)


def left_pad(sequences: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids, their attention mask and position ids (counting real tokens only, from 0)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def cache_arg(model: Any, cache: Any) -> dict[str, Any]:
    """The keyword that passes a key-value cache to ``model``'s forward: ``cache`` (Transformers ≥ 5.2x) or
    ``past_key_values`` (earlier, and models that keep the old name)."""
    params = inspect.signature(model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


def cache_of(output: Any) -> Any:
    """The key-value cache a forward pass returned, under either name."""
    cache = output.get("cache") if hasattr(output, "get") else None
    return cache if cache is not None else output.past_key_values


def fork_cache(cache: Any) -> Any:
    """A copy of a key-value cache that a further forward pass may extend without touching the original."""
    return copy.deepcopy(cache)


@dataclass(frozen=True)
class ContextFree:
    """The context-free prompts of one batch, in the batch's row order, and CAD's α."""

    prompts: Sequence[Sequence[int]]
    alpha: float = CAD_ALPHA


class ContextAwareLogits:
    """A ``generate`` logits processor: the scores of the prompt with context, contrasted with the model's
    logits on the context-free prompt extended by the same generated tokens.

    The context-free side keeps its own key-value cache and feeds only the tokens generated since the last
    step, so each step costs one extra single-token pass.
    """

    def __init__(self, model: Any, context_free: ContextFree, prompt_width: int, pad_token_id: int):
        self.model, self.alpha, self.prompt_width = model, float(context_free.alpha), prompt_width
        self.device = input_device(model)
        ids, mask, pos = left_pad(context_free.prompts, pad_token_id)
        self._ids, self._mask, self._pos = ids.to(self.device), mask.to(self.device), pos.to(self.device)
        self._cache: Any = None
        self._fed = 0  # generated tokens already fed to the context-free side
        self._logits: torch.Tensor | None = None

    @torch.no_grad()
    def _advance(self, generated: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            out = self.model(input_ids=self._ids, attention_mask=self._mask, position_ids=self._pos, use_cache=True,
                             logits_to_keep=1)
            self._cache, self._logits = cache_of(out), out.logits[:, -1]
        new = generated[:, self._fed:]
        if new.shape[1]:
            self._mask = torch.cat([self._mask, torch.ones_like(new)], dim=1)
            start = self._pos[:, -1:] + 1
            pos = start + torch.arange(new.shape[1], device=self.device)
            self._pos = torch.cat([self._pos, pos], dim=1)
            out = self.model(input_ids=new, attention_mask=self._mask, position_ids=pos, use_cache=True,
                             logits_to_keep=1, **cache_arg(self.model, self._cache))
            self._cache, self._logits = cache_of(out), out.logits[:, -1]
            self._fed = generated.shape[1]
        assert self._logits is not None
        return self._logits

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != self._ids.shape[0]:
            raise PearLensError("context-aware decoding needs one context-free prompt per row (no beams, no sampling "
                                "of several sequences)")
        plain = self._advance(input_ids[:, self.prompt_width:])
        return cad_logits(scores, plain, self.alpha).to(scores.dtype)


class NoEmptyAnswer:
    """A ``generate`` logits processor forbidding the end of sequence until the answer holds some text."""

    def __init__(self, prompt_width: int, eos_ids: Sequence[int], has_text: torch.Tensor):
        self.prompt_width, self.eos_ids, self.has_text = prompt_width, list(eos_ids), has_text

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        new = input_ids[:, self.prompt_width:].cpu().clamp(max=self.has_text.numel() - 1)
        empty = ~self.has_text[new].any(dim=1) if new.shape[1] else torch.ones(len(new), dtype=torch.bool)
        if empty.any() and self.eos_ids:
            scores = scores.clone()
            rows = empty.nonzero().flatten().to(scores.device)
            scores[rows[:, None], torch.as_tensor(self.eos_ids, device=scores.device)[None, :]] = float("-inf")
        return scores
