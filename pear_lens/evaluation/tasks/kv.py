"""Key-value retrieval in the "Lost in the Middle" format.

Each item is a JSON object of random key-value pairs and one queried key; the
model must copy that key's value out of its context. Keys and values are
random strings, so only the context can answer, and the gold pair is placed at
a chosen position to measure accuracy by position. Records round-trip through
the reference JSONL fields ``ordered_kv_records``, ``key`` and ``value``.
"""
from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.items import (PromptText, check_answers, check_gold_position, gold_positions, integer,
                                              read_jsonl, text)

INSTRUCTION = "Extract the value corresponding to the specified key in the JSON object below."
_FORMAT = re.compile(r"^(hex|digits|alpha)(\d+)$|^uuid$")


def random_string(fmt: str, rng: random.Random) -> str:
    """A random key or value: ``hexL`` (L hex digits), ``digitsD`` (a D-digit number), ``alphaL``, ``uuid``."""
    m = _FORMAT.match(fmt)
    if not m:
        raise PearLensError(f"unknown key/value format {fmt!r}; use hexL, digitsD, alphaL (e.g. hex8, digits3) or uuid")
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    kind, length = m.group(1), int(m.group(2))
    if length < 1:
        raise PearLensError(f"format {fmt!r} needs a length of at least 1")
    if kind == "hex":
        return "".join(rng.choice("0123456789abcdef") for _ in range(length))
    if kind == "alpha":
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(length))
    return str(rng.randint(10 ** (length - 1) if length > 1 else 0, 10 ** length - 1))


@dataclass(frozen=True)
class KVItem:
    """One KV-retrieval question: the ordered records, the queried key and its value."""

    item_id: str
    records: tuple[tuple[str, str], ...]
    key: str

    @property
    def value(self) -> str:
        return dict(self.records)[self.key]

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.value,)

    @property
    def gold_position(self) -> int:
        return [k for k, _ in self.records].index(self.key)

    @property
    def distractor_values(self) -> tuple[str, ...]:
        """The other keys' values: an output naming one retrieved the wrong pair."""
        return tuple(v for k, v in self.records if k != self.key)

    @property
    def n_context(self) -> int:
        return len(self.records)

    def prompt(self) -> PromptText:
        # one pair per line, laid out exactly as the reference code formats its records
        data = ",\n ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in self.records)
        data = "{" + data + "}"
        body = f"{INSTRUCTION}\n\nJSON data:\n{data}\n\nKey: {json.dumps(self.key)}\nCorresponding value:"
        return PromptText(body=body, answer_prefix='"')

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "ordered_kv_records": [list(r) for r in self.records],
                "key": self.key, "value": self.value, "gold_position": self.gold_position}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str) -> "KVItem":
        raw = record["ordered_kv_records"]
        if not isinstance(raw, list) or not raw:
            raise ValueError("ordered_kv_records must be a non-empty list of [key, value] pairs")
        records = []
        for pair in raw:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"ordered_kv_records entry {pair!r} is not a [key, value] pair")
            records.append((text(pair[0], "a key of ordered_kv_records"), text(pair[1], "a value of ordered_kv_records")))
        key, value = text(record["key"], "key"), check_answers(record["value"], "value")[0]
        keys = [k for k, _ in records]
        if keys.count(key) != 1:
            raise ValueError(f"key {key!r} occurs {keys.count(key)} times in ordered_kv_records (needs exactly 1)")
        if dict(records)[key] != value:
            raise ValueError(f"value {value!r} differs from the value of {key!r} in ordered_kv_records")
        item = cls(item_id=str(record.get("item_id", where)), records=tuple(records), key=key)
        if "gold_position" in record:
            check_gold_position(integer(record["gold_position"], "gold_position"), item.n_context, where)
            if record["gold_position"] != item.gold_position:
                raise ValueError(f"gold_position {record['gold_position']} disagrees with the key's index {item.gold_position}")
        return item


def generate_kv(n: int, n_pairs: int, *, key_format: str = "digits3", value_format: str = "digits3",
                positions: Sequence[int] | None = None, seed: int = 0) -> list[KVItem]:
    """``n`` items of ``n_pairs`` random pairs (unique keys and values), the gold pair cycling through ``positions``.

    >>> [it.gold_position for it in generate_kv(4, 3, seed=1)]
    [0, 1, 2, 0]
    """
    rng = random.Random(seed)
    items = []
    for i, pos in enumerate(gold_positions(n, n_pairs, positions, "generate_kv")):
        keys = _unique(key_format, n_pairs, rng)
        values = _unique(value_format, n_pairs, rng)
        records = tuple(zip(keys, values))
        items.append(KVItem(item_id=f"kv-{seed}-{i}", records=records, key=keys[pos]))
    return items


def _unique(fmt: str, count: int, rng: random.Random) -> list[str]:
    # values must be unique too: a duplicated value would make a wrong key's value count as correct
    out: list[str] = []
    for _ in range(100 * count):
        s = random_string(fmt, rng)
        # no string may contain another, or best_subspan_em could accept a different pair's value
        if all(s not in o and o not in s for o in out):
            out.append(s)
            if len(out) == count:
                return out
    raise PearLensError(f"format {fmt!r} is too short to draw {count} distinct strings; use a longer format")


def load_kv_jsonl(path: str | Path) -> list[KVItem]:
    """Read a KV-retrieval JSONL file (``ordered_kv_records``, ``key``, ``value`` per line)."""
    return read_jsonl(path, KVItem.from_dict)
