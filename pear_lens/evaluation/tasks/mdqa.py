"""Multi-document QA in the "Lost in the Middle" format.

An item is a question, its gold answers and a list of documents (``ctxs``), one
of which (the gold document) holds the answer. The offline generator writes
short encyclopaedia-style documents about *invented* towns, chemists,
companies and bands, so the model's own knowledge cannot answer; the other
documents describe similar invented entities of the same kind (hard
distractors). The gold document is moved through every position.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.items import (PromptText, check_answers, check_gold_position, flag, gold_positions,
                                              integer, read_jsonl, text)

INSTRUCTION = ("Write a high-quality answer for the given question using only the provided search results "
               "(some of which might be irrelevant).")


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    isgold: bool = False
    hasanswer: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "text": self.text, "isgold": self.isgold, "hasanswer": self.hasanswer}


@dataclass(frozen=True)
class MDQAItem:
    """One question over ``ctxs``; the gold document is the one marked ``isgold`` (else the first ``hasanswer``)."""

    item_id: str
    question: str
    answers: tuple[str, ...]
    ctxs: tuple[Document, ...]

    @property
    def gold_position(self) -> int | None:
        for flag in ("isgold", "hasanswer"):
            hits = [i for i, d in enumerate(self.ctxs) if getattr(d, flag)]
            if hits:
                return hits[0]
        return None

    @property
    def n_context(self) -> int:
        return len(self.ctxs)

    def prompt(self) -> PromptText:
        docs = "\n".join(f"Document [{i + 1}](Title: {d.title}) {d.text}" for i, d in enumerate(self.ctxs))
        return PromptText(body=f"{INSTRUCTION}\n\n{docs}\n\nQuestion: {self.question}\nAnswer:")

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "question": self.question, "answers": list(self.answers),
                "ctxs": [d.to_dict() for d in self.ctxs], "gold_position": self.gold_position}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> "MDQAItem":
        question = text(record["question"], "question")
        if not question.strip():
            raise ValueError("question is empty")
        answers = check_answers(record["answers"])
        raw = record["ctxs"]
        if not isinstance(raw, list) or not raw:
            raise ValueError("ctxs must be a non-empty list of documents")
        ctxs = []
        for j, d in enumerate(raw):
            if not isinstance(d, dict):
                raise ValueError(f"ctxs[{j}] is not an object with title and text")
            try:
                ctxs.append(Document(title=text(d["title"], f"ctxs[{j}].title"), text=text(d["text"], f"ctxs[{j}].text"),
                                     isgold=flag(d.get("isgold", False), f"ctxs[{j}].isgold"),
                                     hasanswer=flag(d.get("hasanswer", False), f"ctxs[{j}].hasanswer")))
            except KeyError as e:
                raise KeyError(f"ctxs[{j}].{e.args[0]}") from None
        item = cls(item_id=str(record.get("item_id", where)), question=question, answers=answers, ctxs=tuple(ctxs))
        if record.get("gold_position") is not None:
            pos = integer(record["gold_position"], "gold_position")
            check_gold_position(pos, item.n_context, where)
            if item.gold_position is not None and pos != item.gold_position:
                raise ValueError(f"gold_position {pos} disagrees with the isgold/hasanswer document {item.gold_position}")
            if item.gold_position is None:  # trust the explicit position: mark that document gold
                ctxs[pos] = Document(ctxs[pos].title, ctxs[pos].text, isgold=True, hasanswer=ctxs[pos].hasanswer)
                item = cls(item.item_id, question, answers, tuple(ctxs))
        if item.gold_position is None:  # accuracy by gold position, and the distractors, need the gold document
            raise PearLensError("no document is the gold one: mark the document that answers with "
                                '"isgold": true (or "hasanswer": true), or give "gold_position"; fix or remove this line')
        return item


def load_mdqa_jsonl(path: str | Path) -> list[MDQAItem]:
    """Read a "Lost in the Middle" MDQA JSONL file (``question``, ``answers``, ``ctxs``)."""
    return read_jsonl(path, MDQAItem.from_dict)


# ----------------------------------------------------------------- fictional generator

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kl", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m", "nd", "rk"]


def invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)).capitalize()


def invented_person(rng: random.Random) -> str:
    return f"{invented_word(rng, 2)} {invented_word(rng, rng.choice([2, 3]))}"


@dataclass(frozen=True)
class _Kind:
    """A kind of invented entity: how its document reads and which questions it answers."""

    name: str
    text: str
    """Document template over the entity's fields (``{name}`` and the attribute names)."""
    questions: dict[str, str]
    """attribute -> question template."""
    fields: dict[str, str]
    """attribute -> generator: ``person``, ``place`` (one word), ``thing`` (one word) or ``year``."""
    named: str = "place"
    """Generator of the entity's own name."""


