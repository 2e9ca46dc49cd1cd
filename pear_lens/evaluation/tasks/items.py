"""What every evaluation item offers, and reading/writing items as JSONL.

An item knows its gold answers, where its gold evidence sits in the context
(``gold_position``, 0-based, ``None`` without context), how many context units
it has (pairs or documents), and the text of its prompt. Prompt *style*
(plain completion or chat template) is applied later, by
:mod:`pear_lens.evaluation.tasks.prompts`, so the same item can be asked both ways.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence, TypeVar, runtime_checkable

from pear_lens.errors import PearLensError
from pear_lens.io import atomic_write_text


@dataclass(frozen=True)
class PromptText:
    """The user-facing text of one question, before any prompt style is applied."""

    body: str
    """Instructions, context and question, ending where the answer should start."""
    answer_prefix: str = ""
    """Optional opening of the answer (the KV value's quote) that some styles append."""


@runtime_checkable
class Item(Protocol):
    item_id: str
    gold_position: int | None
    n_context: int

    @property
    def answers(self) -> tuple[str, ...]: ...

    def prompt(self) -> PromptText: ...

    def to_dict(self) -> dict[str, Any]: ...


T = TypeVar("T")


def write_jsonl(items: Iterable[Item], path: str | os.PathLike) -> Path:
    """Write items one JSON object per line (atomically), in their loader's format."""
    return atomic_write_text(path, "".join(json.dumps(it.to_dict(), ensure_ascii=False) + "\n" for it in items))


def read_jsonl(path: str | os.PathLike, parse: Callable[[dict[str, Any], str], T]) -> list[T]:
    """Parse every line of ``path`` with ``parse(record, where)``; errors name the file and line.

    ``parse`` raises ``KeyError``/``TypeError``/``ValueError`` (or ``PearLensError``)
    on a malformed record; every record is checked before anything is returned.
    """
    path = Path(path)
    if path.is_dir():
        raise PearLensError(f"dataset file {path} is a folder; --data takes a JSONL file")
    if not path.exists():  # not is_file(): a pipe, a FIFO or /dev/fd/N (`--data <(...)`) is read as a file
        raise PearLensError(f"dataset file {path} does not exist; check the --data path")
    items: list[T] = []
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # not splitlines(): JSON strings may hold U+2028
    except UnicodeDecodeError as e:
        raise PearLensError(f"dataset file {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as "
                            "UTF-8") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("a line must hold one JSON object")
            items.append(parse(record, where))
        except PearLensError as e:
            raise PearLensError(f"{where}: {e}") from None
        except KeyError as e:
            raise PearLensError(f"{where}: missing field {e}; fix or remove this line") from None
        except (TypeError, ValueError) as e:
            raise PearLensError(f"{where}: malformed item ({e}); fix or remove this line") from None
    if not items:
        raise PearLensError(f"{path} holds no items")
    return items


def _shown(value: Any) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:40] if isinstance(value, (int, float, bool)) else repr(value)[:40]}"


def text(value: Any, what: str) -> str:
    """``value`` if it is a string, else a ``ValueError`` naming ``what`` (a number is not silently made text)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {_shown(value)}"
                         + (f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) else ""))
    return value


def integer(value: Any, what: str) -> int:
    """``value`` if it is an integer (not a bool, not 0.9), else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_shown(value)}")
    return value


def flag(value: Any, what: str) -> bool:
    """``value`` if it is a JSON boolean (``"false"`` or ``0`` would act as one), else a ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {_shown(value)}")
    return value


def check_answers(answers: Any, what: str = "answers") -> tuple[str, ...]:
    """A non-empty tuple of non-empty strings, or a ``ValueError`` saying what is wrong."""
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, (list, tuple)):
        raise ValueError(f"{what} must be a string or a list of strings, got {_shown(answers)}"
                         + (f' (write it in quotes: "{answers}")' if isinstance(answers, (int, float)) else ""))
    if not answers:
        raise ValueError(f"the answer list is empty ({what})")
    out = tuple(text(a, f"{what}[{i}]") for i, a in enumerate(answers))
    if not all(a.strip() for a in out):
        raise ValueError("an answer is an empty string")
    return out


def check_gold_position(position: int | None, n_context: int, where: str) -> None:
    if position is not None and not 0 <= position < n_context:
        raise PearLensError(
            f"{where}: gold position {position} is beyond the {n_context} context units "
            f"(positions are 0-based: 0..{n_context - 1})"
        )


def gold_positions(n: int, n_context: int, positions: Sequence[int] | None, where: str) -> list[int]:
    """Gold positions for ``n`` generated items, cycling through ``positions`` (default: every position).

    Each position gets ⌊n/len⌋ or ⌈n/len⌉ items; impossible requests are errors naming ``where``.
    """
    if n < 1 or n_context < 1:
        raise PearLensError(f"{where}: need n ≥ 1 items and at least 1 context unit, got n={n}, n_context={n_context}")
    positions = list(positions) if positions else list(range(n_context))
    for p in positions:
        check_gold_position(p, n_context, where)
    return [positions[i % len(positions)] for i in range(n)]
