"""``pear-lens estimate``: what the head scan, one training and an evaluation of a model should take on a device,
and the workers a study of many such jobs needs to end in time.

The work is the one the other commands would run with the same options (the scan's proxy task as ``discover``
takes it, the recipe as ``train`` takes it, the evaluation's size as ``eval`` takes it); the prediction is
:func:`pear_lens.cost.estimate_cost`'s: the passes counted from the code, each kind timed briefly on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pear_lens.config import option
from pear_lens.cost import STAGES, EvalWork
from pear_lens.errors import PearLensError
from pear_lens.models.loaded import Placement
from pear_lens.models.registry import DEFAULT_MODEL
from pear_lens.proxy_task import ProxyTask
from pear_lens.recipe import Recipe
from pear_lens.text_formats import Heads

if TYPE_CHECKING:
    from pear_lens.cost import CostEstimate, WorkerAdvice

JobKind = Literal["scan", "train", "eval"]


@dataclass(kw_only=True)
class EstimateConfig(Placement):
    """Settings of ``pear-lens estimate``: the model and device, the work of each stage, and a study's size."""

    model: str = option(DEFAULT_MODEL,
                        help="registry name (see `pear-lens models`), local Hugging Face folder or hub id")
    stages: tuple[str, ...] = option(STAGES, help=f"stages to estimate, among {', '.join(STAGES)} (each is probed "
                                                  "on the device, so fewer stages take less time)")
    scan: ProxyTask = option(default_factory=ProxyTask, prefix="scan.",
                             help="the proxy task the head scan scores on (`pear-lens discover`'s options)")
    train: Recipe = option(default_factory=Recipe, prefix="train.",
                            help="the training recipe (`pear-lens train`'s options)")
    train_heads: Heads = option((), flag="train.heads",
                                help="the heads the training will train: the backward pass reaches down to the lowest "
                                     "of them (none: down to layer 0, an upper bound)")
    evaluation: EvalWork = option(default_factory=EvalWork, prefix="eval.", help="the evaluation's size")
    study_jobs: int | None = option(None, help="a study of this many jobs of --job-kind: say how many workers it "
                                               "needs to end within --deadline-hours")
    job_kind: JobKind = option("train", help="what each of the study's jobs runs (it also loads the model)")
    deadline_hours: float | None = option(None, help="the hours the study must end within (with --study-jobs)")
    budget: float = option(1.0, help="about how many seconds each probe series may run on the device (more: a "
                                     "steadier estimate)")

    def __post_init__(self) -> None:
        Placement.__post_init__(self)  # checks every plain field's type too
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise PearLensError(f"--stages takes some of {', '.join(STAGES)}, got {','.join(self.stages) or 'none'}")
        if self.job_kind not in STAGES:
            raise PearLensError(f"--job-kind must be one of {', '.join(STAGES)}, got {self.job_kind!r}")
        if self.study_jobs is not None and self.study_jobs < 1:
            raise PearLensError(f"--study-jobs must be at least 1, got {self.study_jobs}")
        if self.deadline_hours is not None and not self.deadline_hours > 0:
            raise PearLensError(f"--deadline-hours must be a positive number of hours, got {self.deadline_hours}")
        if self.deadline_hours is not None and self.study_jobs is None:
            raise PearLensError("--deadline-hours is the deadline of a study: give its number of jobs with "
                                "--study-jobs")
        if self.study_jobs is not None and self.job_kind not in self.stages:
            raise PearLensError(f"--job-kind {self.job_kind} is not among --stages {','.join(self.stages)}: add it")
        if not self.budget > 0:
            raise PearLensError(f"--budget must be a positive number of seconds, got {self.budget}")


def estimate(config: EstimateConfig) -> tuple["CostEstimate", "WorkerAdvice | None"]:
    """Load the model on the device, estimate the stages and, given a study's size, advise on its workers."""
    from pear_lens.cost import estimate_cost

    config.check_placement()
    result = estimate_cost(config.model, task=config.scan, recipe=config.train, heads=config.train_heads,
                           evaluation=config.evaluation, stages=config.stages, budget=config.budget,
                           **config.load_options())
    advice = None
    if config.study_jobs is not None:
        advice = result.advise(config.study_jobs, config.job_kind, config.deadline_hours)
    return result, advice