_KINDS = (
    _Kind("town",
          "{name} is a small town in the {region} valley. It was founded by {founder} in {year}, and the "
          "{river} river runs through its centre. The town is known for its weekly markets.",
          {"founder": "Who founded the town of {name}?", "river": "Which river runs through {name}?"},
          {"region": "place", "founder": "person", "year": "year", "river": "place"}),
    _Kind("chemist",
          "{name} was a chemist born in the village of {birthplace} in {year}. She is best known for "
          "discovering {discovery}, a rare mineral, while working with her teacher {teacher}.",
          {"birthplace": "In which village was {name} born?", "discovery": "Which mineral did {name} discover?",
           "teacher": "Who was the teacher of {name}?"},
          {"birthplace": "place", "year": "year", "discovery": "thing", "teacher": "person"}, named="person"),
    _Kind("company",
          "{name} is a shipbuilding company headquartered in the port of {city}. It was established in {year} by "
          "{founder}, and its best-known vessel is the {ship}.",
          {"city": "Where is {name} headquartered?", "founder": "Who established the company {name}?",
           "ship": "What is the best-known vessel of {name}?"},
          {"city": "place", "year": "year", "founder": "person", "ship": "thing"}),
    _Kind("band",
          "{name} is a folk band formed in {year}. Its lead singer is {singer}, and its first album, {album}, "
          "was recorded in the town of {town}.",
          {"singer": "Who is the lead singer of {name}?", "album": "What was the first album of {name}?",
           "town": "In which town was the first album of {name} recorded?"},
          {"year": "year", "singer": "person", "album": "thing", "town": "place"}),
)


def _entity(kind: _Kind, rng: random.Random, used: set[str]) -> dict[str, str]:
    def fresh(make) -> str:
        # every name and value in one item is distinct, so only the gold document can answer
        while True:
            s = make()
            if s not in used and all(s not in u and u not in s for u in used):
                used.add(s)
                return s

    makers = {
        "person": lambda: invented_person(rng),
        "place": lambda: invented_word(rng, 2),
        "thing": lambda: invented_word(rng, 2),
        "year": lambda: str(rng.randint(1500, 1950)),
    }
    ent = {"name": fresh(makers[kind.named])}
    for attr, kind_of in kind.fields.items():
        ent[attr] = fresh(makers[kind_of])
    return ent


def generate_mdqa(n: int, n_docs: int, *, positions: Sequence[int] | None = None, seed: int = 0) -> list[MDQAItem]:
    """``n`` questions over ``n_docs`` documents about invented entities, the gold document cycling through ``positions``.

    >>> [it.gold_position for it in generate_mdqa(3, 2, seed=0)]
    [0, 1, 0]
    """
    rng = random.Random(seed)
    items = []
    for i, pos in enumerate(gold_positions(n, n_docs, positions, "generate_mdqa")):
        kind = rng.choice(_KINDS)
        attr = rng.choice(sorted(kind.questions))
        used: set[str] = set()
        ents = [_entity(kind, rng, used) for _ in range(n_docs)]
        docs = tuple(Document(title=e["name"], text=kind.text.format(**e), isgold=(j == pos), hasanswer=(j == pos))
                     for j, e in enumerate(ents))
        gold = ents[pos]
        items.append(MDQAItem(item_id=f"mdqa-{seed}-{i}", question=kind.questions[attr].format(name=gold["name"]),
                              answers=(gold[attr],), ctxs=docs))
    return items


def _template_pattern(text: str) -> "re.Pattern[str]":
    """A regex reading every ``{field}`` of a document template back out of a generated document."""
    parts = re.split(r"\{(\w+)\}", text)  # literal, field, literal, field, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}$")


_PATTERNS = tuple((kind, _template_pattern(kind.text)) for kind in _KINDS)


def distractor_answers(item: MDQAItem) -> tuple[str, ...]:
    """What each other document would answer to the item's question, for items of :func:`generate_mdqa`.

    An output naming one of these is a retrieval error (the right kind of fact, from the wrong document)
    rather than a made-up answer. The item records only its documents' text, so the fields are read back
    with the generator's own templates; items of another origin (e.g. NaturalQuestions) give ``()``.
    """
    gold = item.gold_position
    if gold is None:
        return ()
    for kind, pattern in _PATTERNS:
        fields = pattern.match(item.ctxs[gold].text)
        if fields is None:
            continue
        attrs = [a for a, q in kind.questions.items() if q.format(name=fields["name"]) == item.question]
        if len(attrs) != 1 or fields[attrs[0]] not in item.answers:
            return ()
        others = (pattern.match(d.text) for j, d in enumerate(item.ctxs) if j != gold)
        return tuple(m[attrs[0]] for m in others if m is not None)
    return ()
