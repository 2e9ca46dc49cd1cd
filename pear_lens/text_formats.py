"""How typed values are written on the command line: comma-separated lists, BATCHxN pairs, LAYER.HEAD names.

``Annotated[T, Format(parse, show, metavar)]`` tells :mod:`pear_lens.config` how to read and print a field:
:data:`Settings` (the proxy task's ``20x50,40x25``) and :data:`Heads` (``26.28,11.6``); lists of numbers and
Enum choices get their formats here too. A malformed value is an ``argparse.ArgumentTypeError`` naming an example.
"""
from __future__ import annotations

import argparse
import enum
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable

from pear_lens.heads import HEAD_NAME, parse_head


@dataclass(frozen=True)
class Format:
    """How values of one type are written on the command line: ``Annotated[T, Format(...)]``."""

    parse: Callable[[str], Any]
    show: Callable[[Any], str]
    metavar: str


def _entries(text: str, example: str) -> list[str]:
    """The comma-separated entries of ``text``; an empty list or an empty entry is a typo, not a default."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip():
        raise argparse.ArgumentTypeError(f"is empty; give values like {example}, or leave the option out")
    if "" in parts:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty entry; give values like {example}")
    return parts


def parse_pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``20x50,40x25`` → ((20, 50), (40, 25))."""
    parts = _entries(text, "20x50,40x25")
    if not all(re.fullmatch(r"\d+[xX]\d+", p) for p in parts):
        raise argparse.ArgumentTypeError(f"expected BATCHxN pairs like 20x50,40x25, got {text!r}")
    return tuple(tuple(int(v) for v in p.lower().split("x")) for p in parts)  # type: ignore[misc]


def parse_heads(text: str) -> tuple[tuple[int, int], ...]:
    """``26.28,11.6`` (or ``L26.H28,L11.H6``) → ((26, 28), (11, 6))."""
    parts = _entries(text, "26.28,11.6 (LAYER.HEAD)")
    bad = [p for p in parts if HEAD_NAME.fullmatch(p) is None]
    if bad:
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD pairs like 26.28,11.6, got {text!r} "
                                         f"({bad[0]!r} is not LAYER.HEAD)")
    return tuple(parse_head(p) for p in parts)


Settings = Annotated[tuple[tuple[int, int], ...],
                     Format(parse_pairs, lambda v: ",".join(f"{b}x{n}" for b, n in v) or "none", "BATCHxN,...")]
"""(batch, n) pairs of the proxy task, ``20x50,40x25`` on the command line."""
Heads = Annotated[tuple[tuple[int, int], ...],
                  Format(parse_heads, lambda v: ",".join(f"{l}.{h}" for l, h in v) or "none", "LAYER.HEAD,...")]
"""``(layer, head)`` pairs, ``26.28,11.6`` on the command line."""


def list_of(item: type) -> Format:
    def parse(text: str) -> tuple:
        parts = _entries(text, "1,2,5")
        try:
            return tuple(item(v) for v in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None
    return Format(parse, lambda v: ",".join(map(str, v)) or "none", f"{item.__name__.upper()},...")


def enum_parser(cls: type[enum.Enum]) -> Callable[[str], enum.Enum]:
    def parse(text: str) -> enum.Enum:
        try:
            return cls(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid choice {text!r} (choose from {', '.join(str(m.value) for m in cls)})") from None
    parse.__name__ = cls.__name__
    return parse
