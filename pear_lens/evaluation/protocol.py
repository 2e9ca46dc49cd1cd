"""The parts of a fair PEAR experiment that :mod:`pear_lens.evaluation.protocol_run` orchestrates.

K is chosen on *dev* items (another seed than the test items, checked to share no prompt) by a rule
stated before the sweep (:data:`SELECTION_RULE`) over a grid of K relative to the model's head count
(:func:`k_grid`). Controls differ from PEAR only in their heads (:func:`draw_control`: uniform or
layer-matched random heads; the training recipe, sequences included, is PEAR's). Every stage is cached
on disk with the inputs it depends on (:func:`cached_stage`, :func:`cached_tau`), so a run that spans
sessions continues where it stopped and records the minutes each stage took when it ran.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.evaluation.stats import bootstrap_ci
from pear_lens.evaluation.tasks import TaskName, TaskSettings, generate_items
from pear_lens.io import atomic_write_json
from pear_lens.k_sweep import layer_matched_heads, random_heads
from pear_lens.heads import Head

if TYPE_CHECKING:
    from pear_lens.evaluation.items import Item
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.reweight import Recipe


K_PERCENTS: tuple[int | float, ...] = (1, 2, 5, 10, 20)
"""Default grid of K, in percent of the model's heads (the paper's K is 0.5-4 % of Llama-2-7B's heads)."""
DEV_TASKS: tuple[TaskName, ...] = (TaskName.KV, TaskName.MDQA)
"""Tasks whose dev items choose K (the default; a model too slow for MDQA's long prompts may use KV alone)."""
_TASK_NAMES = {TaskName.KV: "KV", TaskName.MDQA: "MDQA", TaskName.COUNTERFACTUAL: "counterfactual",
               TaskName.CLOSED_BOOK: "closed-book"}


def selection_rule(tasks: Sequence[TaskName] = DEV_TASKS) -> str:
    """How K is chosen on the dev items of ``tasks``, stated before the sweep and recorded with it
    (:func:`select_k` applies it)."""
    names = [_TASK_NAMES[TaskName(t)] for t in tasks]
    over = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"the K with the highest mean dev accuracy of top-K over {over}; ties go to the smaller K"


SELECTION_RULE = selection_rule()
"""The rule with the default dev tasks."""
TOP, LAYER_MATCHED, BASELINE = "top", "layer_matched", "baseline"
"""Values of the ``selection`` column of a dev table."""


# --------------------------------------------------------------------------- K


def k_grid(n_total_heads: int, percents: Sequence[int | float] = K_PERCENTS) -> tuple[int, ...]:
    """K for each percentage of ``n_total_heads`` (rounded half up, at least 1, at most all), sorted, each once.

    >>> k_grid(270), k_grid(72), k_grid(12)
    ((3, 5, 14, 27, 54), (1, 4, 7, 14), (1, 2))
    """
    if n_total_heads < 1 or not percents or any(p <= 0 for p in percents):
        raise PearLensError(f"need a positive head count and positive percentages, got {n_total_heads}, {percents}")
    return tuple(sorted({min(n_total_heads, max(1, int(p * n_total_heads / 100 + 0.5))) for p in percents}))


def select_k(dev: pd.DataFrame, tasks: Sequence[TaskName] = DEV_TASKS) -> int:
    """Apply :func:`selection_rule` of ``tasks`` to a dev table (columns ``k``, ``selection``, ``task``,
    ``accuracy``)."""
    values = [TaskName(t).value for t in tasks]
    top = dev[(dev["selection"] == TOP) & dev["task"].isin(values)]
    if top.empty:
        raise PearLensError(f"the dev table has no top-K rows on {', '.join(values)}; run the dev sweep first")
    per_k = top.groupby("k")["accuracy"].mean().round(12)  # rounding: equal accuracies tie exactly
    return int(per_k[per_k == per_k.max()].index.min())


