"""Executors: who runs a study's jobs. Each starts ``workers`` copies of :func:`pear_lens.jobs.job.drain`; the job
locks on the study's folder, not the engine, decide which worker runs which job.

- ``local``: in this process, one job after another (the default; what the studies always did);
- ``submitit-local``: submitit's local executor, ``workers`` subprocesses on this machine (no cluster needed);
- ``slurm``: submitit on a Slurm cluster, one array task per worker (``--partition``, ``--gpus-per-worker``,
  ``--timeout-min``); the study folder must be on a file system every node sees;
- ``ray``: Ray tasks, on the cluster at ``--ray-address`` or on a local Ray started for the run (fractional
  ``--gpus-per-worker`` allowed); a worker Ray retries after its process died finds its finished jobs done.

submitit and Ray are optional extras (``pip install 'pear_lens[slurm]'`` / ``'pear_lens[ray]'``); without them
the executor says so in one line. No scheduler, queue or lock server of pear_lens's own: the engines schedule,
``flock`` on the study folder keeps each job to one worker.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.jobs.job import LEDGER, Study, drain
from pear_lens.jobs.status import StudyStatus, study_status


class ExecutorName(str, Enum):
    LOCAL = "local"
    """In this process, one job after another."""
    SUBMITIT_LOCAL = "submitit-local"
    """submitit's local executor: subprocesses on this machine."""
    SLURM = "slurm"
    """submitit on a Slurm cluster."""
    RAY = "ray"
    """Ray: a cluster at --ray-address, or a local Ray."""


@dataclass(frozen=True)
class ExecutorOptions:
    """How a study's jobs are run (the ``--executor`` options of every study launcher)."""

    executor: ExecutorName | str = option(ExecutorName.LOCAL, cli_type=ExecutorName, help="who runs the jobs: local (this process), "
                                    "submitit-local, slurm (submitit) or ray")
    workers: int = option(1, help="workers running jobs side by side (local: always 1)")
    threads: int | None = option(None, help="torch threads per worker (default: the engine's; set it to get "
                                            "the same bytes under every executor)")
    partition: str | None = option(None, help="slurm: the partition")
    gpus_per_worker: float = option(0.0, help="slurm: GPUs per task (whole); ray: GPUs per task (may be "
                                              "fractional, e.g. 0.5)")
    cpus_per_worker: int = option(1, help="CPU cores per worker (slurm, ray)")
    mem_gb: float | None = option(None, help="slurm: memory per task in GB")
    timeout_min: int = option(24 * 60, help="slurm and submitit-local: a worker's time limit in minutes")
    ray_address: str | None = option(None, help="ray: the cluster's address (default: start a local Ray)")
    log_folder: Path | None = option(None, help="submitit: where its logs and pickles go (default: "
                                                "ROOT/jobs/.logs; on a cluster, a shared file system)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "executor", ExecutorName(self.executor))
        if self.workers < 1:
            raise PearLensError(f"--workers {self.workers}: give at least 1")
        if self.threads is not None and self.threads < 1:
            raise PearLensError(f"--threads {self.threads}: give at least 1")
        if self.gpus_per_worker < 0 or self.cpus_per_worker < 1:
            raise PearLensError("--gpus-per-worker must be >= 0 and --cpus-per-worker >= 1")
        if self.executor is ExecutorName.SLURM and self.gpus_per_worker != int(self.gpus_per_worker):
            raise PearLensError(f"--gpus-per-worker {self.gpus_per_worker:g}: Slurm gives whole GPUs; fractional "
                                "GPUs need --executor ray")
        if self.executor is ExecutorName.LOCAL and self.workers != 1:
            raise PearLensError(f"--workers {self.workers} with --executor local: local runs in this process, one "
                                "job after another; choose submitit-local or ray for several workers")
        if self.ray_address and self.executor is not ExecutorName.RAY:
            raise PearLensError("--ray-address is an option of --executor ray")


def _missing(extra: str, module: str) -> PearLensError:
    return PearLensError(f"--executor {extra} needs {module}, which is not installed: pip install "
                         f"'pear_lens[{'ray' if module == 'ray' else 'slurm'}]'")


def _worker_args(study: Study, opts: ExecutorOptions) -> list[tuple[Any, ...]]:
    jobs = [j.to_dict() for j in study.jobs]
    return [(str(study.root), jobs, i, opts.workers, opts.threads) for i in range(opts.workers)]


def _local(study: Study, opts: ExecutorOptions) -> list[str]:
    drain(*_worker_args(study, opts)[0])
    return []


def _submitit(study: Study, opts: ExecutorOptions) -> list[str]:
    try:
        import submitit
    except ImportError:
        raise _missing(opts.executor.value, "submitit") from None
    cluster = "local" if opts.executor is ExecutorName.SUBMITIT_LOCAL else "slurm"
    folder = Path(opts.log_folder or study.root / LEDGER / ".logs") / "%j"
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": opts.timeout_min, "cpus_per_task": opts.cpus_per_worker,
                              "name": f"pear-lens-{study.root.name}"}
    if cluster == "slurm":
        params.update(slurm_array_parallelism=opts.workers)
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.gpus_per_worker:
            params["gpus_per_node"] = int(opts.gpus_per_worker)
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
    ex.update_parameters(**params)
    args = _worker_args(study, opts)
    with ex.batch():  # one Slurm array of `workers` tasks
        handles = [ex.submit(drain, *a) for a in args]
    lost = []
    for i, h in enumerate(handles):
        try:
            h.result()
        except Exception as e:  # a worker killed or out of time: its job is rerun by the next launch
            lost.append(f"worker {i + 1} (submitit job {h.job_id}) ended early: {str(e).strip().splitlines()[-1:]}")
    return lost


