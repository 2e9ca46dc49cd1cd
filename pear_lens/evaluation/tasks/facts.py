"""Counterfactual-context QA and closed-book retention over well-known facts.

The fact list (``data/facts.json``) holds a few hundred facts a small model may
know (capitals, currencies, languages, authors, ...), each with same-type
counterfactual alternatives. *Closed-book* items ask the fact with no context
(correct = the real answer). *Counterfactual* items state a contradicting fact
in the context ("The capital of France is Lyon.") and ask the same question
(correct = the context's answer); they are only asked about facts the baseline
model answers correctly closed-book, so following the context is a choice
against its own knowledge.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.items import (PromptText, check_answers, check_gold_position, gold_positions, integer,
                                              read_jsonl, text)
from pear_lens.evaluation.tasks.scoring import normalize_answer

FACTS_FILE = "facts.json"
CONTEXT_INSTRUCTION = "Answer the question using only the provided context."
CLOSED_BOOK_INSTRUCTION = "Answer the question."


@dataclass(frozen=True)
class Fact:
    category: str
    subject: str
    answers: tuple[str, ...]
    """The true answer first, then accepted aliases."""
    alternatives: tuple[str, ...]
    """Counterfactual answers of the same type (may be empty: then drawn from the category)."""
    question: str
    statement: str
    """Template ``... {answer} ...`` stating the fact."""

    @property
    def fact_id(self) -> str:
        return f"{self.category}:{self.subject}"

    def state(self, answer: str) -> str:
        text = self.statement.format(subject=self.subject, answer=answer)
        return text[0].upper() + text[1:]


def load_facts(path: str | Path | None = None) -> list[Fact]:
    """Read a fact list (default: the one shipped in ``pear_lens/evaluation/tasks/data``)."""
    if path is None:
        text = resources.files("pear_lens.evaluation.tasks").joinpath("data").joinpath(FACTS_FILE).read_text(encoding="utf-8")
        where = f"pear_lens/evaluation/tasks/data/{FACTS_FILE}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise PearLensError(f"cannot read fact list {path}: {e}") from None
    facts = []
    try:
        for c in json.loads(text)["categories"]:
            for j, f in enumerate(c["facts"]):
                facts.append(Fact(category=c["category"], subject=f["subject"],
                                  answers=check_answers(f["answers"]),
                                  alternatives=tuple(f.get("alternatives", ())),
                                  question=c["question"].format(subject=f["subject"]), statement=c["statement"]))
    except (KeyError, TypeError, ValueError) as e:
        raise PearLensError(f"{where}: malformed fact list ({e!r})") from None
    return facts


def _overlaps(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether any normalised answer of ``a`` contains, or is contained in, one of ``b``."""
    na, nb = [normalize_answer(x) for x in a], [normalize_answer(x) for x in b]
    return any(x in y or y in x for x in na for y in nb)


# ----------------------------------------------------------------------- items


@dataclass(frozen=True)
class ClosedBookItem:
    """A question with no context; correct = the model's own (true) answer."""

    item_id: str
    question: str
    answers: tuple[str, ...]
    category: str = ""
    gold_position: None = None
    n_context: int = 0

    def prompt(self) -> PromptText:
        return PromptText(body=f"{CLOSED_BOOK_INSTRUCTION}\n\nQuestion: {self.question}\nAnswer:")

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "question": self.question, "answers": list(self.answers),
                "category": self.category}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> "ClosedBookItem":
        if not text(record["question"], "question").strip():
            raise ValueError("question is empty")
        return cls(item_id=str(record.get("item_id", where)), question=record["question"],
                   answers=check_answers(record["answers"]), category=str(record.get("category", "")))


