"""Which heads matter on a real task: a RAG task's items as a task of your own for the fast head scan.

PEAR picks heads on a copy proxy task; the question a reader asks is whether those heads matter on the tasks
that need the context. :func:`rag_scan_task` turns evaluation items into a :class:`pear_lens.prompt_task.PromptTask`
scored where the answer starts: the answer token is the first token of the gold answer (as it follows the
prompt in the item's prompt style), the foil the first token of the first competitor (another KV value,
another document's answer, the memorised answer) whose first token differs. With the ``logit_diff`` metric
every head's effect is its effect on the gold-versus-competitor contrast of the answer's first token; with
``logprob`` on the gold answer's first-token log-probability.

Where no competitor's first token differs (a tokenizer that gives a number's leading space a token of its own
starts every KV value alike), the item is scored where the gold answer and its first competitor part: the tokens
they share are appended to the prompt (teacher-forced) and the next token of each is the answer and the foil.
The scan names those items (``extra["items"]["after_shared_prefix"]``); an item is dropped only when no
competitor parts from the gold answer at a token both have.

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
    """Items left out: with foils, those where no competitor parts from the gold answer at a token both have."""
    after_shared_prefix: tuple[str, ...] = ()
    """Items scored after the tokens the gold answer shares with its first competitor (no competitor's first
    token differed)."""


def _answer_tokens(tokenizer, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise PearLensError(f"the answer {text!r} is no token at all for this tokenizer")
    return [int(i) for i in ids]


def _parting(gold: list[int], alternatives: list[list[int]]) -> tuple[list[int], int, int] | None:
    """``(shared, gold_token, foil_token)``: the first competitor whose first token differs, scored at the first
    token (nothing shared); else the first that parts from the gold answer at a token both have, scored there;
    ``None`` when none does."""
    for alt in alternatives:
        if alt[0] != gold[0]:
            return [], gold[0], alt[0]
    for alt in alternatives:
        c = 0
        while c < min(len(gold), len(alt)) and gold[c] == alt[c]:
            c += 1
        if c < len(gold) and c < len(alt):
            return gold[:c], gold[c], alt[c]
    return None


def rag_scan_task(items: Sequence[Item], style: PromptStyle | str, tokenizer: "PreTrainedTokenizerBase", *,
                  name: str, foils: bool = True, max_batch: int = SCAN_MAX_BATCH) -> RagScanTask:
    """``items`` as prompts scored at their last token (see the module); ``foils=False`` keeps every item and
    scores the gold answer alone (for ``logprob``); ``max_batch`` prompts at most per batch."""
    style = PromptStyle.parse(style)
    prompts, answers, foil_ids, kept, dropped, later = [], [], [], [], [], []
    for it in items:
        prompt = it.prompt()
        cands = answer_candidates(it)
        gold_ids = _answer_tokens(tokenizer, continuation(cands.gold, prompt, style))
        shared, gold = [], gold_ids[0]
        if foils:
            parted = _parting(gold_ids, [_answer_tokens(tokenizer, continuation(alt, prompt, style))
                                         for alt in cands.alternatives])
            if parted is None:
                dropped.append(it.item_id)
                continue
            shared, gold, foil = parted
            foil_ids.append(foil)
            if shared:
                later.append(it.item_id)
        prompts.append([*encode(prompt, style, tokenizer), *shared])
        answers.append(gold)
        kept.append(it.item_id)
    if not prompts:
        raise PearLensError(f"{name}: no item has a competitor that parts from the gold answer at a token both have; "
                            "scan it with foils=False and the logprob metric")
    task = PromptTask(prompts, answers, foils=foil_ids if foils else None, name=name, max_batch=max_batch)
    return RagScanTask(task, tuple(kept), tuple(dropped), tuple(later))


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
    extra = {**scores.extra, "items": {"kept": list(scan.item_ids), "dropped": list(scan.dropped),
                                       "after_shared_prefix": list(scan.after_shared_prefix)}}
    return dataclasses.replace(scores, extra=extra), scan
