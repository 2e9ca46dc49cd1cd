"""What each answer was, beyond right or wrong: the error breakdown of a condition.

Accuracy alone cannot say *how* a re-weighted model fails. Every output is
sorted into one kind: correct (exactly the accuracy's ``best_subspan_em``),
empty, another item's answer (the value of another KV key, the answer of
another MDQA document: a retrieval error), the memorised real-world fact
instead of the context's counterfactual one, or something else. The first kind
that applies wins, in that order, so the kinds partition the items.
"""
from __future__ import annotations

import os
from enum import Enum
from typing import Mapping, Sequence

import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.facts import ClosedBookItem, CounterfactualItem
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.candidates import in_context_alternatives
from pear_lens.evaluation.tasks.kv import KVItem
from pear_lens.evaluation.tasks.mdqa import MDQAItem
from pear_lens.evaluation.tasks.scoring import best_subspan_em, normalize_answer

BREAKDOWN_COLUMNS = ["condition", "kind", "count", "n", "share"]
LOOP_MAX_WORDS = 8
"""The longest phrase (in normalised words) whose back-to-back repeats can make an answer loop."""
LOOP_REPEATS = 3
"""Any phrase of up to :data:`LOOP_MAX_WORDS` words this many times in a row loops ("Nordic Nordic Nordic")."""
LOOP_TWICE_WORDS = 3
"""A phrase of at least this many words loops already when it comes twice in a row ("Mn is a metal element. Mn is a
metal element."); shorter ones twice are ordinary language ("very very") or an echoed two-word title."""
LOOP_RULE = (f"a phrase of up to {LOOP_MAX_WORDS} words {LOOP_REPEATS} or more times in a row, or one of "
             f"{LOOP_TWICE_WORDS} or more words twice")
"""The rule of :func:`loops` in words, for reports."""


class AnswerKind(str, Enum):
    """One output's kind; the first that applies, in this order."""

    CORRECT = "correct"
    """A gold answer occurs in the output (the accuracy's own rule)."""
    EMPTY = "empty"
    """Nothing left after normalisation (no answer, only punctuation or articles)."""
    OTHER_ITEM = "other_item"
    """KV and MDQA: the answer of another pair or document in the prompt (a retrieval error)."""
    MEMORISED = "memorised"
    """Counterfactual: the real-world answer the model knows, not the context's."""
    LOOPING = "looping"
    """An output that :func:`loops` and no earlier kind claimed (degenerate generation: "Nordic Nordic Nordic")."""
    OTHER = "other"
    """Anything else (a made-up or garbled answer)."""


def possible_kinds(item: Item) -> tuple[AnswerKind, ...]:
    """The kinds an item of this type can get (a table lists these, zeros included, and no others)."""
    extra = {KVItem: (AnswerKind.OTHER_ITEM,), MDQAItem: (AnswerKind.OTHER_ITEM,),
             CounterfactualItem: (AnswerKind.MEMORISED,)}.get(type(item), ())
    return (AnswerKind.CORRECT, AnswerKind.EMPTY, *extra, AnswerKind.LOOPING, AnswerKind.OTHER)


def loops(output: str) -> bool:
    """True when a phrase of 1 to :data:`LOOP_MAX_WORDS` normalised words comes :data:`LOOP_REPEATS` or more times
    back to back, or one of :data:`LOOP_TWICE_WORDS` or more words twice ("x y x y x y" and "p q r p q r" loop;
    "p q r s p q" and "very very good" do not)."""
    words = normalize_answer(output).split()

    def repeated(size: int, times: int) -> bool:
        for start in range(len(words) - size * times + 1):
            phrase = words[start:start + size]
            if all(words[start + r * size:start + (r + 1) * size] == phrase for r in range(1, times)):
                return True
        return False

    return any(repeated(size, LOOP_REPEATS if size < LOOP_TWICE_WORDS else 2)
               for size in range(1, LOOP_MAX_WORDS + 1))


def looping_rate(outputs: Sequence[str]) -> float:
    """Share of ``outputs`` that :func:`loops`, whatever their kind (a loop holding the gold answer included)."""
    if not outputs:
        raise PearLensError("no outputs")
    return sum(loops(o) for o in outputs) / len(outputs)


