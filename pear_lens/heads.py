"""Heads by name: one ``Head`` type, how a name becomes a head and a head a label, and the check of a head list.

A head is ``(layer, head)``; its name is ``LAYER.HEAD`` (``24.4``) or its label ``L<layer>.H<head>`` (``L24.H4``).
"""
from __future__ import annotations

import operator
import re
from typing import Any, Sequence

from pear_lens.errors import PearLensError

Head = tuple[int, int]
"""An attention head: ``(layer, head)``, both counted from 0."""

HEAD_NAME = re.compile(r"(\d+)\.(\d+)|[Ll](\d+)\.[Hh](\d+)")


def parse_head(name: str) -> tuple[int, int]:
    """A head's name, ``LAYER.HEAD`` or its label ``L<layer>.H<head>``, as ``(layer, head)``.

    >>> parse_head("24.4"), parse_head("L24.H4")
    ((24, 4), (24, 4))
    """
    match = HEAD_NAME.fullmatch(name.strip())
    if match is None:
        raise PearLensError(f"{name!r} is not a head: write LAYER.HEAD like '24.4' or 'L24.H4'")
    layer, head = (int(v) for v in match.groups() if v is not None)
    return layer, head


def head_label(head: Head) -> str:
    """``L<layer>.H<head>``: how figures and tables name a head."""
    return f"L{head[0]}.H{head[1]}"


def head_list(heads: "Sequence[Any] | str") -> list[Head]:
    """``(layer, head)`` pairs from pairs or head names (:func:`parse_head`).

    >>> head_list([(1, 2), "1.3", "L0.H1"]), head_list("2.0,L2.H1")
    ([(1, 2), (1, 3), (0, 1)], [(2, 0), (2, 1)])
    """
    if isinstance(heads, str):
        heads = [part for part in heads.split(",") if part.strip()]
    out = []
    for item in heads:
        if isinstance(item, str):
            out.append(parse_head(item))
            continue
        try:
            layer, head = item
            out.append((operator.index(layer), operator.index(head)))  # refuses 1.5, which int() would truncate
        except (TypeError, ValueError):
            raise PearLensError(f"heads: {item!r} is not a head; give (layer, head) pairs of integers or names "
                                "like '24.4' or 'L24.H4'") from None
    return out


def check_heads(heads: "Sequence[Any] | str", n_layers: int, n_heads: int) -> list[Head]:
    """Validate a head list: non-empty, in range, no duplicates."""
    out = head_list(heads)
    if not out:
        raise PearLensError("no heads to re-weight; give heads= as (layer, head) pairs or names like '24.4', "
                            "or a HeadScores with k= (on the command line: --heads or --top-k)")
    bad = [lh for lh in out if not (0 <= lh[0] < n_layers and 0 <= lh[1] < n_heads)]
    if bad:
        raise PearLensError(f"heads {bad} are outside the model ({n_layers} layers × {n_heads} heads: layers 0 to "
                            f"{n_layers - 1}, heads 0 to {n_heads - 1})")
    twice = sorted({lh for lh in out if out.count(lh) > 1})
    if twice:
        raise PearLensError(f"duplicate heads {twice} in {out}; list each head once")
    return out
