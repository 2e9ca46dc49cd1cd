"""A study's run time, predicted on the device it will run on: the measuring and the printing every study shares.

A study states only its work, as :class:`Stage` objects (training steps, and items of each task); the seconds a
training step and an item take are measured here on the loaded model (:func:`seconds_per_step`,
:func:`seconds_per_item`) or read from calibration (:func:`calibrated_seconds_per_item`), and an
:class:`Estimate` multiplies them out and prints minutes per stage. Its users:
:func:`studies.exploratory.estimate.estimate` (``python -m studies.evaluate_all --estimate``) and
:func:`studies.confirmatory.run.estimate` (``python -m studies.confirm --estimate``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from pear_lens.evaluation.tasks import TaskName

if TYPE_CHECKING:
    from pear_lens.evaluation.tasks.facts import Fact
    from pear_lens.heads import Head
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.recipe import Recipe

TIMING_SEED = 7
"""Seed of the items an estimate times (never a test seed: the items are generated and thrown away)."""


@dataclass(frozen=True)
class Stage:
    """One stage of a study's work: what it is, how many training steps and how many items of each task."""

    name: str
    steps: int = 0
    items: Mapping[str, int] = field(default_factory=dict)
    """Task → items generated in this stage (priced at that task's seconds per item)."""

    def seconds(self, per_step: float, per_item: Mapping[str, float]) -> float:
        return self.steps * per_step + sum(n * per_item[task] for task, n in self.items.items())


@dataclass(frozen=True)
class Estimate:
    """One model's predicted run time: the measured speeds, the stages they price, and what the total leaves out."""

    model: str
    seconds_per_step: float
    step_source: str
    """How the step was timed, e.g. ``timed now on cpu: 2 steps``."""
    seconds_per_item: Mapping[str, float]
    """Task → seconds per item, in the order they are printed."""
    stages: Sequence[Stage]
    work: str = ""
    """The study's own count of its work, said after the speeds (e.g. ``88 trainings, evaluations kv 40``)."""
    left_out: str = ""
    """Said after the total: what it does not count (e.g. ``, and model loading``)."""

    @property
    def minutes(self) -> dict[str, float]:
        """Stage → predicted minutes."""
        return {s.name: s.seconds(self.seconds_per_step, self.seconds_per_item) / 60 for s in self.stages}

    @property
    def total_minutes(self) -> float:
        return sum(self.minutes.values())

    def lines(self) -> list[str]:
        """The printed estimate: the speeds, each stage's minutes, the total."""
        head = (f"{self.model}: {self.seconds_per_step:.1f} s per training step ({self.step_source}); s/item "
                + ", ".join(f"{t} {s:.2f}" for t, s in self.seconds_per_item.items())
                + (f"; {self.work}" if self.work else ""))
        total = self.total_minutes
        return [head, *(f"  {stage}: {m:.0f} min" for stage, m in self.minutes.items()),
                f"  total: {total:.0f} min ({total / 60:.1f} h){self.left_out}"]

    def show(self) -> None:
        print("\n".join(self.lines()), flush=True)


def grand_total(estimates: Sequence[Estimate]) -> str:
    """The line that adds up every model's estimate."""
    minutes = sum(e.total_minutes for e in estimates)
    return f"estimated for {', '.join(e.model for e in estimates)}: {minutes:.0f} min ({minutes / 60:.1f} h)"


# --------------------------------------------------------------------------- measuring


def seconds_per_step(model: "LoadedModel", heads: Sequence["Head"], recipe: "Recipe", steps: int = 2) -> float:
    """Seconds per training step of ``recipe`` on ``heads``, timed now over ``steps`` steps on the model's device."""
    from pear_lens.reweight import train_coefficients

    result = train_coefficients(model, list(heads), dataclasses.replace(recipe, steps=steps), progress=False)
    return result.seconds / steps


def seconds_per_item(model: "LoadedModel", task: TaskName, n: int, *, batch_size: int, progress: bool = False,
                     known_facts: Sequence["Fact"] | None = None) -> float:
    """Seconds per item of ``task`` at its calibrated settings, timed now on ``n`` items (greedy generation
    in batches of ``batch_size``). Counterfactual items are drawn from every fact unless ``known_facts`` says
    which (for timing the prompt lengths barely change)."""
    from pear_lens.evaluation.runner import encode_items, generate_outputs
    from pear_lens.evaluation.tasks import generate_items
    from pear_lens.evaluation.tasks.calibration import settings_for
    from pear_lens.evaluation.tasks.facts import load_facts
    from pear_lens.evaluation.tasks.prompts import PromptStyle

    settings = settings_for(model.name, task, model.tokenizer)
    if task is TaskName.COUNTERFACTUAL and known_facts is None:
        known_facts = load_facts()
    items = generate_items(task, settings, n, seed=TIMING_SEED, known_facts=known_facts)
    prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer, n_ctx=model.n_ctx,
                           max_new_tokens=settings.max_new_tokens)
    hf = model.fresh_hf()
    start = time.perf_counter()
    generate_outputs(hf, model.tokenizer, prompts, settings, batch_size=batch_size, progress=progress,
                     desc=f"{model.name} {task.value} timing")
    return (time.perf_counter() - start) / len(items)


def calibrated_seconds_per_item(name: str, task: TaskName) -> float | None:
    """Seconds per item that calibration measured for ``name`` at ``task``'s chosen settings (None: none)."""
    from pear_lens.evaluation.tasks.calibration import load_calibration

    entry = load_calibration().get("models", {}).get(name, {})
    chosen = entry.get("tasks", {}).get(task.value, {}).get("chosen")
    for m in entry.get("measurements", []):
        if chosen and (m["prompt_style"], m["n_context"]) == (chosen["prompt_style"], chosen["n_context"]):
            return m["seconds_per_item"]
    return None
