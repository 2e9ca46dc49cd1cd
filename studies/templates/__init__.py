"""The fixed prose of the studies' reports, as Markdown templates (``studies/templates/NAME.md``).

A template file holds named blocks, each starting at a line ``<!-- block: NAME -->``; :func:`blocks` reads them
as :class:`string.Template` objects (``$placeholder``), and :func:`join` puts filled blocks together the way the
reports are written: one blank line between blocks, a newline at the end. What is not in a block (a comment
on top saying how the file is used) is not part of any report.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from string import Template

from pear_lens.errors import PearLensError

HERE = Path(__file__).resolve().parent
_MARK = re.compile(r"^<!-- block: ([\w-]+) -->$", re.M)


@functools.cache
def blocks(name: str) -> dict[str, Template]:
    """The blocks of ``studies/templates/NAME.md`` by name, in file order."""
    text = (HERE / f"{name}.md").read_text(encoding="utf-8")
    marks = list(_MARK.finditer(text))
    out: dict[str, Template] = {}
    for mark, after in zip(marks, [*marks[1:], None]):
        if mark.group(1) in out:
            raise PearLensError(f"{HERE / name}.md: block {mark.group(1)!r} twice")
        out[mark.group(1)] = Template(text[mark.end():after.start() if after else len(text)].strip("\n"))
    return out


class Prose:
    """The blocks of one template, filled by name: ``Prose("confirmatory")("model", model=..., ...)``."""

    def __init__(self, name: str):
        self.blocks = blocks(name)

    def __call__(self, block: str, **values: object) -> str:
        """Block ``block`` with every placeholder filled (a missing value raises: the template and the code
        must agree); a table's closing newline is dropped, :func:`join` puts the blank line after it."""
        return self.blocks[block].substitute({k: str(v).rstrip("\n") for k, v in values.items()})


def join(parts: list[str]) -> str:
    """Filled blocks as a document: one blank line between them and a newline at the end."""
    return "\n\n".join(p.rstrip("\n") for p in parts) + "\n"
