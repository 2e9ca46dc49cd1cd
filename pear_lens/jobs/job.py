"""A study as a list of jobs: each pure and idempotent, keyed by its function, arguments and inputs' hashes.

A :class:`Job` names a function (``"module:function"``, importable wherever a worker runs), its JSON arguments,
the files it reads (by path, recorded by hash) and the files or folders it writes, each written whole (atomically)
by the function. :func:`run_job` runs one job holding a lock of its own on the study's folder (a ``flock``: the
kernel drops it when a worker dies, however it dies) and, last, writes the job's receipt: its key and the hash of
every output. A job is done only when its receipt is there with the same key and its outputs still hash as
recorded, so a worker killed mid-job never leaves an output that counts as complete; the next launch runs that job
again from scratch. A receipt under another key, or an output changed since its receipt, is refused, never
overwritten: the files are the user's.

Layout of a study folder ``ROOT`` (paths in jobs are relative to it, so a study moves with its folder):

- ``jobs/study.json``: the job list, written by every launcher (the same bytes for the same study), so
  ``pear-lens jobs ROOT`` can report on and run a study without its code being imported first;
- ``jobs/NAME.json``: job ``NAME``'s receipt (deterministic bytes; commit it with the outputs);
- ``jobs/NAME.failed.json``: the last failed attempt (its error's last line), removed when the job succeeds;
- ``jobs/.runs/NAME.json``: where and how long it ran (host, pid, worker, seconds; not part of the results).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

from pear_lens.errors import PearLensError
from pear_lens.io import as_json, atomic_write_json, file_sha256
from pear_lens.output_lock import OutputBusy, writing

LEDGER = "jobs"
STUDY_JSON = "study.json"
FORMAT = 1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

State = Literal["done", "pending", "running", "failed", "changed", "damaged"]
"""A job's state: done (receipt and outputs agree), pending (never finished), running (a live worker holds its
lock), failed (its last attempt raised; the error is kept), changed (a receipt under another key: the study's
inputs or code changed), damaged (an output differs from its receipt: cut, edited or replaced)."""


def tree_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a folder as the sorted list of its files' relative paths and hashes."""
    if path.is_file():
        return file_sha256(path)
    lines = sorted(f"{p.relative_to(path).as_posix()}\t{file_sha256(p)}" for p in path.rglob("*") if p.is_file())
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def resolve(fn: str) -> Callable[..., Any]:
    """The function ``"module:name"`` names (imported here: in the worker that runs it)."""
    module, _, name = fn.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise PearLensError(f"cannot import the job function {fn!r} ({e}); a worker needs the study's code on its "
                            "Python path (install it, or run from the folder that holds it)") from None
    return obj


@dataclass(frozen=True)
class Job:
    """One unit of a study: ``fn(root, **kwargs)`` reads ``inputs`` and writes ``outputs`` (paths relative to the
    study folder ``root``), each output whole, and the same bytes each time it runs (pure, idempotent)."""

    name: str
    """Unique in its study; letters, digits, ``.``, ``_``, ``-`` (it names the receipt file)."""
    fn: str
    """``"module:function"``: the function a worker imports and calls as ``fn(root, **kwargs)``."""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    """JSON arguments (part of the key)."""
    outputs: tuple[str, ...] = ()
    """Files or folders the job writes, relative to the study folder."""
    inputs: tuple[str, ...] = ()
    """Files or folders it reads, relative to the study folder (recorded by SHA-256 in the key)."""
    key: Mapping[str, Any] = field(default_factory=dict)
    """Anything else its outputs depend on (a weight fingerprint, a plan's commit)."""

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.name):
            raise PearLensError(f"job name {self.name!r}: use letters, digits, '.', '_' and '-' (it names a file)")
        if ":" not in self.fn:
            raise PearLensError(f"job {self.name}: fn {self.fn!r} must read 'module:function'")
        if not self.outputs:
            raise PearLensError(f"job {self.name} names no output; a job is known to be done by its outputs")
        for p in (*self.outputs, *self.inputs):
            if Path(p).is_absolute() or ".." in Path(p).parts:
                raise PearLensError(f"job {self.name}: {p!r} must be a path inside the study folder (relative, "
                                    "no '..'), so the study can move with its folder")
        object.__setattr__(self, "kwargs", as_json(dict(self.kwargs)))
        object.__setattr__(self, "key", as_json(dict(self.key)))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "inputs", tuple(self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "fn": self.fn, "kwargs": self.kwargs, "outputs": list(self.outputs),
                "inputs": list(self.inputs), "key": self.key}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Job":
        return cls(name=d["name"], fn=d["fn"], kwargs=d.get("kwargs", {}), outputs=tuple(d["outputs"]),
                   inputs=tuple(d.get("inputs", ())), key=d.get("key", {}))

    def full_key(self, root: Path) -> dict[str, Any]:
        """What the outputs depend on: the function, its arguments, the inputs' hashes and the job's own key."""
        hashes = {}
        for p in self.inputs:
            path = root / p
            if not path.exists():
                raise PearLensError(f"job {self.name}: its input {path} does not exist; make it first")
            hashes[p] = tree_sha256(path)
        return {"fn": self.fn, "kwargs": self.kwargs, "inputs": hashes, **self.key}


