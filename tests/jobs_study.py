"""A tiny study for the job-engine tests (tests/test_jobs.py): head scans of tiny-llama, one job per proxy-task
seed, a report built from their outputs, and a job that can be told to stall halfway or to fail.

Its functions are what the workers import (``tests.jobs_study:scan``), in this process, in submitit's
subprocesses and in Ray's workers alike.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pear_lens.io import atomic_write_json, atomic_write_text
from pear_lens.jobs import Job, Study

SEEDS = (0, 1, 2, 3)


def scan(root: Path, seed: int, out: str) -> None:
    """Path-patching scores of every head of tiny-llama on a small proxy task drawn from ``seed``."""
    from pear_lens.mediation import score_heads
    from pear_lens.models import load_model
    from pear_lens.proxy_task import ProxyTask

    scores = score_heads(load_model("tiny-llama"), ProxyTask(settings=((2, 4),), seed=seed), method="path",
                         progress=False, copy_check="off")
    atomic_write_json(root / out, {"seed": seed, "scores": scores.scores.tolist()})
    _count(root, f"scan_s{seed}")


def slow(root: Path, out: str, stall: str = "", fail: bool = False) -> None:
    """Writes half its output, then (when the file ``stall`` exists) waits until it is gone; then finishes the
    output. ``fail``: raise instead. A worker killed while it waits leaves the half output behind."""
    path = root / out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("first half\n")  # not atomic, on purpose: a killed job's partial output
    if stall:
        atomic_write_text(root / f"{stall}.started", str(os.getpid()))  # whole: a reader never sees it empty
        while (root / stall).exists():
            time.sleep(0.05)
    if fail:
        raise ValueError("the data for this job is malformed\nline 2 of the message")
    atomic_write_text(path, "first half\nsecond half\n")
    _count(root, "slow")


def _count(root: Path, name: str) -> None:
    """One line per completed run of a job, appended (O_APPEND: whole lines from concurrent workers)."""
    with open(root / "completions.log", "a") as f:
        f.write(f"{name}\n")


def completions(root: Path) -> list[str]:
    path = root / "completions.log"
    return sorted(path.read_text().split()) if path.is_file() else []


def study(root: Path, *, stall: str = "", fail: bool = False) -> Study:
    jobs = [Job(f"scan_s{s}", "tests.jobs_study:scan", {"seed": s, "out": f"scans/s{s}.json"},
                outputs=(f"scans/s{s}.json",), key={"model": "tiny-llama"}) for s in SEEDS]
    jobs.append(Job("slow", "tests.jobs_study:slow", {"out": "slow.txt", "stall": stall, "fail": fail},
                    outputs=("slow.txt",)))
    return Study(root, jobs)


def report(root: Path) -> Path:
    """The study's report: each seed's top head and the mean score per head, from the outputs alone."""
    rows = [json.loads((root / f"scans/s{s}.json").read_text()) for s in SEEDS]
    n_l, n_h = len(rows[0]["scores"]), len(rows[0]["scores"][0])
    mean = [[sum(r["scores"][l][h] for r in rows) / len(rows) for h in range(n_h)] for l in range(n_l)]
    top = {r["seed"]: max(((l, h) for l in range(n_l) for h in range(n_h)), key=lambda lh: r["scores"][lh[0]][lh[1]])
           for r in rows}
    return atomic_write_json(root / "report.json", {"top_head_per_seed": top, "mean": mean})
