"""Which heads matter on a real task: a RAG task's items as a task of your own for the fast head scan.

PEAR picks heads on a copy proxy task; the question a reader asks is whether those heads matter on the tasks
that need the context. :func:`rag_scan_task` turns evaluation items into a :class:`pear_lens.prompt_task.PromptTask`
scored where the answer starts: the answer token is the first token of the gold answer (as it follows the
prompt in the item's prompt style), the foil the first token of the first competitor (another KV value,
another document's answer, the memorised answer) whose first token differs. With the ``logit_diff`` metric
every head's effect is its effect on the gold-versus-competitor contrast of the answer's first token; with
``logprob`` on the gold answer's first-token log-probability.

A head's effect is its **total effect when removed** (:data:`SCAN_OPTIONS`: activation patching with zero
ablation at every position): RAG prompts differ in length, and mean ablation replaces a head's output by its
mean over prompts *of one length*, which for a prompt alone of its length is the prompt's own output (no
effect). Zeroing a head everywhere is exactly pruning it, so a head's scan effect is what pruning that head
alone does to the first answer token (tested against :func:`pear_lens.evaluation.conditions.pruned`).

The exact scan reruns, per head, every later layer at every position: about ``n_heads · (n_layers + 1) / 2``
forward passes per item, hours per hundred long prompts on a CPU for a 0.5B model. ``method="attribution"``
estimates the same zero ablation at every position from one forward and one backward pass per batch
(:mod:`pear_lens.mediation.attribution`, a linear approximation): check it against the exact scan on items of
your own (:func:`pear_lens.atlas.correlation.head_score_correlation`) before reading it alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.candidates import answer_candidates, continuation
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.prompts import PromptStyle, encode
from pear_lens.mediation.base import Ablation, Positions
from pear_lens.prompt_task import PromptTask

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pear_lens.results import HeadScores

SCAN_METHOD = "activation"
SCAN_METHODS = ("activation", "attribution")
"""The exact scan and its one-pass linear estimate, both with :data:`SCAN_OPTIONS`."""
SCAN_OPTIONS = {"ablation": Ablation.ZERO, "positions": Positions.ALL}
SCAN_MAX_BATCH = 8
"""Prompts per batch of a RAG scan: items of one length (all of a KV task's) are split, so a checkpointed scan
saves its work every few items rather than once per length (zero ablation makes the scores the same)."""


@dataclass(frozen=True)
class RagScanTask:
    """A RAG task ready for :func:`pear_lens.mediation.score_heads`, and which items it kept."""

    task: PromptTask
    item_ids: tuple[str, ...]
    """The items in the task, in its prompt order."""
    dropped: tuple[str, ...]
    """Items left out: with foils, those whose every competitor starts with the gold answer's first token."""


def _first_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise PearLensError(f"the answer {text!r} is no token at all for this tokenizer")
    return int(ids[0])


def rag_scan_task(items: Sequence[Item], style: PromptStyle | str, tokenizer: "PreTrainedTokenizerBase", *,
                  name: str, foils: bool = True, max_batch: int = SCAN_MAX_BATCH) -> RagScanTask:
    """``items`` as prompts scored at their last token (see the module); ``foils=False`` keeps every item and
    scores the gold answer alone (for ``logprob``); ``max_batch`` prompts at most per batch."""
    style = PromptStyle.parse(style)
    prompts, answers, foil_ids, kept, dropped = [], [], [], [], []
    for it in items:
        prompt = it.prompt()
        cands = answer_candidates(it)
        gold = _first_token(tokenizer, continuation(cands.gold, prompt, style))
        foil = None
        if foils:
            for alt in cands.alternatives:
                tok = _first_token(tokenizer, continuation(alt, prompt, style))
                if tok != gold:
                    foil = tok
                    break
            if foil is None:
                dropped.append(it.item_id)
                continue
            foil_ids.append(foil)
        prompts.append(encode(prompt, style, tokenizer))
        answers.append(gold)
        kept.append(it.item_id)
    if not prompts:
        raise PearLensError(f"{name}: no item has a competitor whose first token differs from the gold answer's; "
                            "scan it with foils=False and the logprob metric")
    task = PromptTask(prompts, answers, foils=foil_ids if foils else None, name=name, max_batch=max_batch)
    return RagScanTask(task, tuple(kept), tuple(dropped))


def scan_items(model, items: Sequence[Item], style: PromptStyle | str, *, name: str, metric: str = "logit_diff",
               method: str = SCAN_METHOD, max_batch: int = SCAN_MAX_BATCH, progress: bool = True, seed: int = 0,
               checkpoint=None) -> tuple["HeadScores", RagScanTask]:
    """Every head's effect (:data:`SCAN_OPTIONS`) on ``metric`` over ``items``: ``logit_diff`` (gold against
    its competitor, items without a distinct competitor left out) or ``logprob`` (gold alone, every item).
    ``method``: ``activation`` (exact) or ``attribution`` (its one-pass estimate, see the module); ``max_batch``:
    prompts per batch (a backward pass over long prompts needs a smaller one). ``checkpoint``: a folder that keeps
    each batch's result, so a stopped scan resumes (see :func:`pear_lens.mediation.score_heads`). The scores'
    ``extra["items"]`` names the items kept and dropped, so a saved scan says what it was computed on."""
    import dataclasses

    from pear_lens.mediation import score_heads

    if method not in SCAN_METHODS:
        raise PearLensError(f"a RAG scan's method is one of {', '.join(SCAN_METHODS)}, got {method!r}")
    scan = rag_scan_task(items, style, model.tokenizer, name=name, foils=metric == "logit_diff", max_batch=max_batch)
    scores = score_heads(model, scan.task, metric, method, progress=progress, seed=seed, checkpoint=checkpoint,
                         **SCAN_OPTIONS)
    extra = {**scores.extra, "items": {"kept": list(scan.item_ids), "dropped": list(scan.dropped)}}
    return dataclasses.replace(scores, extra=extra), scan
