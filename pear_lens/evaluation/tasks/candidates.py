"""What a teacher-forced score compares per item: the gold answer, the answers it competes with, and the
item asked without its context.

Greedy accuracy says whether a decode produced the answer; a likelihood endpoint asks how much probability
the model puts on it, and on what it puts instead:

- KV: the gold value against the other values in the JSON object;
- MDQA: the gold document's answer against what each other document would answer;
- counterfactual: the context's answer against the memorised (real-world) one;
- closed-book: the gold answer alone (no competitor in the prompt).

An item of your own offers competitors through an ``alternatives`` attribute (a tuple of strings) and a
context-free prompt through ``without_context()`` (for context-aware decoding); without them it has a gold
log-probability only, and CAD refuses it with a message.
"""
from __future__ import annotations

from dataclasses import dataclass

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.facts import CLOSED_BOOK_INSTRUCTION, CONTEXT_INSTRUCTION, ClosedBookItem, \
    CounterfactualItem
from pear_lens.evaluation.tasks.items import Item, PromptText
from pear_lens.evaluation.tasks.kv import INSTRUCTION as KV_INSTRUCTION
from pear_lens.evaluation.tasks.kv import KVItem
from pear_lens.evaluation.tasks.mdqa import INSTRUCTION as MDQA_INSTRUCTION
from pear_lens.evaluation.tasks.mdqa import MDQAItem, distractor_answers
from pear_lens.evaluation.tasks.prompts import PromptStyle


class Competitor:
    """What an item's alternatives are, as recorded with each score."""

    DISTRACTORS = "in-context distractors"
    MEMORISED = "memorised answer"
    NONE = "none"
    CUSTOM = "custom"


@dataclass(frozen=True)
class Candidates:
    """The answers scored for one item: ``gold`` first, then the ``alternatives`` it is contrasted with."""

    gold: str
    alternatives: tuple[str, ...]
    competitor: str
    """One of :class:`Competitor`'s values: what the alternatives are."""

    @property
    def all(self) -> tuple[str, ...]:
        return (self.gold, *self.alternatives)


def in_context_alternatives(item: Item) -> tuple[str, ...]:
    """The answers other units of the context would give (other KV values, other MDQA documents' answers)."""
    if isinstance(item, KVItem):
        return item.distractor_values
    if isinstance(item, MDQAItem):
        return distractor_answers(item)
    return ()


def answer_candidates(item: Item) -> Candidates:
    """The gold answer (the item's first) and what it competes with; duplicates of gold are dropped."""
    gold = item.answers[0]
    if isinstance(item, CounterfactualItem):
        alts, kind = item.parametric_answers[:1], Competitor.MEMORISED
    elif isinstance(item, (KVItem, MDQAItem)):
        alts, kind = in_context_alternatives(item), Competitor.DISTRACTORS
    elif isinstance(item, ClosedBookItem):
        alts, kind = (), Competitor.NONE
    else:
        alts = tuple(str(a) for a in getattr(item, "alternatives", ()) or ())
        kind = Competitor.CUSTOM if alts else Competitor.NONE
    seen = {gold}
    unique = []
    for a in alts:
        if a not in seen:
            seen.add(a)
            unique.append(a)
    return Candidates(gold, tuple(unique), kind)


def without_context(item: Item) -> PromptText:
    """The item's prompt with its context removed and everything else (instruction, question) kept.

    Context-aware decoding (Shi et al. 2023) contrasts the model with and without the context; the two
    prompts must differ in the context only.
    """
    if isinstance(item, KVItem):
        prompt = item.prompt()
        key_line = prompt.body[prompt.body.rindex("\n\nKey: "):]
        return PromptText(body=f"{KV_INSTRUCTION}{key_line}", answer_prefix=prompt.answer_prefix)
    if isinstance(item, MDQAItem):
        return PromptText(body=f"{MDQA_INSTRUCTION}\n\nQuestion: {item.question}\nAnswer:")
    if isinstance(item, CounterfactualItem):
        return PromptText(body=f"{CONTEXT_INSTRUCTION}\n\nQuestion: {item.question}\nAnswer:")
    if isinstance(item, ClosedBookItem):
        return PromptText(body=f"{CLOSED_BOOK_INSTRUCTION}\n\nQuestion: {item.question}\nAnswer:")
    if hasattr(item, "without_context"):
        return item.without_context()
    raise PearLensError(f"item {item.item_id!r} ({type(item).__name__}) has no prompt without its context; give "
                        "it a without_context() method returning a PromptText to use context-aware decoding")


def continuation(answer: str, prompt: PromptText, style: PromptStyle) -> str:
    """The text that follows the rendered prompt when the model gives ``answer``.

    Plain prompts end on a colon ("Answer:"), so the answer follows after a space; a chat template ends the
    assistant header with a newline and an answer prefix (the KV value's quote) is followed directly.
    """
    if style.is_chat or (style.uses_prefix and prompt.answer_prefix):
        return answer
    return f" {answer}"