def dev_table(outcomes: Sequence[dict[str, Any]], seed: int = 0) -> pd.DataFrame:
    """Pool per-item dev outcomes into one row per (selection, K, task): accuracy and 95 % bootstrap CI.

    ``outcomes`` rows hold ``selection``, ``k``, ``seed``, ``task``, ``steps`` and ``correct`` (a list of
    bools); draws of several seeds are pooled (their items, stacked).
    """
    df = pd.DataFrame(outcomes)
    rows = []
    for (selection, k, task), g in df.groupby(["selection", "k", "task"], sort=True):
        correct = np.concatenate([np.asarray(c, dtype=bool) for c in g["correct"]])
        low, high = bootstrap_ci(correct, seed=seed)
        rows.append({"selection": selection, "k": int(k), "task": task, "seeds": sorted(int(s) for s in g["seed"]),
                     "steps": int(g["steps"].iloc[0]), "n": int(correct.size), "accuracy": float(correct.mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["selection", "k", "task", "seeds", "steps", "n", "accuracy", "ci_low",
                                       "ci_high"])


# --------------------------------------------------------------------------- dev and test items


def prompt_key(item: "Item") -> str:
    """What makes two items the same question: the prompt text and the gold answers (not the id)."""
    p = item.prompt()
    return json.dumps([p.body, p.answer_prefix, list(item.answers)], ensure_ascii=False)


def items_digest(items: Sequence["Item"]) -> str:
    """A short hash of the items' ids and prompts (a cache key that changes with any item)."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.item_id}\0{prompt_key(it)}\n".encode())
    return h.hexdigest()[:16]


def check_disjoint(dev: Sequence["Item"], test: Sequence["Item"]) -> None:
    """Refuse dev items that repeat a test item (same prompt and answers)."""
    shared = {prompt_key(it) for it in dev} & {prompt_key(it) for it in test}
    if shared:
        raise PearLensError(f"{len(shared)} dev item(s) repeat a test item; K chosen on them would have seen the test")


@dataclass(frozen=True)
class DevTestSplit:
    """Items of one task: dev (chooses K) and test (the table), from different seeds, sharing no prompt."""

    dev: list
    test: list
    dropped: int
    """Dev items dropped because they repeated a test item."""


def dev_test_items(task: TaskName, settings: TaskSettings, *, n_dev: int, n_test: int, dev_seed: int,
                   test_seed: int) -> DevTestSplit:
    """Generate both splits with their own seeds; a dev item that repeats a test item is dropped.

    The test items are exactly those ``pear-lens eval --seed TEST_SEED --n N_TEST`` generates.
    """
    if dev_seed == test_seed:
        raise PearLensError(f"dev_seed and test_seed are both {dev_seed}; dev items must come from another seed")
    test = generate_items(task, settings, n_test, seed=test_seed)
    seen = {prompt_key(it) for it in test}
    dev = [it for it in generate_items(task, settings, n_dev, seed=dev_seed) if prompt_key(it) not in seen]
    check_disjoint(dev, test)
    return DevTestSplit(dev, test, n_dev - len(dev))


# --------------------------------------------------------------------------- controls


class ControlKind(str, Enum):
    UNIFORM = "uniform"
    """K heads drawn uniformly from the whole model (avoiding PEAR's where at least 2K heads exist)."""
    LAYER_MATCHED = "layer_matched"
    """As many heads per layer as PEAR, drawn from the other heads of those layers."""

    @property
    def label(self) -> str:
        return {"uniform": "uniform random-K", "layer_matched": "layer-matched random-K"}[self.value]


@dataclass(frozen=True)
class ControlDraw:
    """The heads of one control and how they relate to PEAR's."""

    kind: ControlKind
    seed: int
    heads: list[Head]
    note: dict[str, Any]
    """``avoids_pear_heads`` (uniform) or ``partial_layers`` and ``partial`` (layer-matched)."""


def draw_control(kind: ControlKind | str, n_layers: int, n_heads: int, pear: Sequence[Head], seed: int) -> ControlDraw:
    """The heads of control ``kind`` for ``seed`` (the seed draws heads only; training uses PEAR's recipe)."""
    kind = ControlKind(kind)
    pear = [(int(l), int(h)) for l, h in pear]
    if kind is ControlKind.UNIFORM:
        avoid = n_layers * n_heads >= 2 * len(pear)  # enough other heads left (K above half cannot avoid them)
        heads = random_heads(n_layers, n_heads, len(pear), seed, exclude=pear if avoid else ())
        return ControlDraw(kind, seed, heads, {"avoids_pear_heads": avoid})
    draw = layer_matched_heads(n_heads, pear, seed)
    return ControlDraw(kind, seed, draw.heads, {"partial": draw.partial, "partial_layers": list(draw.partial_layers)})


def head_names(heads: Sequence[Head]) -> list[str]:
    return [f"L{l}.H{h}" for l, h in heads]


# --------------------------------------------------------------------------- stage caches


def as_json(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists), so a saved key compares equal to a fresh one."""
    return json.loads(json.dumps(obj, default=str))


def cached_stage(path: Path, key: dict[str, Any], compute: Callable[[], Any]) -> tuple[Any, float, bool]:
    """``compute()`` once per ``key``: its JSON value is kept in ``path`` with the seconds it took.

    Returns ``(value, seconds, ran_now)``; ``seconds`` is the time measured when it ran (maybe in an
    earlier session). A file written for other inputs is replaced.
    """
    key = as_json(key)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["value"], float(saved["seconds"]), False
    start = time.perf_counter()
    value = as_json(compute())
    seconds = round(time.perf_counter() - start, 2)  # as saved: a later read returns the same number
    atomic_write_json(path, {"key": key, "value": value, "seconds": seconds})
    return value, seconds, True


def cached_tau(model: "LoadedModel", heads: Sequence[Head], config: "Recipe",
               path: Path) -> tuple[dict[Head, float], float, bool]:
    """τ for ``heads`` trained with ``config`` on ``model`` (frozen), read back from ``path`` when trained
    before on the same weights, heads and recipe (training is seeded, so it would come out the same).

    Returns ``(τ per head, seconds the training took, trained_now)``.
    """
    from pear_lens.reweight import train_coefficients

    heads = [(int(l), int(h)) for l, h in heads]
    recipe = config.recipe.to_dict()
    key = {"fingerprint": model.fingerprint, "heads": heads, "recipe": recipe}

    def train() -> list[float]:
        return [float(t) for t in train_coefficients(model, heads, config.recipe, progress=False).tau]

    tau, seconds, ran = cached_stage(path, key, train)
    return dict(zip(heads, (float(t) for t in tau))), seconds, ran
