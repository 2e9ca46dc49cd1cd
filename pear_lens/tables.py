"""Tables as text: the one Markdown renderer pear_lens and its studies write tables with.

:func:`markdown_table` takes a DataFrame (or column names and rows) and writes a GitHub Markdown table in which
a ``|`` or a line break inside a cell cannot break the table (escaped, or a space); an empty table is a line
that says so. Columns are written in the order given, cells with ``str``: format numbers before.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import pandas as pd

EMPTY = "(nothing evaluated yet)\n"


def markdown_cell(value: Any) -> str:
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def markdown_table(table: pd.DataFrame | Sequence[str], rows: Iterable[Sequence[Any]] | None = None, *,
                   empty: str = EMPTY) -> str:
    """``table`` (a DataFrame, or the column names with ``rows``) as a Markdown table ending in a newline."""
    if isinstance(table, pd.DataFrame):
        columns, rows = list(table.columns), list(table.itertuples(index=False))
    else:
        columns, rows = list(table), list(rows or [])
    if not rows and empty:
        return empty
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
