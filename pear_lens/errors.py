"""One exception type for every mistake a user can fix.

The CLI prints these as a one-line message instead of a traceback; the message
always says what to do next. A value echoed in a message is cut to a readable length
(:func:`shorten`, and :func:`one_line` cuts whatever a message echoes at length), and
:func:`safe_output` keeps printing from failing on a terminal that cannot encode τ, Δπ or ρ.
"""
from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import re
import sys
import unicodedata
from typing import Any, Iterator


class PearLensError(ValueError):
    """Bad input or a missing prerequisite, with the fix in the message.

    A value the message echoes at length (a run of over :data:`RUN_LIMIT` characters without a space: a
    pasted file, a 200 MB argument) is cut (:func:`shorten`), in the Python API as on the command line.
    """

    def __init__(self, *args: Any):
        super().__init__(*(_cut_runs(a) if isinstance(a, str) else a for a in args))


class ManyProblems(PearLensError):
    """Several independent mistakes in one input (e.g. malformed records of a file): one line each.

    The command line prints ``summary`` and then every line of ``problems``.
    """

    def __init__(self, summary: str, problems: list[str]):
        self.summary, self.problems = summary, list(problems)
        super().__init__("\n".join([summary, *self.problems]))


class ModelNotAvailable(PearLensError):
    """The model is unknown, or known but not installed on this machine."""


_OS_HINTS = {
    "PermissionError": "check its permissions or choose another path",
    "IsADirectoryError": "a folder was given where a file is expected; give the file",
    "NotADirectoryError": "a file was given where a folder is expected; give the folder",
    "FileNotFoundError": "check the path",
    "FileExistsError": "choose another path",
}
_ERRNO_HINTS = {
    errno.ENOSPC: "free some space and rerun; nothing was replaced",
    errno.EDQUOT: "free some space or raise the disk quota and rerun; nothing was replaced",
    errno.EFBIG: "the file system or a file-size limit (ulimit -f) refuses a file this large: write to another "
                 "file system or raise the limit and rerun; nothing was replaced",
    errno.EROFS: "the file system is read-only; choose a path you can write to",
}
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)")
"""How libraries written in Rust (safetensors, tokenizers) report an I/O error they wrap: ``... (os error 27)``."""


ECHO_LIMIT = 120
"""The most characters of one user value a message echoes (:func:`shorten`)."""
MESSAGE_LIMIT = 2000
"""The most characters of one message line (:func:`one_line`); its end, which says what to do, is kept."""
RUN_LIMIT = 300
"""The most characters without a space a message keeps whole (a long path still reads in full)."""
_LONG_RUN = re.compile(r"\S{%d,}" % (RUN_LIMIT + 1))


def shorten(value: Any, limit: int = ECHO_LIMIT) -> str:
    """``value`` (a string as it is, anything else as its ``repr``) cut to about ``limit`` characters for a
    message: its start and end around the count of characters cut.

    >>> shorten("x" * 1000, 40)
    'xxxxxxxxxxxx…(980 characters cut)…xxxxxxxx'
    >>> shorten("short")
    'short'
    """
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    keep = max(limit - 20, 8)
    head, tail = keep * 3 // 5, keep - keep * 3 // 5
    return f"{text[:head]}…({len(text) - head - tail} characters cut)…{text[-tail:]}"


def _cut_runs(text: str) -> str:
    """``text`` with every run of over :data:`RUN_LIMIT` non-space characters (an echoed value, a line of a
    file) :func:`shorten`-ed to that length."""
    return _LONG_RUN.sub(lambda m: shorten(m.group(0), RUN_LIMIT), text)


def _cut(text: str) -> str:
    """``text`` with long runs cut (:func:`_cut_runs`) and the whole kept to :data:`MESSAGE_LIMIT` characters,
    its end (the fix) included."""
    text = _cut_runs(text)
    if len(text) <= MESSAGE_LIMIT:
        return text
    cut = len(text) - MESSAGE_LIMIT + 30
    return f"{text[:MESSAGE_LIMIT // 2]}…({cut} characters cut)…{text[MESSAGE_LIMIT // 2 + cut:]}"


