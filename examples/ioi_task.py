"""An indirect-object-identification (IOI) task for SmolLM2, built as a :class:`pear_lens.PromptTask`.

Each prompt names two people and repeats one of them (the subject); the model should complete it with the other
(the indirect object): "When Mary and John went to the store, John gave a drink to" → " Mary" (the foil is
" John"). The corrupted prompt replaces the repeated name by a third one ("..., Tom gave a drink to"), so it has
the same number of tokens and no longer says who the indirect object is. Every name is one token for SmolLM2's
tokenizer (with its leading space), so the prompts of one template all have the same length.

    python examples/ioi_task.py   # writes examples/ioi_task.jsonl, for `pear-lens discover --task ...`

The test (tests/test_peer_transformer_lens.py), the benchmark (benchmarks/custom_task.py) and the notebook
(notebooks/05_your_own_task.ipynb) import :func:`ioi_task` from this file: it is an example, not part of the
installed library.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Sequence

import pear_lens

HERE = Path(__file__).resolve().parent
JSONL = HERE / "ioi_task.jsonl"

NAMES = ("Mary", "John", "Tom", "James", "Anna", "Sarah", "David", "Paul", "Mark", "Lisa", "Emma", "Kate",
         "Peter", "Jack", "Alice", "Bob", "Michael", "Daniel", "Laura", "Susan", "Robert", "George", "Linda",
         "Jane")
"""First names that SmolLM2's tokenizer makes one token each, after a space (checked by :func:`check_tokens`)."""

TEMPLATES = (
    "When {io} and {s} went to the store, {s2} gave a drink to",
    "When {io} and {s} went to the park, {s2} gave a ball to",
    "After {io} and {s} went to the restaurant, {s2} handed a menu to",
    "Then, {io} and {s} had a long argument. Afterwards {s2} said to",
    "While {io} and {s} were working at the office, {s2} gave a report to",
)
"""``{io}``: the indirect object (the answer); ``{s}``: the subject, repeated as ``{s2}`` (a third name in the
corrupted prompt). The order of the first two names is flipped in every other prompt (ABB and BAB)."""


def _items(n: int, seed: int, templates: Sequence[str]) -> list[tuple[int, dict]]:
    """``(template index, record)`` of the first ``n`` prompts."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        t = i % len(templates)
        io, s, c = rng.sample(NAMES, 3)
        first, second = (io, s) if (i // len(templates)) % 2 == 0 else (s, io)  # ABB, then BAB
        prompt = templates[t].replace("{io}", first, 1).replace("{s}", second, 1)
        items.append((t, {"prompt": prompt.replace("{s2}", s), "answer": f" {io}", "foil": f" {s}",
                          "corrupted": prompt.replace("{s2}", c)}))
    return items


def ioi_records(n: int = 100, seed: int = 0, templates: Sequence[str] = TEMPLATES) -> list[dict]:
    """``n`` IOI prompts as JSONL records (``pear_lens.task_records.JSONL_FIELDS``): the templates in turn,
    names drawn with ``random.Random(seed)``, so the same arguments give the same records. Give a few
    ``templates`` of one token length (e.g. ``TEMPLATES[:3]``) for a task scanned in one batch."""
    return [record for _, record in _items(n, seed, templates)]


def ioi_task(n: int = 100, seed: int = 0, templates: Sequence[str] = TEMPLATES) -> pear_lens.PromptTask:
    """The IOI task of :func:`ioi_records` (answer: the indirect object, foil: the subject)."""
    return pear_lens.PromptTask.from_records(ioi_records(n, seed, templates), name=f"ioi-{n}")


def check_tokens(tokenizer, n: int = 100, seed: int = 0) -> list[int]:
    """Check that every name is one token after a space and that the prompts of one template, clean and
    corrupted, all have one token length; return each template's length (a ValueError names what breaks)."""
    for name in NAMES:
        ids = tokenizer(f" {name}", add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{name!r} is {len(ids)} tokens after a space; IOI names must be one token")
    seen: dict[int, set[int]] = {t: set() for t in range(len(TEMPLATES))}
    for t, record in _items(n, seed, TEMPLATES):
        for key in ("prompt", "corrupted"):
            seen[t].add(len(tokenizer(record[key])["input_ids"]))
    for t, lengths in seen.items():
        if len(lengths) != 1:
            raise ValueError(f"template {TEMPLATES[t]!r} gives prompts of {sorted(lengths)} tokens")
    return [lengths.pop() for lengths in seen.values()]


def main(argv: list[str] | None = None) -> int:
    """Write :data:`JSONL` (100 prompts, seed 0), one record a line."""
    records = ioi_records()
    JSONL.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    print(f"wrote {len(records)} IOI prompts to {JSONL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
