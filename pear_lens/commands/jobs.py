"""``pear-lens jobs STUDY``: where a study's jobs stand, and (``--run``) run the ones not done with an executor.

A study's launcher (a study script, or your own code calling :func:`pear_lens.jobs.run_study`) writes its job list
to ``STUDY/jobs/study.json``; this command reads it, so any saved study can be resumed here on another executor,
e.g. ``pear-lens jobs results/my_study --run --executor slurm --workers 20 --partition gpu --gpus-per-worker 1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pear_lens.config import option
from pear_lens.jobs.executors import ExecutorOptions


@dataclass(frozen=True)
class JobsConfig(ExecutorOptions):
    """Settings of ``pear-lens jobs``."""

    study: Path = option(Path("."), help="the study folder (it holds jobs/study.json)", positional=True)
    run: bool = option(False, help="run every job that is not done (default: only say where each job stands)")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "study", Path(self.study))


def jobs(config: JobsConfig) -> None:
    """Print the study's status (after running it, with --run); an error when a job failed, changed or is damaged."""
    from pear_lens.errors import PearLensError
    from pear_lens.jobs import Study, run_study, study_status

    study = Study.load(config.study)
    if config.run:
        result = run_study(study, ExecutorOptions(**{k: getattr(config, k) for k in
                                                     ExecutorOptions.__dataclass_fields__}))
        print(result)
        status = result.status
    else:
        status = study_status(study)
        print(status)
    bad = {s: n for s, n in status.counts().items() if s in ("failed", "changed", "damaged")}
    if bad:
        raise PearLensError(", ".join(f"{n} job{'s' * (n > 1)} {s}" for s, n in bad.items()) +
                            " (listed above, each with what to do)")
