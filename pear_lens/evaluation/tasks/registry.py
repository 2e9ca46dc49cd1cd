"""The four evaluation tasks behind one interface.

A task makes items with a seeded generator or reads them from a JSONL file,
and says how long its answers may be. Task size (``n_context``: KV pairs, MDQA
documents, counterfactual context sentences) and formats come from
:class:`TaskSettings`; calibrated defaults per model live in
``data/calibration.json`` (see :mod:`pear_lens.evaluation.tasks.calibration`).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import facts as facts_mod
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.kv import generate_kv, load_kv_jsonl
from pear_lens.evaluation.tasks.mdqa import generate_mdqa, load_mdqa_jsonl
from pear_lens.vocabulary import parse_member


class TaskName(str, Enum):
    KV = "kv"
    """Key-value retrieval: copy the queried key's value out of a JSON object."""
    MDQA = "mdqa"
    """Multi-document QA over documents about invented entities."""
    COUNTERFACTUAL = "counterfactual"
    """Follow a context that contradicts a fact the model knows."""
    CLOSED_BOOK = "closed-book"
    """Answer the same facts without context (knowledge retention)."""

    @classmethod
    def parse(cls, value: "str | TaskName") -> "TaskName":
        return parse_member(cls, value, "task", colon=False)


@dataclass(frozen=True)
class TaskSettings:
    """How one task's items are made and asked."""

    n_context: int
    """KV pairs, MDQA documents or counterfactual context sentences (unused by closed-book)."""
    prompt_style: str = "plain"
    max_new_tokens: int = 16
    key_format: str = "digits3"
    """KV only: format of keys (hexL, digitsD, alphaL, uuid)."""
    value_format: str = "digits3"
    """KV only: format of values."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskSpec:
    name: TaskName
    has_prefix: bool
    """Whether items carry an answer prefix (so ``+prefix`` prompt styles differ from plain ones)."""
    has_positions: bool
    default: TaskSettings
    load: Callable[[Path], list[Item]]


TASKS: dict[TaskName, TaskSpec] = {
    TaskName.KV: TaskSpec(TaskName.KV, True, True, TaskSettings(n_context=6, max_new_tokens=12), load_kv_jsonl),
    TaskName.MDQA: TaskSpec(TaskName.MDQA, False, True, TaskSettings(n_context=5, max_new_tokens=24), load_mdqa_jsonl),
    TaskName.COUNTERFACTUAL: TaskSpec(TaskName.COUNTERFACTUAL, False, True, TaskSettings(n_context=3, max_new_tokens=16),
                                      facts_mod.load_counterfactual_jsonl),
    TaskName.CLOSED_BOOK: TaskSpec(TaskName.CLOSED_BOOK, False, False, TaskSettings(n_context=0, max_new_tokens=16),
                                   facts_mod.load_closed_book_jsonl),
}


def generate_items(task: TaskName, settings: TaskSettings, n: int, *, positions: Sequence[int] | None = None,
                   seed: int = 0, known_facts: Sequence[facts_mod.Fact] | None = None) -> list[Item]:
    """Seeded items of ``task``; counterfactual items need ``known_facts`` (facts the baseline knows)."""
    if task is TaskName.KV:
        return generate_kv(n, settings.n_context, key_format=settings.key_format, value_format=settings.value_format,
                           positions=positions, seed=seed)
    if task is TaskName.MDQA:
        return generate_mdqa(n, settings.n_context, positions=positions, seed=seed)
    if task is TaskName.COUNTERFACTUAL:
        if known_facts is None:
            raise PearLensError("counterfactual items need the facts the baseline model knows (known_facts)")
        if not known_facts:
            raise PearLensError("the baseline model knows none of the facts closed-book; counterfactual QA is "
                                "meaningless for it")
        return facts_mod.generate_counterfactual(known_facts, n, n_context=settings.n_context, positions=positions,
                                                 seed=seed)
    if positions:
        raise PearLensError("closed-book items have no context, so --positions does not apply")
    items = facts_mod.closed_book_items(facts_mod.load_facts())
    random.Random(seed).shuffle(items)  # a sample of n mixes the categories
    return items[:n]
