"""Teacher-forced log-probabilities of candidate answers, with each item's context encoded once.

For every item the prompt (context and question) is run once, left-padded in a batch, and its key-value
cache is kept; each candidate answer then costs one short pass over its own tokens on a copy of that cache
(not a second pass over the context). The score of a candidate is the sum of its tokens' log-probabilities,
the probability of the whole answer string. Position ids count real tokens only, so padding and batching
leave every score unchanged (tested against a plain per-item forward pass).

With context-aware decoding (``context_free=``) the context-free prompts are run the same way and every
step's logits are :func:`pear_lens.evaluation.decoding.cad_logits` before the log-softmax.

Item-level endpoints (:func:`item_endpoints`):

- ``logp_gold``: log p(gold answer | prompt);
- ``contrast``: log p(gold) − log Σ p(alternatives): the log-odds of the gold answer against what it competes
  with (one alternative: log p(gold) − log p(alternative)); undefined (NaN) for items without alternatives.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from pear_lens.errors import PearLensError
from pear_lens.evaluation.decoding import cache_arg, cache_of, cad_logits, fork_cache, left_pad
from pear_lens.evaluation.tasks.candidates import Candidates, answer_candidates, continuation, without_context
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.prompts import PromptStyle, encode
from pear_lens.models.loaded import input_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ENDPOINT_COLUMNS = ["logp_gold", "contrast", "n_alternatives", "gold_tokens"]


def _prompt_pass(model, ids, mask, pos):
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    return cache_of(out), out.logits[:, -1]


def _continuation_logits(model, cache, last, prompt_mask, prompt_pos, cont, cont_mask):
    """Logits predicting every continuation token: the prompt's last position, then each continuation token's."""
    if cont.shape[1] == 1:
        return last[:, None]
    feed = cont[:, :-1]
    mask = torch.cat([prompt_mask, cont_mask[:, :-1]], dim=1)
    pos = prompt_pos[:, -1:] + 1 + torch.arange(feed.shape[1], device=feed.device)
    out = model(input_ids=feed, attention_mask=mask, position_ids=pos, use_cache=True,
                **cache_arg(model, fork_cache(cache)))
    return torch.cat([last[:, None], out.logits], dim=1)


@torch.no_grad()
def continuation_logprobs(model: "PreTrainedModel", prompts: Sequence[Sequence[int]],
                          continuations: Sequence[Sequence[Sequence[int]]], *, batch_size: int = 16,
                          context_free: Sequence[Sequence[int]] | None = None, alpha: float = 0.0,
                          pad_token_id: int = 0, progress: bool = True, desc: str = "score") -> list[list[float]]:
    """Summed log-probability of each continuation (token ids) after its prompt, per item and candidate.

    ``continuations[i]`` lists item ``i``'s candidates (any number, each at least one token). With
    ``context_free`` (one prompt per item) and ``alpha``, scores are context-aware decoding's.
    """
    if len(prompts) != len(continuations):
        raise PearLensError(f"{len(prompts)} prompts but {len(continuations)} candidate lists")
    if context_free is not None and len(context_free) != len(prompts):
        raise PearLensError(f"{len(prompts)} prompts but {len(context_free)} context-free prompts")
    for i, (p, cands) in enumerate(zip(prompts, continuations)):
        if not len(p) or not cands or any(len(c) == 0 for c in cands):
            raise PearLensError(f"item {i}: a prompt and every candidate need at least one token")
    if batch_size < 1:
        raise PearLensError(f"batch_size must be ≥ 1, got {batch_size}")
    device = input_device(model)
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    scores: list[list[float]] = [[] for _ in prompts]
    model.eval()
    with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="item") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            sides = [[prompts[i] for i in idx]] + ([[context_free[i] for i in idx]] if context_free is not None else [])
            states = []
            for side in sides:
                ids, mask, pos = (t.to(device) for t in left_pad(side, pad_token_id))
                cache, last = _prompt_pass(model, ids, mask, pos)
                states.append((cache, last, mask, pos))
            for j in range(max(len(continuations[i]) for i in idx)):
                rows = [continuations[i][j] if j < len(continuations[i]) else [pad_token_id] for i in idx]
                width = max(len(r) for r in rows)
                cont = torch.full((len(idx), width), pad_token_id, dtype=torch.long)
                cont_mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, seq in enumerate(rows):
                    cont[row, :len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
                    cont_mask[row, :len(seq)] = 1
                cont, cont_mask = cont.to(device), cont_mask.to(device)
                logits = [_continuation_logits(model, cache, last, mask, pos, cont, cont_mask)
                          for cache, last, mask, pos in states]
                combined = (cad_logits(logits[0], logits[1], alpha) if len(logits) == 2
                            else logits[0].to(torch.promote_types(logits[0].dtype, torch.float32)))
                # under a device map the logits come off the last device
                at = combined.device
                token_lp = combined.log_softmax(-1).gather(-1, cont.to(at)[..., None])[..., 0] * cont_mask.to(at)
                for row, i in enumerate(idx):
                    if j < len(continuations[i]):
                        scores[i].append(float(token_lp[row].sum()))
            bar.update(len(idx))
    return scores


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def item_endpoints(candidates: Candidates, logprobs: Sequence[float], gold_tokens: int) -> dict[str, Any]:
    """``logp_gold`` and ``contrast`` (see the module) from one item's candidate scores (gold first)."""
    gold, alts = logprobs[0], list(logprobs[1:])
    contrast = gold - _logsumexp(alts) if alts else float("nan")
    return {"logp_gold": float(gold), "contrast": float(contrast), "n_alternatives": len(alts),
            "gold_tokens": int(gold_tokens)}


def encode_candidates(items: Sequence[Item], style: PromptStyle, tokenizer: "PreTrainedTokenizerBase"
                      ) -> tuple[list[Candidates], list[list[list[int]]]]:
    """Each item's candidates and their token ids as continuations of the item's prompt in ``style``."""
    cands = [answer_candidates(it) for it in items]
    ids = []
    for it, c in zip(items, cands):
        prompt = it.prompt()
        ids.append([list(tokenizer(continuation(a, prompt, style), add_special_tokens=False)["input_ids"])
                    for a in c.all])
    return cands, ids


def score_candidates(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", items: Sequence[Item],
                prompts: Sequence[Sequence[int]], style: PromptStyle, *, batch_size: int = 16,
                cad_alpha: float | None = None, progress: bool = True, desc: str = "score") -> list[dict[str, Any]]:
    """The likelihood endpoints of every item (in order), from prompts already encoded in ``style``."""
    cands, ids = encode_candidates(items, style, tokenizer)
    free = [encode(without_context(it), style, tokenizer) for it in items] if cad_alpha is not None else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    logprobs = continuation_logprobs(model, prompts, ids, batch_size=batch_size, context_free=free,
                                     alpha=cad_alpha or 0.0, pad_token_id=pad, progress=progress, desc=desc)
    return [item_endpoints(c, lp, len(i[0])) for c, lp, i in zip(cands, logprobs, ids)]


def endpoint_array(rows: Sequence[dict[str, Any]], name: str) -> np.ndarray:
    return np.asarray([r[name] for r in rows], dtype=np.float64)