def classify_answer(item: Item, output: str) -> AnswerKind:
    """The kind of one output; ``CORRECT`` exactly when the accuracy counts it correct.

    Other answers are matched like gold ones (normalised substring), so an output holding both the gold
    answer and a distractor is correct, as the accuracy has it.
    """
    if best_subspan_em(output, item.answers):
        return AnswerKind.CORRECT
    if not normalize_answer(output):
        return AnswerKind.EMPTY
    if any(best_subspan_em(output, [other]) for other in in_context_alternatives(item)):
        return AnswerKind.OTHER_ITEM
    if isinstance(item, CounterfactualItem) and best_subspan_em(output, item.parametric_answers):
        return AnswerKind.MEMORISED
    if loops(output):
        return AnswerKind.LOOPING
    return AnswerKind.OTHER


def _kinds(items: Sequence[Item], outputs: Sequence[str], condition: str) -> list[AnswerKind]:
    if len(outputs) != len(items):
        raise PearLensError(f"condition {condition!r} has {len(outputs)} outputs for {len(items)} items; "
                            "pass one output per item, in the items' order")
    return [classify_answer(it, out) for it, out in zip(items, outputs)]


def error_breakdown(items: Sequence[Item], outputs: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Counts and shares of every answer kind per condition (``outputs``: condition → outputs in item order).

    Tidy, one row per (condition, kind) with columns :data:`BREAKDOWN_COLUMNS`; every kind the items can
    get is listed, zeros included, so two conditions' rows line up.
    """
    if not items:
        raise PearLensError("no items to break down")
    kinds_listed = list(dict.fromkeys(k for it in items for k in possible_kinds(it)))
    order = [k for k in AnswerKind if k in kinds_listed]
    rows = []
    for condition, outs in outputs.items():
        kinds = _kinds(items, outs, condition)
        for kind in order:
            count = sum(k is kind for k in kinds)
            rows.append({"condition": condition, "kind": kind.value, "count": count, "n": len(items),
                         "share": count / len(items)})
    return pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)


def memorised_answer_rate(items: Sequence[Item], outputs: Sequence[str]) -> float:
    """Share of counterfactual items answered with the memorised real-world fact instead of the context's.

    This is the failure PEAR is meant to reduce: the model overriding its context with what it knows. An
    output naming both answers counts as correct (following the context), not as memorised.
    """
    if not items:
        raise PearLensError("no counterfactual items")
    wrong = [type(it).__name__ for it in items if not isinstance(it, CounterfactualItem)]
    if wrong:
        raise PearLensError(f"the memorised-answer rate needs counterfactual items, got {wrong[0]}; pass the "
                            "counterfactual task's items")
    kinds = _kinds(items, outputs, "outputs")
    return sum(k is AnswerKind.MEMORISED for k in kinds) / len(items)


def outputs_by_condition(frame: pd.DataFrame, items: Sequence[Item]) -> dict[str, list[str]]:
    """Each condition's outputs in ``items``' order, from an items table (``items.csv`` or ``EvalResult.items``).

    Rows are matched by ``item_id``, so a table in any row order works; a condition missing an item is an
    error, since a breakdown over other items than the accuracy's would not add up.
    """
    missing = {"condition", "item_id", "output"} - set(frame.columns)
    if missing:
        raise PearLensError(f"the items table lacks column(s) {sorted(missing)}; pass items.csv of an eval folder")
    ids = [it.item_id for it in items]
    out = {}
    for condition, sub in frame.groupby("condition", sort=False):
        by_id = dict(zip(sub["item_id"].astype(str), sub["output"]))
        absent = [i for i in ids if i not in by_id]
        if absent:
            raise PearLensError(f"condition {condition!r} has no output for item {absent[0]!r} "
                                f"({len(absent)} missing); the table and the items must come from one evaluation")
        out[str(condition)] = ["" if pd.isna(by_id[i]) else str(by_id[i]) for i in ids]
    return out


def read_items_table(path: str | os.PathLike) -> pd.DataFrame:
    """An eval folder's ``items.csv`` with outputs kept as written (pandas would read "", "NA" or "null" as NaN)."""
    return pd.read_csv(path, dtype={"item_id": str, "output": str, "condition": str}, keep_default_na=False)