def _ray(study: Study, opts: ExecutorOptions) -> list[str]:
    try:
        import ray
    except ImportError:
        raise _missing("ray", "ray") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if opts.ray_address:
            kwargs["address"] = opts.ray_address
        else:  # a local Ray for this run: as many CPUs as the workers ask for, the study's code on their path
            kwargs["num_cpus"] = opts.workers * opts.cpus_per_worker
            path = os.pathsep.join(p for p in [os.getcwd(), *sys.path] if p and Path(p).is_dir())
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        ray.init(**kwargs)
        started = True
    try:
        task = ray.remote(drain).options(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                                         max_retries=2)
        refs = [task.remote(*a) for a in _worker_args(study, opts)]
        lost = []
        for i, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a worker lost for good; its jobs stay pending
                lost.append(f"worker {i + 1} ended early: {str(e).strip().splitlines()[-1:]}")
        return lost
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[ExecutorName, Callable[[Study, ExecutorOptions], list[str]]] = {
    ExecutorName.LOCAL: _local,
    ExecutorName.SUBMITIT_LOCAL: _submitit,
    ExecutorName.SLURM: _submitit,
    ExecutorName.RAY: _ray,
}
"""Executor name → ``run(study, options) -> lines about workers lost``."""


@dataclass(frozen=True)
class StudyRun:
    """What a launch came to: the study's status after it, and the workers that ended early."""

    status: StudyStatus
    lost_workers: tuple[str, ...] = ()

    def __str__(self) -> str:
        return "\n".join([str(self.status), *self.lost_workers])


def run_study(study: Study, options: ExecutorOptions | None = None, **kwargs: Any) -> StudyRun:
    """Save the study's job list, run every job that is not done with the chosen executor, and return where the
    study stands (failed jobs with their error's last line; jobs left pending by a lost worker).

    >>> # run_study(study, executor="ray", workers=2)   # or ExecutorOptions(executor="slurm", workers=20, ...)
    """
    opts = options or ExecutorOptions(**kwargs)
    if options is not None and kwargs:
        raise PearLensError("give the executor's options either as an ExecutorOptions or as keywords, not both")
    study.root.mkdir(parents=True, exist_ok=True)
    study.save()
    lost = EXECUTORS[opts.executor](study, opts)
    return StudyRun(study_status(study), tuple(lost))
