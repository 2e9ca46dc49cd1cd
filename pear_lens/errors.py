"""One exception type for every mistake a user can fix.

The CLI prints these as a one-line message instead of a traceback; the message
always says what to do next.
"""
from __future__ import annotations

import errno
import os
import re


class PearLensError(ValueError):
    """Bad input or a missing prerequisite, with the fix in the message."""


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


def one_line(error: BaseException) -> tuple[str, int]:
    """The one-line message the CLI prints for ``error``, and its exit code.

    2 for anything the user can fix (pear_lens's own errors, and the operating
    system's: permissions, missing files, a folder where a file should be, a full
    disk, a file too large, an undecodable file, also when a library wraps it in its
    own exception type); 1 for anything else, which is a bug in pear_lens (``--debug``
    shows its traceback for the report).
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
    return " ".join(text.split()), code


DEBUG_VARIABLE = "PEAR_LENS_DEBUG"


def debug_enabled(flag: bool = False) -> bool:
    """The one debug switch: ``--debug``, or ``PEAR_LENS_DEBUG`` set to anything but empty or ``0``."""
    return bool(flag) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


class CopyTaskTooWeak(PearLensError):
    """The unmodified model copies too little of its proxy task for head scores to mean anything."""