@dataclass(frozen=True)
class CounterfactualItem:
    """Context sentences, one stating a counterfactual answer (at ``gold_position``); correct = that answer."""

    item_id: str
    question: str
    answers: tuple[str, ...]
    """The counterfactual answer stated in the context."""
    parametric_answers: tuple[str, ...]
    """The real answer (what the model knows closed-book)."""
    context: tuple[str, ...]
    gold_position: int
    category: str = ""

    @property
    def n_context(self) -> int:
        return len(self.context)

    def prompt(self) -> PromptText:
        return PromptText(body=f"{CONTEXT_INSTRUCTION}\n\nContext: {' '.join(self.context)}\n\n"
                               f"Question: {self.question}\nAnswer:")

    def closed_book(self) -> ClosedBookItem:
        """The same question without context, to check that the model knows the real answer."""
        return ClosedBookItem(item_id=self.item_id, question=self.question, answers=self.parametric_answers,
                              category=self.category)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "question": self.question, "answers": list(self.answers),
                "parametric_answers": list(self.parametric_answers), "context": list(self.context),
                "gold_position": self.gold_position, "category": self.category}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> "CounterfactualItem":
        context = record["context"]
        if not isinstance(context, list) or not context or not all(isinstance(s, str) for s in context):
            raise ValueError("context must be a non-empty list of sentences")
        pos = integer(record["gold_position"], "gold_position")
        check_gold_position(pos, len(context), where)
        answers = check_answers(record["answers"])
        parametric = check_answers(record["parametric_answers"], "parametric_answers")
        if _overlaps(answers, parametric):
            raise ValueError("the counterfactual answers overlap the parametric (true) answers")
        return cls(item_id=str(record.get("item_id", where)), question=text(record["question"], "question"),
                   answers=answers,
                   parametric_answers=parametric, context=tuple(context), gold_position=pos,
                   category=str(record.get("category", "")))


def fact_clusters(items: Sequence["CounterfactualItem | ClosedBookItem"]) -> list[str]:
    """The fact each item asks about (category and question), one label per item, for a cluster bootstrap.

    :func:`generate_counterfactual` asks each fact up to ``alternatives_per_fact`` times, and a model that
    clings to one fact fails all of them together: those items are one draw, not several.
    """
    return [f"{it.category}:{it.question}" for it in items]


def closed_book_items(facts: Sequence[Fact]) -> list[ClosedBookItem]:
    """One closed-book question per fact."""
    return [ClosedBookItem(item_id=f.fact_id, question=f.question, answers=f.answers, category=f.category)
            for f in facts]


def generate_counterfactual(facts: Sequence[Fact], n: int, *, n_context: int = 1, alternatives_per_fact: int = 2,
                            positions: Sequence[int] | None = None, seed: int = 0) -> list[CounterfactualItem]:
    """Up to ``n`` counterfactual items from ``facts`` (pass only facts the model knows).

    Each fact yields up to ``alternatives_per_fact`` items with different
    counterfactual answers; ``n_context - 1`` true statements about other facts
    surround the counterfactual one, which cycles through ``positions``.
    """
    gold_positions(n, n_context, positions, "generate_counterfactual")  # validate before drawing anything
    rng = random.Random(seed)
    pool: dict[str, list[tuple[str, ...]]] = {}
    for f in facts:
        pool.setdefault(f.category, [])
        if f.answers not in pool[f.category]:
            pool[f.category].append(f.answers)
    pairs = []
    for f in facts:
        # explicit same-type alternatives first (e.g. another city of the same country), then the category's other answers
        options = [(a,) for a in f.alternatives] + rng.sample(pool[f.category], len(pool[f.category]))
        chosen: list[tuple[str, ...]] = []
        for alt in options:
            if len(chosen) == alternatives_per_fact:
                break
            if not _overlaps(alt, f.answers) and all(not _overlaps(alt, c) for c in chosen):
                chosen.append(alt)
        pairs += [(f, alt) for alt in chosen]
    rng.shuffle(pairs)
    pairs = pairs[:n]
    items = []
    for i, ((f, alt), pos) in enumerate(zip(pairs, gold_positions(len(pairs), n_context, positions, "generate_counterfactual"))):
        others = [g for g in facts if g.subject != f.subject and not _overlaps(g.answers, alt + f.answers)]
        fillers = [g.state(g.answers[0]) for g in rng.sample(others, n_context - 1)]
        context = tuple(fillers[:pos] + [f.state(alt[0])] + fillers[pos:])
        items.append(CounterfactualItem(item_id=f"cf-{seed}-{i}", question=f.question, answers=alt,
                                        parametric_answers=f.answers, context=context, gold_position=pos,
                                        category=f.category))
    return items


def load_counterfactual_jsonl(path: str | Path) -> list[CounterfactualItem]:
    return read_jsonl(path, CounterfactualItem.from_dict)


def load_closed_book_jsonl(path: str | Path) -> list[ClosedBookItem]:
    return read_jsonl(path, ClosedBookItem.from_dict)
