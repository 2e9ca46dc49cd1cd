"""Batched greedy decoding with a plain Hugging Face model.

Prompts are left-padded into batches (longest first, so a batch that does not
fit in memory fails at once and padding stays small) and decoded greedily.
Answers are short: decoding stops at ``max_new_tokens``, at EOS, or at the
first line break that follows some text, and the answer is that first line.
The order of prompts and the batches are fixed, so every condition sees the
same batches and results are deterministic.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
from tqdm.auto import tqdm

from pear_lens.errors import PearLensError
from pear_lens.evaluation.decoding import CAD_ALPHA, ContextAwareLogits, ContextFree, NoEmptyAnswer, left_pad
from pear_lens.models.loaded import input_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_TABLES: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _token_tables(tokenizer: "PreTrainedTokenizerBase") -> tuple[torch.Tensor, torch.Tensor]:
    """Per token id: does its text hold a line break; does it hold any non-space character."""
    key = (str(getattr(tokenizer, "name_or_path", "")), len(tokenizer))
    if key not in _TABLES:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
        _TABLES[key] = (torch.tensor(["\n" in t for t in texts]), torch.tensor([bool(t.strip()) for t in texts]))
    return _TABLES[key]


class _FirstLineStop:
    """Stop a sequence once it has produced a line break after some text (stateless: recomputed from the ids)."""

    def __init__(self, prompt_len: int, newline: torch.Tensor, content: torch.Tensor):
        self.prompt_len, self.newline, self.content = prompt_len, newline, content

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None, **kwargs) -> torch.Tensor:
        new = input_ids[:, self.prompt_len:].cpu()
        new = new.clamp(max=self.newline.numel() - 1)  # ids past the tokenizer (padded embeddings) count as plain text
        last = new[:, -1]
        before = self.content[new[:, :-1]].any(dim=1) if new.shape[1] > 1 else torch.zeros(len(new), dtype=torch.bool)
        # a token like "Paris\n" both answers and ends the line; a bare "\n" before any text does not stop
        done = self.newline[last] & (before | self.content[last])
        return done.to(input_ids.device)


def first_line(text: str) -> str:
    """The answer part of a generation: its first non-empty line, stripped."""
    for line in text.strip().split("\n"):
        if line.strip():
            return line.strip()
    return ""


def _eos_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def greedy_generate(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", prompts: Sequence[Sequence[int]],
                    *, max_new_tokens: int, batch_size: int = 16, stop_at_newline: bool = True,
                    progress: bool = True, desc: str = "generate", context_free: Sequence[Sequence[int]] | None = None,
                    cad_alpha: float = CAD_ALPHA, no_empty: bool = False) -> list[str]:
    """Greedy continuations of tokenised ``prompts`` (in input order); the first line of each when ``stop_at_newline``.

    With ``context_free`` (one context-free prompt per prompt) decoding is context-aware (CAD, ``cad_alpha``);
    with ``no_empty`` the end of sequence is forbidden until the answer holds some text.
    """
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

    if context_free is not None and len(context_free) != len(prompts):
        raise PearLensError(f"{len(prompts)} prompts but {len(context_free)} context-free prompts")
    if max_new_tokens < 1 or batch_size < 1:
        raise PearLensError(f"max_new_tokens and batch_size must be ≥ 1, got {max_new_tokens}, {batch_size}")
    eos = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else 0)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                              eos_token_id=eos or None)
    newline, content = _token_tables(tokenizer) if stop_at_newline else (None, None)
    device = input_device(model)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    outputs: list[str] = [""] * len(prompts)
    model.eval()
    with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="item") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask, _ = left_pad([prompts[i] for i in idx], pad)  # every prompt ends where generation starts
            width = ids.shape[1]
            stops = StoppingCriteriaList([_FirstLineStop(width, newline, content)]) if stop_at_newline else None
            processors = LogitsProcessorList()
            if context_free is not None:
                processors.append(ContextAwareLogits(model, ContextFree([context_free[i] for i in idx], cad_alpha),
                                                     width, pad))
            if no_empty:
                processors.append(NoEmptyAnswer(width, eos, _token_tables(tokenizer)[1]))
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config,
                                 stopping_criteria=stops, logits_processor=processors or None)
            for row, i in enumerate(idx):
                text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
                outputs[i] = first_line(text) if stop_at_newline else text.strip()
            bar.update(len(idx))
    return outputs
