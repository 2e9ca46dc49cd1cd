"""Atomic writing: every file and folder pear_lens writes appears whole or not at all.

Everything pear_lens writes goes through here so that an interrupted run never
leaves a half-written artifact: files are written to a temporary sibling and
moved into place with ``os.replace``; whole folders are built in a temporary
sibling (:func:`staged_dir`, :func:`staged_update`) and swapped in only when
complete, by one writer at a time (:mod:`pear_lens.output_lock`). :func:`check_output` holds the one rule about output folders: a
command never writes over one of its inputs, and ``--overwrite`` replaces only a
folder pear_lens wrote itself, of the same kind (its marker file says which).
Figures are written by :mod:`pear_lens.figure_files`. What a run folder holds, and which call writes each of its files,
is :mod:`pear_lens.runs`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator

from pear_lens.errors import PearLensError
from pear_lens.output_lock import OLD_INSIDE, old_folder, stage_folder, writing
from pear_lens.signals import deferred

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK
"""Every file of an artifact gets ordinary permissions (mkstemp, safetensors and kaleido create 0600)."""
DIR_MODE = 0o777 & ~_UMASK

MARKER = ".pear_lens.json"
"""Written into every folder a command creates: ``{"kind": ..., "pear_lens_version": ...}``."""
KINDS = {
    "run": "a discovery run folder (`pear-lens discover`)",
    "demo": "a demo folder (`pear-lens demo`)",
    "folded": "a folded Hugging Face model folder (`pear-lens apply`)",
    "eval": "an eval folder (`pear-lens eval`)",
    "report": "a report folder (`pear-lens eval-report`)",
    "compare": "a compare folder (`pear-lens compare`)",
}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else str(value)


def as_json(obj: Any) -> Any:
    """``obj`` as JSON reads it back: the one conversion pear_lens records with (tuples become lists, an Enum its
    value, a path and anything else JSON lacks its text), so a saved key compares equal to a fresh one."""
    return json.loads(json.dumps(obj, default=_plain))


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex: what pear_lens records to find a cut or edited file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; give the file ordinary permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_plain) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    For writers that insist on a file name (``safetensors``, ``plotly``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # whatever mode the writer chose
        os.replace(tmp, path)
    except OSError as e:
        if e.filename != str(tmp):
            raise
        raise OSError(e.errno, e.strerror, str(path)) from None  # the message names the file being written
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_safetensors(tensors: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file``; an I/O failure is raised as the ``OSError`` it wraps, naming the file
    (safetensors reports a full disk or a file too large as its own ``SafetensorError``)."""
    import re

    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        found = re.search(r"\(os error (\d+)\)", str(e))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """UTF-8 text of ``path``; an encoding problem is a one-line error naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PearLensError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason}); "
                            "save it as UTF-8") from None


# --------------------------------------------------------------------------- markers and the output rule


def write_marker(folder: str | os.PathLike, kind: str) -> None:
    from pear_lens import __version__

    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}")
    atomic_write_json(Path(folder) / MARKER, {"kind": kind, "pear_lens_version": __version__})


def _json_kind(path: Path) -> str | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def folder_kind(folder: str | os.PathLike) -> str | None:
    """Which pear_lens folder ``folder`` is (a key of :data:`KINDS`), or None if pear_lens did not write it.

    Folders written before the marker existed are recognised by the files only pear_lens writes
    (the ``kind`` of their JSON, or a report's or comparison's exact set of files).
    """
    from pear_lens import constants as c

    folder = Path(folder)
    marked = _json_kind(folder / MARKER)
    if marked is not None:
        return marked if marked in KINDS else None
    if _json_kind(folder / c.DISCOVERY_JSON) == "pear_lens discovery run":
        return "demo" if (folder / "demo_check.json").is_file() else "run"
    if _json_kind(folder / c.EVAL_JSON) == "pear_lens evaluation":
        return "eval"
    if _json_kind(folder / c.PEAR_NOTE_JSON) == "pear_lens folded model":
        return "folded"
    names = {p.name for p in folder.iterdir()}
    if {c.REPORT_TABLE_MD, c.REPORT_TABLE_HTML, c.EVAL_SUMMARY_CSV} <= names <= {
            c.REPORT_TABLE_MD, c.REPORT_TABLE_HTML, c.EVAL_SUMMARY_CSV, "figures", "run.json"}:
        return "report"
    if {c.COMPARE_CSV, c.COMPARE_SUMMARY_CSV, c.RELATIVE_DEPTH_HTML} <= names:
        return "compare"
    return None


def check_distinct(paths: Iterable[str | os.PathLike], what: str) -> None:
    """Refuse an input folder given twice under any spelling (``dir/./x``, a link): its results would count
    twice. ``what`` names the folders in the message (e.g. "eval folder")."""
    seen: dict[Path, Path] = {}
    for p in paths:
        p = Path(p)
        key = p.resolve()
        if key in seen:
            raise PearLensError(f"the {what} {p} is given twice ({seen[key]} and {p}): its results would count "
                                f"twice; give each {what} once")
        seen[key] = p


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_parent(out: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output whose folder cannot be written (a staged folder is built there)."""
    parent = _nearest_existing(out.parent)
    if not parent.is_dir():
        raise PearLensError(f"{flag} {out}: {parent} is a file, not a folder; choose another {flag} path")
    try:
        probe = tempfile.mkdtemp(prefix=".pear_lens-probe.", dir=parent)
    except OSError as e:
        raise PearLensError(f"{flag} {out}: cannot write in {parent} ({e.strerror}); choose a {flag} "
                            "folder you can write to") from None
    os.rmdir(probe)


