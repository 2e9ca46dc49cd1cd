"""Figure files: a plotly figure written atomically as HTML, PNG, SVG or PDF, the same figure giving the same bytes.

:func:`save_figure` picks the format from the suffix (or ``formats``); HTML pages get a div id from the file name
(not a random UUID); static formats go through kaleido, which needs a Chrome (:func:`check_static_export` refuses
early, before any slow work, when none is found). Writing a figure never needs the module that drew it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from pear_lens.errors import PearLensError, debug_enabled
from pear_lens.io import atomic_path

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _chrome_path() -> str | None:
    for candidate in (os.environ.get("BROWSER_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      "/usr/bin/google-chrome"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def check_static_export() -> None:
    """Refuse, before any slow work, a static figure that cannot be written (kaleido needs a Chrome)."""
    if _chrome_path() is None:
        raise PearLensError("static PNG figures need a Chrome for kaleido; install Debian's `chromium` "
                            "(apt-get install chromium), set BROWSER_PATH, or pass --no-png")


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
    ``chromium`` package provides one (``apt-get install chromium``).
    """
    path = Path(path)
    formats = list(formats) if formats else [path.suffix.lstrip(".") or "html"]
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            if fmt == "html":  # a div id from the file name, not a random UUID: the same figure, the same bytes
                fig.write_html(str(tmp), include_plotlyjs="cdn", div_id=html_div_id(target))
            elif fmt in ("png", "svg", "pdf"):
                chrome = _chrome_path()
                if chrome is None:
                    raise PearLensError(
                        f"writing {target.name} needs a Chrome for kaleido; install Debian's `chromium` "
                        "(apt-get install chromium) or set BROWSER_PATH"
                    )
                os.environ.setdefault("BROWSER_PATH", chrome)
                with quiet_browser_log():
                    fig.write_image(str(tmp), format=fmt, scale=2 if fmt == "png" else 1)
            else:
                raise PearLensError(f"unknown figure format {fmt!r}; use html, png, svg or pdf")
        written.append(target)
    return written
