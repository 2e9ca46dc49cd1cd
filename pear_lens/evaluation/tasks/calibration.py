"""Per-model task settings chosen on the baseline model only.

A calibration measures the *baseline* accuracy of each prompt style and task
size on calibration items (a seed disjoint from evaluation seeds;
:func:`choose_style`, :func:`choose_size`) and keeps, in ``data/calibration.json``
(shipped with the package), the prompt style with the best
baseline accuracy, then the task size whose accuracy is closest to 50% inside
the 20-80% band, so there is room to both improve and degrade. Evaluation
defaults read that file; models not in it fall back to the task defaults.
"""
from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.prompts import candidate_styles, default_style
from pear_lens.evaluation.tasks import TASKS, TaskName, TaskSettings

CALIBRATION_FILE = "calibration.json"
TARGET = (0.2, 0.8)
CALIBRATION_SEED = 1000
"""Calibration items use seeds from here on; evaluation uses small seeds, so no item is both tuned on and reported."""

# task sizes tried, easiest first (KV: pairs of 3-digit numbers; MDQA: documents; counterfactual: context sentences)
SIZE_LADDER: dict[TaskName, tuple[int, ...]] = {
    TaskName.KV: (2, 3, 4, 6, 8, 10, 14, 20),
    TaskName.MDQA: (2, 3, 5, 7, 10, 15),
    TaskName.COUNTERFACTUAL: (1, 2, 3, 5, 8, 12),
}


def calibration_path() -> Path:
    return Path(str(resources.files("pear_lens.evaluation.tasks").joinpath("data").joinpath(CALIBRATION_FILE)))


def load_calibration(path: str | Path | None = None) -> dict[str, Any]:
    """The calibration file (empty when none was written yet)."""
    path = Path(path) if path else calibration_path()
    if not path.exists():
        return {"models": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise PearLensError(f"{path} is corrupt ({e}); reinstall pear_lens (the file ships with it) or pass a calibration of your own") from None


def settings_for(model_name: str, task: TaskName, tokenizer, calibration: dict[str, Any] | None = None) -> TaskSettings:
    """Calibrated settings of ``task`` for ``model_name``, else the task default in the tokenizer's default style."""
    calibration = load_calibration() if calibration is None else calibration
    chosen = calibration.get("models", {}).get(model_name, {}).get("tasks", {}).get(task.value, {}).get("chosen")
    if chosen:
        return TaskSettings(**chosen)
    return replace(TASKS[task].default, prompt_style=default_style(tokenizer).value)


Measure = Callable[[TaskSettings], tuple[float, int]]
"""Baseline accuracy and number of items for one setting."""


def choose_style(task: TaskName, tokenizer, base: TaskSettings, measure: Measure) -> tuple[TaskSettings, list[dict]]:
    """Try every candidate style at the default size; keep the most accurate (ties: the earlier, plain first)."""
    trials = []
    best: tuple[float, TaskSettings] | None = None
    for style in candidate_styles(tokenizer, TASKS[task].has_prefix):
        settings = replace(base, prompt_style=style.value)
        acc, n = measure(settings)
        trials.append({"prompt_style": style.value, "n_context": settings.n_context, "accuracy": acc, "n": n})
        if best is None or acc > best[0]:
            best = (acc, settings)
    assert best is not None
    return best[1], trials


def choose_size(task: TaskName, base: TaskSettings, measure: Measure,
                ladder: Sequence[int] | None = None) -> tuple[TaskSettings, float, int, list[dict]]:
    """Walk the size ladder (easiest first) and keep the size whose accuracy is closest to 50% within the band.

    Stops once accuracy falls below the band: larger sizes are only harder.
    Without any size in the band, the one nearest to it is kept (and flagged
    by the caller through ``in_range``).
    """
    ladder = ladder or SIZE_LADDER[task]
    trials = []
    for size in ladder:
        settings = replace(base, n_context=size)
        acc, n = measure(settings)
        trials.append({"prompt_style": settings.prompt_style, "n_context": size, "accuracy": acc, "n": n})
        if acc < TARGET[0]:
            break

    def distance(t: dict) -> tuple[float, float]:
        outside = max(TARGET[0] - t["accuracy"], t["accuracy"] - TARGET[1], 0.0)
        return outside, abs(t["accuracy"] - 0.5)

    best = min(trials, key=distance)
    return replace(base, n_context=best["n_context"]), best["accuracy"], best["n"], trials


def in_range(accuracy: float) -> bool:
    return TARGET[0] <= accuracy <= TARGET[1]


