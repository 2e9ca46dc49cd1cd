"""What the pipeline's stages cost on a device: a model of their time and memory, and the workers a study needs.

The head scan, one training and an evaluation are counted pass by pass from the code that runs them
(:mod:`~pear_lens.cost.work`: how many forwards, of what shapes, through how many blocks); each kind of pass is
timed briefly on the device (:mod:`~pear_lens.cost.probes`) and priced per call, per block and per GFLOP;
:func:`estimate_cost` adds them up into a :class:`CostEstimate`, and :func:`advise_workers` turns a study's job
count and deadline into workers and an executor. ``pear-lens estimate`` prints both.
"""
from __future__ import annotations

from pear_lens.cost.advice import WorkerAdvice, advise_workers
from pear_lens.cost.estimate import STAGES, CostEstimate, EvalWork, StageCost, estimate_cost
from pear_lens.cost.shape import ModelShape
from pear_lens.cost.work import Kind, Pass

__all__ = ["STAGES", "CostEstimate", "EvalWork", "Kind", "ModelShape", "Pass", "StageCost", "WorkerAdvice",
           "advise_workers", "estimate_cost"]
