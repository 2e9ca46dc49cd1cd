"""Dev and test items that share nothing, and a digest that names a set of items.

Anything chosen (K, a prompt style) is chosen on *dev* items and reported on *test* items drawn from
another seed; :func:`dev_test_items` draws both and drops a dev item that repeats a test item (same prompt
and gold answers: :func:`prompt_key`), :func:`check_disjoint` refuses any overlap between two sets (also a new
test set against every earlier one), and :func:`items_digest` is the short hash a cache or a record keys on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import TaskName, TaskSettings, generate_items

if TYPE_CHECKING:
    from pear_lens.evaluation.tasks.items import Item


def prompt_key(item: "Item") -> str:
    """What makes two items the same question: the prompt text and the gold answers (not the id)."""
    p = item.prompt()
    return json.dumps([p.body, p.answer_prefix, list(item.answers)], ensure_ascii=False)


def items_digest(items: Sequence["Item"]) -> str:
    """A short hash of the items' ids and prompts (a cache key that changes with any item)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.item_id}\0{prompt_key(it)}\n".encode())
    return h.hexdigest()[:16]


def check_disjoint(dev: Sequence["Item"], test: Sequence["Item"]) -> None:
    """Refuse dev items that repeat a test item (same prompt and answers)."""
    shared = {prompt_key(it) for it in dev} & {prompt_key(it) for it in test}
    if shared:
        raise PearLensError(f"{len(shared)} dev item(s) repeat a test item; K chosen on them would have seen the test")


@dataclass(frozen=True)
class DevTestSplit:
    """Items of one task: dev (chooses K) and test (the table), from different seeds, sharing no prompt."""

    dev: list
    test: list
    dropped: int
    """Dev items dropped because they repeated a test item."""


def dev_test_items(task: TaskName, settings: TaskSettings, *, n_dev: int, n_test: int, dev_seed: int,
                   test_seed: int) -> DevTestSplit:
    """Generate both splits with their own seeds; a dev item that repeats a test item is dropped.

    The test items are exactly those ``pear-lens eval --seed TEST_SEED --n N_TEST`` generates.
    """
    if dev_seed == test_seed:
        raise PearLensError(f"dev_seed and test_seed are both {dev_seed}; dev items must come from another seed")
    test = generate_items(task, settings, n_test, seed=test_seed)
    seen = {prompt_key(it) for it in test}
    dev = [it for it in generate_items(task, settings, n_dev, seed=dev_seed) if prompt_key(it) not in seen]
    check_disjoint(dev, test)
    return DevTestSplit(dev, test, n_dev - len(dev))
