"""A study as a list of pure, idempotent jobs, and the engines that run them (local, submitit/Slurm, Ray).

>>> from pear_lens.jobs import Job, Study, run_study
>>> # study = Study("results/my_study", [Job("scan_s0", "my_study:scan", {"seed": 0}, outputs=("scans/s0",))])
>>> # print(run_study(study, executor="submitit-local", workers=2))
"""
from pear_lens.jobs.executors import EXECUTORS, ExecutorName, ExecutorOptions, StudyRun, run_study
from pear_lens.jobs.job import Job, Outcome, Study, drain, run_job
from pear_lens.jobs.status import StudyStatus, study_status

__all__ = ["EXECUTORS", "ExecutorName", "ExecutorOptions", "Job", "Outcome", "Study", "StudyRun", "StudyStatus",
           "drain", "run_job", "run_study", "study_status"]