def check_output(out: str | os.PathLike, *, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False, flag: str = "--out") -> Path:
    """The one rule for every folder a command creates; call it before any slow work.

    Refused: an output equal to, inside, or containing one of ``inputs``; the
    current folder or one above it; a non-empty folder without ``overwrite``; and,
    even with ``overwrite``, a folder that is not pear_lens's own folder of this ``kind``
    (pear_lens never deletes what it did not write). The parent must be writable.
    """
    out = Path(out)
    where = out.resolve()
    cwd = Path.cwd().resolve()
    if where == cwd or where in cwd.parents:
        raise PearLensError(f"{flag} {out} is the current folder (or holds it); give a new folder such as "
                            f"{flag} {out / 'pear-out'}")
    for given in inputs:
        if given is None or not os.path.exists(given):
            continue
        source = Path(given).resolve()
        if where == source:
            rel = "is"
        elif source in where.parents:
            rel = "lies inside"
        elif where in source.parents:
            rel = "contains"
        else:
            continue
        raise PearLensError(f"{flag} {out} {rel} the input {given}; a command never writes over its inputs, "
                            f"so choose a {flag} folder outside it")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise PearLensError(f"{flag} {out} exists and is not a folder; choose another {flag} path")
        if any(out.iterdir()):
            found = folder_kind(out)
            if found is None:
                raise PearLensError(f"{flag} {out} already exists and was not written by pear-lens; pear-lens never "
                                    f"replaces a folder it did not write: choose a new {flag} folder")
            if found != kind:
                raise PearLensError(f"{flag} {out} is {KINDS[found]}, not {KINDS[kind]}; --overwrite replaces only "
                                    f"a folder of the same kind: choose a new {flag} folder")
            if not overwrite:
                raise PearLensError(f"{flag} {out} already exists and is not empty ({KINDS[kind]}); choose a new "
                                    f"{flag} folder or pass --overwrite to replace it")
    check_writable_parent(out, flag)
    return out


def check_new_run_dir(out: str | os.PathLike, overwrite: bool, *, kind: str = "run",
                      inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """:func:`check_output` under its former name."""
    return check_output(out, kind=kind, inputs=inputs, overwrite=overwrite)


# --------------------------------------------------------------------------- building folders beside the old one


def normalise_permissions(root: Path) -> None:
    """Give every file and folder under ``root`` the same ordinary permissions."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, DIR_MODE)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, FILE_MODE)


def swap_in(stage: Path, out: Path) -> None:
    """Move the finished folder ``stage`` to ``out``: the old ``out`` aside first, then ``stage`` in, then the old
    one removed. ``out`` holds the old or the new folder at every instant a signal can reach (SIGINT and SIGTERM wait
    for the two renames; a failure of the second puts the old folder back); only SIGKILL between the renames can
    leave the old folder aside, and the next writer of ``out`` puts it back (:func:`pear_lens.output_lock.recover`)."""
    trash = None
    try:
        with deferred():
            if not (out.exists() or out.is_symlink()):
                os.replace(stage, out)
                return
            trash = old_folder(out)
            os.replace(out, trash / OLD_INSIDE)
            try:
                os.replace(stage, out)
            except BaseException:
                os.replace(trash / OLD_INSIDE, out)  # put the old folder back
                raise
    finally:
        if trash is not None and (out.exists() or out.is_symlink()):  # never the only copy
            shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, overwrite: bool = False, *, kind: str,
               inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling, then swap it in.

    Either the finished folder (with its ``kind`` marker) appears at ``out`` or
    nothing changes there.
    """
    with writing(out):  # held already by a command line run: from its first check
        out = check_output(out, kind=kind, inputs=inputs, overwrite=overwrite).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = stage_folder(out)
        try:
            yield stage
            write_marker(stage, kind)
            normalise_permissions(stage)
            swap_in(stage, out)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def staged_update(folder: str | os.PathLike, replaced: Iterable[str]) -> Iterator[Path]:
    """Add files to an existing folder atomically: copy it beside itself, without the files named in
    ``replaced`` (what the caller writes anew), yield the copy, then swap it in.

    A failure or Ctrl-C at any point leaves ``folder`` byte-identical.
    """
    with writing(folder):  # held already by a command line run: from its first check
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise PearLensError(f"{folder} is not a folder")
        check_writable_parent(folder, "folder")
        replaced = set(replaced)
        kind = folder_kind(folder)
        stage = stage_folder(folder)
        try:
            for child in folder.iterdir():
                if child.name in replaced:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.copytree(child, stage / child.name, symlinks=True)
                else:
                    shutil.copy2(child, stage / child.name, follow_symlinks=False)
            yield stage
            if kind is not None and not (stage / MARKER).exists():
                write_marker(stage, kind)  # a folder from before the marker: record what it is
            normalise_permissions(stage)
            swap_in(stage, folder)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
