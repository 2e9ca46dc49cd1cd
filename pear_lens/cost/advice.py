"""How many workers a study needs to end in time: jobs, minutes per job and a deadline, in whole jobs.

A job runs on one worker from start to end, so a worker finishes ``floor(deadline / minutes per job)`` jobs
before the deadline and ``jobs`` jobs need ``ceil(jobs / that)`` workers; no number of workers helps a job
longer than the deadline. The executors that run a study's jobs (``local``: this process, one after another;
``submitit-local``, ``slurm``, ``ray``: several workers) are :mod:`pear_lens.jobs`'s; the advice only names them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pear_lens.errors import PearLensError

EXECUTORS_FOR_MANY = "--executor slurm (or ray)"
"""What the advice names when one worker is not enough."""


@dataclass(frozen=True)
class WorkerAdvice:
    """Workers needed for ``jobs`` jobs of ``seconds_per_job`` each to end within ``deadline_hours``."""

    jobs: int
    seconds_per_job: float
    deadline_hours: float | None
    kind: str = "job"
    device: str = ""
    """Where the per-job time was measured: each worker needs a device like it."""

    @property
    def local_hours(self) -> float:
        """Hours one worker takes for every job, one after another."""
        return self.jobs * self.seconds_per_job / 3600

    @property
    def jobs_per_worker(self) -> int:
        """Jobs one worker ends within the deadline (0: a job alone outlasts it; no deadline: every job)."""
        if self.deadline_hours is None:
            return self.jobs
        return int(self.deadline_hours * 3600 // self.seconds_per_job) if self.seconds_per_job > 0 else self.jobs

    @property
    def feasible(self) -> bool:
        return self.jobs_per_worker >= 1

    @property
    def workers(self) -> int | None:
        """Workers needed (None: no number is enough, a job alone outlasts the deadline)."""
        if not self.feasible:
            return None
        return max(1, math.ceil(self.jobs / self.jobs_per_worker))

    @property
    def executor(self) -> str:
        """``local`` when one worker is enough, else the executors that run several."""
        return "local" if self.workers == 1 else EXECUTORS_FOR_MANY.removeprefix("--executor ")

    def __str__(self) -> str:
        minutes = self.seconds_per_job / 60
        jobs = f"{self.jobs} {self.kind} job{'s' if self.jobs != 1 else ''} of ~{minutes:.1f} min each"
        local = f"local (1 worker) would take {_hours(self.local_hours)}"
        where = f" on {self.device}" if self.device else ""
        if self.deadline_hours is None:
            return f"{jobs}{where}: {local}"
        within = f"to finish in {_hours(self.deadline_hours)}"
        if not self.feasible:
            return (f"{jobs}{where}: one job alone takes longer than the deadline, so no number of workers finishes "
                    f"{within}; shorten the jobs (fewer steps, items or settings) or use a faster device")
        if self.workers == 1:
            return f"{jobs}{where} need 1 worker {within}: {local}; --executor local is enough"
        return (f"{jobs}{where} need {self.workers} workers {within}; {local}; use {EXECUTORS_FOR_MANY} with "
                f"--workers {self.workers}, each worker on a device like this one")


def _hours(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def advise_workers(jobs: int, seconds_per_job: float | int, deadline_hours: float | int | None = None, *,
                   kind: str = "job", device: str = "") -> WorkerAdvice:
    """The workers ``jobs`` jobs of ``seconds_per_job`` each need to end within ``deadline_hours``.

    >>> advice = advise_workers(40, 30 * 60, 5, kind="train")
    >>> advice.workers, advice.local_hours
    (4, 20.0)
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise PearLensError(f"the study needs at least 1 job, got {jobs!r}")
    if not (seconds_per_job >= 0 and math.isfinite(seconds_per_job)):
        raise PearLensError(f"seconds per job must be a finite number >= 0, got {seconds_per_job!r}")
    if deadline_hours is not None and not (deadline_hours > 0 and math.isfinite(deadline_hours)):
        raise PearLensError(f"the deadline must be a positive number of hours, got {deadline_hours!r}")
    return WorkerAdvice(jobs, float(seconds_per_job), None if deadline_hours is None else float(deadline_hours), kind,
                        device)
