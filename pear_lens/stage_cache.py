"""One keyed on-disk cache for the stages of a long experiment, with its mismatch rule stated.

A stage's result is kept in a JSON file (gzip when the name ends in ``.gz``) beside the *key* it was
computed under: every input it depends on (weights fingerprint, heads, recipe, items digest, settings).
Reading it back compares the saved key with the fresh one, as JSON reads them (tuples are lists, enums their
values, paths text: :func:`pear_lens.io.as_json`). What happens on a mismatch is the caller's stated choice
(:class:`OnMismatch`): an exploratory cache **recomputes** and replaces the file (it is pear_lens's own, and
stale), a study's committed output is **refused**, with the fields that differ named, since a changed input
midway through a confirmatory study is not allowed.
"""
from __future__ import annotations

import gzip
import json
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from pear_lens.errors import PearLensError
from pear_lens.io import as_json, atomic_write_bytes, atomic_write_json


class OnMismatch(str, Enum):
    RECOMPUTE = "recompute"
    """Compute again and replace the file (a cache of pear_lens's own)."""
    REFUSE = "refuse"
    """Refuse, naming the fields that differ (a committed output is never replaced midway)."""


def read_record(path: str | Path) -> dict[str, Any]:
    """The whole record at ``path`` (gzip-compressed JSON when the name ends in ``.gz``)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(gzip.decompress(data) if path.suffix == ".gz" else data)
    except (OSError, EOFError, ValueError) as e:
        raise PearLensError(f"{path} is not a readable stage record ({e}); move it aside to run that stage again") \
            from None


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` whole, atomically (gzip-compressed when the name ends in ``.gz``; mtime 0, so the same
    record gives the same bytes)."""
    path = Path(path)
    if path.suffix != ".gz":
        return atomic_write_json(path, record)
    return atomic_write_bytes(path, gzip.compress(json.dumps(record, ensure_ascii=False).encode(), mtime=0))


def changed_fields(saved: Any, key: dict[str, Any]) -> list[str]:
    """The top-level fields in which a saved key and a fresh one differ."""
    saved = saved if isinstance(saved, dict) else {}
    return sorted(k for k in {*key, *saved} if saved.get(k) != key.get(k))


def lookup(path: str | Path, key: dict[str, Any], on_mismatch: OnMismatch | str) -> dict[str, Any] | None:
    """The record saved at ``path`` under ``key``; None when there is none (or, with ``recompute``, when it was
    made under another key)."""
    path, key = Path(path), as_json(key)
    if not path.exists():
        return None
    record = read_record(path)
    if record.get("key") == key:
        return record
    if OnMismatch(on_mismatch) is OnMismatch.RECOMPUTE:
        return None
    raise PearLensError(f"{path} was made under another key ({', '.join(changed_fields(record.get('key'), key))} "
                        "differ); a committed output is not replaced midway through a study: restore what made it "
                        "(git log), or move the file aside to run that stage again")


def cached_stage(path: str | Path, key: dict[str, Any], compute: Callable[[], Any],
                 on_mismatch: OnMismatch | str = OnMismatch.RECOMPUTE) -> tuple[Any, float, bool]:
    """``compute()`` once per ``key``: its JSON value is kept in ``path`` with the seconds it took.

    Returns ``(value, seconds, ran_now)``; ``seconds`` is the time measured when it ran (maybe in an
    earlier session).
    """
    key = as_json(key)
    saved = lookup(path, key, on_mismatch)
    if saved is not None:
        return saved["value"], float(saved["seconds"]), False
    start = time.perf_counter()
    value = as_json(compute())
    seconds = round(time.perf_counter() - start, 2)  # as saved: a later read returns the same number
    write_record(path, {"key": key, "value": value, "seconds": seconds})
    return value, seconds, True
