"""One writer per output, and the hidden copies a killed writer left beside it.

A command that writes ``out`` holds ``.{out.name}.pear-lock`` beside it (JSON: the owner's pid, host, command and
start time) from its first check to its last write, so a second command writing ``out`` is refused with one line
naming the first. The lock is an ``fcntl.flock`` on that file: the kernel releases it when its owner dies, however
it dies, and a record left behind by a dead owner is named and taken over. A record from another host (a shared
file system, where a ``flock`` may not reach) is never taken over: the message names the file to delete.

Folders are built beside ``out`` under names that say what they are (:func:`stage_folder`, :func:`old_folder`).
Holding the lock, a writer knows that such folders of its path belong to no live run, so it removes them, and
where a run died between a swap's two renames (only SIGKILL or a power cut can do that) it puts the old folder back.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

from pear_lens.errors import PearLensError

LOCK_SUFFIX = ".pear-lock"
STAGE_MARK = ".pear-stage."
"""A folder being built, beside the output it will replace: ``.{name}.pear-stage.XXXXXXXX``."""
OLD_MARK = ".pear-old."
"""Where a swap puts the old folder (as ``old`` inside it) until the new one is in place."""
OLD_INSIDE = "old"

_held: dict[Path, int] = {}
"""The outputs this process holds: resolved path -> the lock file's descriptor."""


class OutputBusy(PearLensError):
    """Another command is writing the same output."""


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of ``out``: beside it, so a swap of ``out`` never moves it."""
    out = Path(out)
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def stage_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` to build its next version in."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGE_MARK}", dir=out.parent))


def old_folder(out: Path) -> Path:
    """A new empty folder beside ``out`` to hold the old ``out`` during a swap."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD_MARK}", dir=out.parent))


def _describe(record: dict[str, Any]) -> str:
    return (f"{record.get('command') or 'a pear_lens process'} (pid {record.get('pid', '?')} on "
            f"{record.get('host', '?')}, started {record.get('started', '?')})")


def _read(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:  # empty (just created) or not ours
        return {}
    return record if isinstance(record, dict) else {}


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first."""
    created = []
    while not folder.exists() and folder != folder.parent:
        created.append(folder)
        folder = folder.parent
    for f in reversed(created):
        f.mkdir(exist_ok=True)
    return created


def _acquire(out: Path, command: str | None) -> int | None:
    """The lock file's descriptor, locked; None where no file can be made beside ``out`` (then nothing can be
    written there either, and the command's own checks say why in their words)."""
    path = lock_path(out)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise OutputBusy(f"{out} is being written by {_describe(owner)}; wait for it to finish or choose "
                             "another output") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its owner removed the file between our open and our lock: lock the new one
            os.close(fd)
            continue
        break
    owner = _read(fd)
    if owner:
        if owner.get("host") != socket.gethostname():
            os.close(fd)
            raise OutputBusy(f"{out} is locked by {_describe(owner)}, on another host; if that run has ended, "
                             f"delete {path}")
        state = "has ended" if not _alive(owner.get("pid")) else "no longer holds it"
        warnings.warn(f"{out}: taking over the stale lock {path} of {_describe(owner)}, which {state}", stacklevel=4)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
    return fd


def _release(out: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock_path(out))  # before the unlock, so a waiting writer never locks a file about to go
    os.close(fd)


def recover(out: Path) -> list[str]:
    """Remove what killed writers of ``out`` left beside it, put back an old ``out`` a swap left aside; say what
    was done (one phrase each). Call it only holding ``out``'s lock."""
    parent, done = out.parent, []
    if not parent.is_dir():
        return done
    name = glob.escape(out.name)
    for old in sorted(parent.glob(f".{name}{OLD_MARK}*")):
        inside = old / OLD_INSIDE
        if (inside.exists() or inside.is_symlink()) and not (out.exists() or out.is_symlink()):
            os.replace(inside, out)
            done.append(f"put back {out}, which a killed run had moved to {inside}")
    for leftover in sorted([*parent.glob(f".{name}{OLD_MARK}*"), *parent.glob(f".{name}{STAGE_MARK}*")]):
        shutil.rmtree(leftover, ignore_errors=True)
        done.append(f"removed {leftover}, left by a killed run")
    # folders of the same kind from before they were named (mkdtemp's 8 characters): named, never deleted
    earlier = re.compile(rf"\.{re.escape(out.name)}\.(old\.)?[a-z0-9_]{{8}}")
    for p in sorted(parent.iterdir()):
        if earlier.fullmatch(p.name) and p.is_dir():
            done.append(f"{p} may be a copy a killed pear_lens run left; delete it if you do not need it")
    return done


@contextlib.contextmanager
def writing(out: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold ``out`` for writing (re-entrant in one process); on entry, clean up after killed writers of it.

    A second holder in another process is refused with :class:`OutputBusy`, naming the first. ``command`` is how
    the owner is named in that message.
    """
    out = Path(out).resolve()
    if out in _held:
        yield out
        return
    try:
        created = _make_parents(out.parent)
    except OSError:  # a parent is a file, or cannot be written: the command's own checks say so
        created = []
    try:
        fd = _acquire(out, command)
    except BaseException:
        _remove_empty(created)
        raise
    if fd is None:
        _remove_empty(created)
        yield out
        return
    _held[out] = fd
    try:
        for line in recover(out):
            warnings.warn(line, stacklevel=3)
        yield out
    finally:
        del _held[out]
        _release(out, fd)
        if not (out.exists() or out.is_symlink()):
            _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
    for f in folders:  # deepest first
        try:
            f.rmdir()
        except OSError:
            return