def one_line(error: BaseException) -> tuple[str, int]:
    """The one-line message the CLI prints for ``error``, and its exit code.

    2 for anything the user can fix (pear_lens's own errors, and the operating
    system's: permissions, missing files, a folder where a file should be, a full
    disk, a file too large, an undecodable file, also when a library wraps it in its
    own exception type); 1 for anything else, which is a bug in pear_lens (``--debug``
    shows its traceback for the report). A long echoed value is cut (:func:`_cut`), so a
    message stays readable whatever the user passed.
    """
    wrapped = None if isinstance(error, (PearLensError, OSError)) else _OS_ERROR_IN_TEXT.search(str(error))
    if wrapped is not None:  # e.g. safetensors' SafetensorError around an OSError: the operating system's error
        code = int(wrapped.group(1))
        error = OSError(code, os.strerror(code))
    if isinstance(error, PearLensError):
        text, code = str(error), 2
    elif isinstance(error, OSError):
        name = getattr(error, "filename", None)
        what = error.strerror or str(error)
        hint = _ERRNO_HINTS.get(error.errno) or _OS_HINTS.get(type(error).__name__, "check the path")
        text = f"{name}: {what.lower()}; {hint}" if name else f"{what}; {hint}"
        code = 2
    elif isinstance(error, UnicodeDecodeError):
        text, code = f"a file is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8", 2
    else:
        text = (f"unexpected {type(error).__name__}: {error} (a bug in pear_lens: rerun with --debug or "
                "PEAR_LENS_DEBUG=1 for the traceback and report it)")
        code = 1
    return _cut(" ".join(text.split())), code


ASCII_FALLBACK = "pear_lens_ascii"
"""The codec error handler :func:`safe_output` installs: a character the stream cannot encode is written in ASCII."""
ASCII_SPELLING = {
    "Δπ": "dpi", "τ": "tau", "ρ": "rho", "π": "pi", "Δ": "delta ", "α": "alpha", "σ": "sigma", "μ": "mu",
    "→": "->", "←": "<-", "↔": "<->", "⇒": "=>", "≥": ">=", "≤": "<=", "≠": "!=", "≈": "~", "±": "+/-",
    "×": "x", "·": "*", "…": "...", "–": "-", "—": "-", "−": "-", "‘": "'", "’": "'", "“": '"', "”": '"',
    "✓": "ok", "✗": "x", "∞": "inf", "√": "sqrt", "²": "^2", "°": " deg", "§": "S", "•": "*", "∈": " in ",
}
"""How pear_lens's non-ASCII symbols read in ASCII (longest first: "Δπ" before "Δ"). Anything else falls to
its accent-free letter (é → e) or "?"."""


def ascii_text(text: str) -> str:
    """``text`` in ASCII, spelled by :data:`ASCII_SPELLING` (τ → tau, Δπ → dpi, ρ → rho, → → ->).

    >>> ascii_text("τ of L0.H1 → 0.95; Δπ ≥ 0")
    'tau of L0.H1 -> 0.95; dpi >= 0'
    """
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if ord(c) < 128:
            out.append(c)
            i += 1
            continue
        pair = text[i:i + 2]
        if pair in ASCII_SPELLING:
            out.append(ASCII_SPELLING[pair])
            i += 2
            continue
        plain = ASCII_SPELLING.get(c)
        if plain is None:
            plain = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode("ascii") or "?"
        out.append(plain)
        i += 1
    return "".join(out)


def _ascii_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return ascii_text(error.object[error.start:error.end]), error.end


def safe_output(*streams: Any) -> None:
    """Make printing to ``streams`` (default: stdout and stderr) unable to fail on a character their encoding
    lacks (``PYTHONIOENCODING=latin-1``, an ASCII locale): such characters are written in ASCII
    (:func:`ascii_text`) instead of raising ``UnicodeEncodeError``, which after an artifact is committed would
    turn a success into a failure. Characters the encoding has are written as they are."""
    codecs.register_error(ASCII_FALLBACK, _ascii_fallback)
    for stream in streams or (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:
            continue
        try:
            reconfigure(errors=ASCII_FALLBACK)
        except (ValueError, OSError, AttributeError):  # a closed or detached stream: nothing will print there
            pass


DEBUG_VARIABLE = "PEAR_LENS_DEBUG"


def debug_enabled(flag: bool = False) -> bool:
    """The one debug switch: ``--debug``, or ``PEAR_LENS_DEBUG`` set to anything but empty or ``0``."""
    return bool(flag) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class _QuietWhenGone:
    """A stdout whose reader may leave (``pear-lens ... | head -1``): once a write or flush meets a broken pipe,
    the rest of the output is dropped, and the file descriptor is pointed at ``/dev/null`` so that the
    interpreter's last flush finds somewhere to write."""

    def __init__(self, stream: Any):
        self._stream, self._gone = stream, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self._gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor (a test's capture): nothing to point
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_when_gone() -> Iterator[None]:
    """Within the block, printing to stdout never fails because its reader left (a closed pipe): the output
    is dropped and the work goes on, so a command's exit code is its work's, not its printing's."""
    original = sys.stdout
    sys.stdout = _QuietWhenGone(original)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = original


class CopyTaskTooWeak(PearLensError):
    """The unmodified model copies too little of its proxy task for head scores to mean anything."""