@dataclass(frozen=True)
class Study:
    """A folder and the jobs that fill it."""

    root: Path | str
    jobs: Sequence[Job]

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())
        object.__setattr__(self, "jobs", tuple(self.jobs))
        seen: dict[str, str] = {}
        for j in self.jobs:
            if j.name in seen:
                raise PearLensError(f"two jobs are named {j.name!r}; job names must be unique in a study")
            seen[j.name] = j.name
        outs = [o for j in self.jobs for o in j.outputs]
        if len(set(outs)) != len(outs):
            dup = sorted({o for o in outs if outs.count(o) > 1})
            raise PearLensError(f"{', '.join(dup)}: written by more than one job; give each output one job")

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER

    def save(self) -> Path:
        """Write ``jobs/study.json`` (same study, same bytes; unchanged when already so)."""
        path = self.ledger / STUDY_JSON
        text = json.dumps({"format": FORMAT, "jobs": [j.to_dict() for j in self.jobs]}, indent=1) + "\n"
        if not (path.is_file() and path.read_text(encoding="utf-8") == text):
            atomic_write_json(path, json.loads(text))
        return path

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Study":
        """The study a launcher saved in ``ROOT/jobs/study.json``."""
        path = Path(root) / LEDGER / STUDY_JSON
        if not path.is_file():
            raise PearLensError(f"{root} holds no study ({path} is missing); a study's launcher writes it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
            return cls(Path(root), tuple(Job.from_dict(d) for d in data["jobs"]))
        except (ValueError, KeyError, TypeError) as e:
            raise PearLensError(f"{path} is not a pear_lens study file ({e}); restore it or rerun its launcher") \
                from None


# --------------------------------------------------------------------------- receipts


def receipt_path(root: Path, job: Job) -> Path:
    return root / LEDGER / f"{job.name}.json"


def failure_path(root: Path, job: Job) -> Path:
    return root / LEDGER / f"{job.name}.failed.json"


def run_log_path(root: Path, job: Job) -> Path:
    return root / LEDGER / ".runs" / f"{job.name}.json"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def finished_state(root: Path, job: Job, key: Mapping[str, Any] | None = None) -> tuple[State, str]:
    """``(state, why)`` from the receipt and outputs alone (never ``running``): done, changed, damaged, failed
    or pending. ``key``: the job's full key when already computed."""
    receipt = _read_json(receipt_path(root, job))
    if receipt is not None:
        if receipt.get("unreadable") or "key" not in receipt or "outputs" not in receipt:
            return "damaged", f"its receipt {receipt_path(root, job)} is not a pear_lens receipt"
        try:
            key = job.full_key(root) if key is None else key
        except PearLensError as e:
            return "changed", str(e)
        if receipt["key"] != as_json(key):
            fields = sorted(k for k in {*key, *receipt["key"]} if receipt["key"].get(k) != as_json(key).get(k))
            return "changed", (f"its receipt was made under another key ({', '.join(fields)} differ); move "
                               f"{receipt_path(root, job)} and its outputs aside to run it again")
        for rel, sha in receipt["outputs"].items():
            path = root / rel
            if not path.exists():
                return "damaged", f"its output {path} is missing; restore it (git) or move its receipt aside"
            if tree_sha256(path) != sha:
                return "damaged", (f"its output {path} is not what the job wrote (cut, edited or replaced); "
                                   "restore it (git) or move it and its receipt aside to run the job again")
        return "done", ""
    failed = _read_json(failure_path(root, job))
    if failed is not None:
        return "failed", str(failed.get("error", "unreadable failure record"))
    return "pending", ""


def is_running(root: Path, job: Job) -> bool:
    """Whether a live process holds the job's lock (checked with a lock attempt that is at once let go)."""
    import fcntl

    from pear_lens.output_lock import lock_path

    path = lock_path(receipt_path(root, job))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# --------------------------------------------------------------------------- running one job


@dataclass(frozen=True)
class Outcome:
    """What one attempt at a job came to in one worker."""

    job: str
    result: Literal["ran", "done", "busy", "failed", "refused"]
    """ran: it ran to its receipt here; done: its receipt was there; busy: another worker holds it; failed: it
    raised (``error``); refused: changed or damaged (``error`` says which and what to do)."""
    seconds: float = 0.0
    error: str = ""


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in "".join(traceback.format_exception_only(type(e), e)).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def run_job(root: str | os.PathLike, job: Job, *, worker: str = "") -> Outcome:
    """Run ``job`` of the study in ``root`` unless it is done or another worker holds it.

    Holding the job's lock, the receipt is checked again (another launcher may have just finished it); the
    function runs; every output must exist; the receipt is written last. An exception is recorded in
    ``jobs/NAME.failed.json`` (its last line) and returned, not raised: one failing job does not stop the others.
    """
    root = Path(root).resolve()
    receipt = receipt_path(root, job)
    try:
        with warnings.catch_warnings(record=True) as caught, writing(receipt, command=f"job {job.name}"):
            warnings.simplefilter("always")
            state, why = finished_state(root, job)
            if state == "done":
                return Outcome(job.name, "done")
            if state in ("changed", "damaged"):
                return Outcome(job.name, "refused", error=f"job {job.name}: {why}")
            for w in caught:  # a stale lock taken over: the worker that held it died mid-job
                print(f"job {job.name}: {w.message}", flush=True)
            start = time.perf_counter()
            try:
                key = job.full_key(root)
                resolve(job.fn)(root, **job.kwargs)
                missing = [o for o in job.outputs if not (root / o).exists()]
                if missing:
                    raise PearLensError(f"job {job.name} ended without writing {', '.join(missing)}")
                if job.full_key(root) != key:
                    raise PearLensError(f"job {job.name}'s inputs changed while it ran; run it again")
            except Exception as e:
                seconds = time.perf_counter() - start
                line = _last_line(e)
                atomic_write_json(failure_path(root, job), {
                    "job": job.name, "error": line, "host": socket.gethostname(), "pid": os.getpid(),
                    "worker": worker, "seconds": round(seconds, 3),
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "traceback": traceback.format_exception(type(e), e, e.__traceback__)[-20:]})
                return Outcome(job.name, "failed", seconds, line)
            seconds = time.perf_counter() - start
            atomic_write_json(receipt, {"job": job.name, "key": key,
                                        "outputs": {o: tree_sha256(root / o) for o in job.outputs}})
            with contextlib.suppress(FileNotFoundError):
                os.unlink(failure_path(root, job))
            atomic_write_json(run_log_path(root, job), {
                "job": job.name, "host": socket.gethostname(), "pid": os.getpid(), "worker": worker,
                "seconds": round(seconds, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            return Outcome(job.name, "ran", seconds)
    except OutputBusy:
        return Outcome(job.name, "busy")


def drain(root: str | os.PathLike, jobs: Sequence[Mapping[str, Any]], worker: int = 0, workers: int = 1,
          threads: int | None = None, poll: float = 0.5) -> list[dict[str, Any]]:
    """One worker's loop: try every job (starting at its own offset, so workers spread out), then wait for the
    jobs other workers held and take any whose holder died without finishing it. Returns each job's outcome.

    This is what every executor runs, ``workers`` times in parallel; the job locks decide who runs what, so two
    launchers on the same study, or a worker retried by its engine, never run a job twice to completion.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _drain(Path(root), [Job.from_dict(j) for j in jobs], worker, workers, poll)
    finally:
        torch.set_num_threads(before)  # the local executor runs in the caller's process


def _drain(root: Path, parsed: list[Job], worker: int, workers: int, poll: float) -> list[dict[str, Any]]:
    order = parsed[worker % max(len(parsed), 1):] + parsed[:worker % max(len(parsed), 1)]
    name = f"{worker + 1}/{workers}"
    outcomes: dict[str, Outcome] = {}
    for job in order:
        outcomes[job.name] = run_job(root, job, worker=name)
    busy = [j for j in order if outcomes[j.name].result == "busy"]
    while busy:
        time.sleep(poll)
        still = []
        for job in busy:
            out = run_job(root, job, worker=name)
            if out.result == "busy":
                still.append(job)
            else:
                outcomes[job.name] = out if out.result != "done" else Outcome(job.name, "done")
        busy = still
    return [dict(vars(outcomes[j.name])) for j in parsed]
