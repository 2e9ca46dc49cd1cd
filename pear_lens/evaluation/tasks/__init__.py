"""The evaluation tasks: items a model answers from its context (or without one), made or read.

``kv``, ``mdqa`` and ``facts`` make or load items (``items``: what every item offers; JSONL); ``registry``
puts them behind one interface (:class:`TaskName`, :class:`TaskSettings`, :func:`generate_items`);
``prompts`` renders an item in the plain or chat style; ``calibration`` holds the per-model defaults chosen on
the baseline; ``scoring`` decides whether an answer is correct.
"""
from __future__ import annotations

from pear_lens.evaluation.tasks.registry import TASKS, TaskName, TaskSettings, TaskSpec, generate_items

__all__ = ["TASKS", "TaskName", "TaskSettings", "TaskSpec", "generate_items"]
