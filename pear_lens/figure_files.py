"""Figure files: a plotly figure written atomically as HTML, PNG, SVG or PDF, the same figure giving the same bytes.

:func:`save_figure` picks the format from the suffix (or ``formats``; :data:`ALL_FORMATS` for a paper); HTML pages
get a div id from the file name (not a random UUID); static formats go through kaleido, which needs a Chrome.
Without one the HTML is still written and one line says which static files were skipped and how to get them
(:func:`check_static_export` says it early, before any slow work). Writing a figure never needs the module that
drew it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from pear_lens.errors import PearLensError, debug_enabled
from pear_lens.io import atomic_path

PNG_SCALE = 3
"""PNG pixels per layout pixel: 288 dpi at a figure's printed width (:data:`pear_lens.drawing.WIDTHS`)."""

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _chrome_path() -> str | None:
    for candidate in (os.environ.get("BROWSER_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      "/usr/bin/google-chrome"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


STATIC_FORMATS = ("png", "pdf", "svg")
ALL_FORMATS = ("html", *STATIC_FORMATS)
"""What a figure is saved as for a paper: the interactive page, a 288-dpi PNG, and vector PDF and SVG."""

NO_CHROME = ("figures: PNG/PDF/SVG skipped, HTML written (kaleido needs a Chrome: install Debian's `chromium` "
             "(apt-get install chromium) or set BROWSER_PATH, then draw again)")
_said: set[str] = set()


def figure_formats(static: bool = True) -> list[str]:
    """The formats of a saved figure: HTML, plus PNG, PDF and SVG unless ``static`` is off (``--no-png``)."""
    return list(ALL_FORMATS if static else ("html",))


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr, flush=True)


def check_static_export() -> bool:
    """Whether static figures can be written (kaleido needs a Chrome); where not, say so in one line, before any
    slow work, and go on: the HTML figures are written all the same."""
    if _chrome_path() is None:
        _say_once(NO_CHROME)
        return False
    return True


def html_div_id(path: Path) -> str:
    """The id of a figure's div in ``path``'s HTML page: its file stem, made a valid HTML id."""
    return "pear-lens-" + re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)


BROWSER_LOGGERS = ("choreographer", "kaleido", "chrome_wrapper")
"""Loggers of kaleido's browser driver. They print a traceback for a browser message they then ignore
("JSONError decoding message. Ignoring"), a harmless hiccup of Chromium's pipe that a user must not read as a
failure; a real failure still raises from ``write_image``."""


@contextlib.contextmanager
def quiet_browser_log() -> Iterator[None]:
    """Hold kaleido's browser-driver loggers at CRITICAL for the block (unless ``PEAR_LENS_DEBUG`` is set)."""
    if debug_enabled():
        yield
        return
    loggers = [logging.getLogger(name) for name in BROWSER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def save_figure(fig: "go.Figure", path: str | os.PathLike, formats: Iterable[str] | None = None) -> list[Path]:
    """Write ``fig`` (a plotly figure, drawn by :mod:`pear_lens.plots` or :mod:`pear_lens.drawing`) atomically;
    the suffix of ``path`` picks the format, or give ``formats``.

    Static formats (png, svg, pdf) use kaleido, which needs a Chrome: Debian's
    ``chromium`` package provides one (``apt-get install chromium``). Without one they are skipped (not in the
    returned list) and one line on stderr, once per process, says so and how to get them.
    """
    path = Path(path)
    formats = list(formats) if formats else [path.suffix.lstrip(".") or "html"]
    unknown = [f for f in formats if f not in ALL_FORMATS]
    if unknown:
        raise PearLensError(f"unknown figure format {unknown[0]!r}; use html, png, svg or pdf")
    chrome = _chrome_path() if set(formats) & set(STATIC_FORMATS) else None
    if chrome is None and set(formats) & set(STATIC_FORMATS):
        _say_once(NO_CHROME)
        formats = [f for f in formats if f not in STATIC_FORMATS] or ["html"]  # a figure is never lost
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            if fmt == "html":  # a div id from the file name, not a random UUID: the same figure, the same bytes
                fig.write_html(str(tmp), include_plotlyjs="cdn", div_id=html_div_id(target))
            elif fmt in ("png", "svg", "pdf"):
                os.environ.setdefault("BROWSER_PATH", chrome)
                with quiet_browser_log():
                    fig.write_image(str(tmp), format=fmt, scale=PNG_SCALE if fmt == "png" else 1)
            else:
                raise PearLensError(f"unknown figure format {fmt!r}; use html, png, svg or pdf")
        written.append(target)
    return written
