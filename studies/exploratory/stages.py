"""The stages of the exploratory PEAR protocol that need no command, its resume records and its report.

``studies/evaluate_all.py`` runs them through :mod:`studies.exploratory.run` (which adds the stages
that write a discovery run, train into it and evaluate: discovery, PEAR's training, each task's evaluation). Every stage is cached under
``RUNS/MODEL`` with the inputs it depends on, so an interrupted run continues where it stopped; the record
``RUNS/MODEL/evaluate_all.json`` (:func:`save_record`) keeps the protocol, the seconds every stage took and
the tasks finished, and :func:`report` gathers every model's record into ``REPORT/run.json``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pear_lens.evaluation import conditions as C
from pear_lens.controls import draw_control, layer_matched_heads
from pear_lens.evaluation.splits import dev_test_items
from pear_lens.heads import head_label
from pear_lens.io import as_json
from pear_lens.stage_cache import cached_stage
from pear_lens.training_cache import cached_tau
from studies.exploratory.design import dev_accuracy_curve, dev_table, k_grid, select_k, selection_rule
from pear_lens.evaluation.tasks.calibration import settings_for
from studies.exploratory.config import PROTOCOL_MODELS, TASK_ORDER, ProtocolConfig
from pear_lens.evaluation.tasks import TaskName
from pear_lens.io import atomic_write_json

if TYPE_CHECKING:
    from pear_lens.artifact import Artifact
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.results import HeadScores
    from pear_lens.recipe import Recipe

RECORD = "evaluate_all.json"
"""Each model's record under ``RUNS/MODEL``."""
PUBLISHED = ("pear.json", "coefficients.safetensors", "head_scores.csv", "discovery.json", "ablation.csv",
             "training_log.csv")
"""The files of a discovery run that :func:`publish` copies."""


# --------------------------------------------------------------------------- stages before training


def copy_task_stage(model: "LoadedModel", mdir: Path, config: ProtocolConfig, seconds: dict) -> dict:
    """Measure clean copy accuracy without and with BOS (cached); choose by ``pear_lens.copy_check.COPY_RULE``."""
    from pear_lens.copy_check import choose_copy_task, copy_task_variants, measure_copy_tasks

    # the cache key names the tasks measure_copy_tasks measures (discovery's defaults: the reference task)
    key = {"fingerprint": model.fingerprint, "tasks": [t.to_dict() for t in copy_task_variants(model)]}
    measured, seconds["copy_task"], _ = cached_stage(mdir / "copy_task.json", key,
                                                       lambda: measure_copy_tasks(model))
    return choose_copy_task(model.name, measured, config.allow_weak_copy_task)


def dev_stage(model: "LoadedModel", scores: "HeadScores", mdir: Path, recipe: "Recipe", config: ProtocolConfig,
              seconds: dict, name: str) -> tuple[int, dict]:
    """Choose K on dev items by :func:`studies.exploratory.design.selection_rule` (or take ``--k``)."""
    from pear_lens.evaluation.runner import evaluate

    total = model.n_layers * model.n_heads
    test_seed = config.test_seed
    if config.k != "dev":
        return int(config.k), {"split": "given", "rule": "given with --k", "chosen": int(config.k),
                               "dev_seed": None, "test_seed": test_seed, "grid": [int(config.k)]}
    grid = k_grid(total, config.k_percents)
    dev_recipe = dataclasses.replace(recipe, steps=config.dev_steps)  # the same for top-K and random-K at every K
    dev_tasks = [TaskName(t) for t in dict.fromkeys(config.dev_tasks)]
    plan = {"split": "dev", "rule": selection_rule(dev_tasks), "grid": list(grid),
            "grid_percents": list(config.k_percents), "dev_seed": config.dev_seed, "test_seed": test_seed,
            "dev_steps": config.dev_steps, "dev_seeds": list(config.dev_seeds), "n_dev": config.dev_n,
            "tasks": [t.value for t in dev_tasks], "train_seed": recipe.seed}
    atomic_write_json(mdir / "dev" / "plan.json", plan)  # the rule is on disk before any dev result exists

    conds, jobs = [C.baseline(model)], [("baseline", 0, 0, "baseline")]
    for k in grid:
        top = scores.top_k(k)
        draws = [("top", 0, top)] + [("layer_matched", s, layer_matched_heads(model.n_heads, top, s).heads)
                                     for s in config.dev_seeds]
        for selection, seed, heads in draws:
            label = f"top-{k}" if selection == "top" else f"layer-matched random-{k} seed {seed}"
            stage = f"{selection}_k{k}" + (f"_seed{seed}" if selection != "top" else "")
            tau, seconds[f"dev_train/{stage}"], _ = cached_tau(model, heads, dev_recipe,
                                                                 mdir / "dev" / "tau" / f"{stage}.json")
            conds.append(C.folded(model, tau, label, C.ConditionKind.CUSTOM, k=k, selection=selection, seed=seed,
                                  steps=config.dev_steps))
            jobs.append((selection, k, seed, label))
    outcomes, dropped = [], {}
    for task in dev_tasks:
        settings = settings_for(model.name, task, model.tokenizer)
        split = dev_test_items(task, settings, n_dev=config.dev_n, n_test=config.n, dev_seed=config.dev_seed,
                                 test_seed=test_seed)
        dropped[task.value] = split.dropped
        result = evaluate(model.name, task.value, split.dev, conds, model.tokenizer, settings, n_ctx=model.n_ctx,
                          batch_size=config.batch_size, progress=not config.quiet, seed=config.dev_seed,
                          cache_dir=mdir / "dev" / task.value, cache_key={"fingerprint": model.fingerprint})
        for label, secs in result.info["seconds_per_condition"].items():
            seconds[f"dev_eval/{task.value}/{label}"] = secs
        correct = result.items.groupby("condition", sort=False)["correct"].apply(list)
        for selection, k, seed, label in jobs:
            outcomes.append({"selection": selection, "k": k, "seed": seed, "task": task.value,
                             "steps": 0 if selection == "baseline" else config.dev_steps, "correct": correct[label]})
    table = dev_table(outcomes, seed=config.dev_seed)
    chosen = select_k(table, dev_tasks)
    table.to_csv(mdir / "dev" / "dev_table.csv", index=False)
    dev_figure(table, name, config.figures, config.no_png, chosen=chosen)
    rows = [{**r, "accuracy": round(r["accuracy"], 4), "ci_low": round(r["ci_low"], 4),
             "ci_high": round(r["ci_high"], 4)} for r in table.to_dict("records")]
    return chosen, {**plan, "chosen": chosen, "dev_items_dropped_as_test_repeats": dropped, "dev_accuracy": rows}


def dev_figure(table: Any, name: str, figures: Path, no_png: bool, chosen: int | None = None) -> None:
    """Dev accuracy against K with the ``chosen`` K marked, ``FIGURES/dev_k_NAME.html`` (and ``.png``, ``.pdf``,
    ``.svg``)."""
    from pear_lens.figure_files import figure_formats, save_figure

    fig = dev_accuracy_curve(table, title=f"{name}: dev accuracy against K", chosen=chosen)
    save_figure(fig, figures / f"dev_k_{name}.html", formats=figure_formats(static=not no_png))


def dev_figures_from_record(run_json: Path, figures: Path, no_png: bool = False) -> list[str]:
    """Each model's dev figure redrawn from the published record alone (``figures/results/run.json``: its
    ``k_selection`` holds the dev table, rounded, and the chosen K), for a checkout without the run folders.

        python -c "from pathlib import Path; from studies.exploratory.stages import dev_figures_from_record as d; \\
                   d(Path('figures/results/run.json'), Path('figures'))"
    """
    import pandas as pd

    drawn = []
    for name, record in json.loads(Path(run_json).read_text()).get("models", {}).items():
        selection = record.get("protocol", {}).get("k_selection", {})
        if selection.get("dev_accuracy"):
            dev_figure(pd.DataFrame(selection["dev_accuracy"]), name, figures, no_png, chosen=selection.get("chosen"))
            drawn.append(name)
    return drawn


# --------------------------------------------------------------------------- controls and the record


def control_stage(model: "LoadedModel", pear_heads: Sequence, recipe: "Recipe", mdir: Path,
                  config: ProtocolConfig, seconds: dict, steps_tag: str = "",
                  seeds: Sequence[int] | None = None) -> tuple[list, list]:
    """Every control (kinds × seeds): heads drawn by the control's seed, τ trained with PEAR's ``recipe``."""
    conds, records = [], []
    for kind in config.control_kinds:
        for seed in config.control_seeds if seeds is None else seeds:
            draw = draw_control(kind, model.n_layers, model.n_heads, pear_heads, seed)
            label = f"{draw.kind.label} seed {seed}" + steps_tag
            stage = f"{draw.kind.value}_seed{seed}_steps{recipe.steps}"
            tau, secs, _ = cached_tau(model, draw.heads, recipe, mdir / "tau" / f"{stage}.json")
            seconds[f"train_control/{stage}"] = secs
            conds.append(C.random_k(model, tau, seed, label=label, control=draw.kind.value, steps=recipe.steps,
                                    train_seed=recipe.seed))
            records.append({"kind": draw.kind.value, "seed": seed, "steps": recipe.steps, "train_seed": recipe.seed,
                            "label": label, "heads": [head_label(h) for h in draw.heads],
                            "tau": [round(tau[h], 4) for h in draw.heads], **draw.note})
    return conds, records


def conditions_around_pear(model: "LoadedModel", mdir: Path, run_dir: Path, artifact: "Artifact",
                           recipe: "Recipe", copy: dict, k_selection: dict, config: ProtocolConfig,
                           seconds: dict) -> tuple[dict, dict]:
    """Given PEAR's artifact at the chosen K: train the controls (and the longer budget), and return the conditions
    per role (``reference``: baseline, PEAR, controls; ``budget``: the longer budget's) and the model's record."""
    k = k_selection["chosen"]
    pear_heads = [tuple(h) for h in artifact.heads]
    controls, control_records = control_stage(model, pear_heads, recipe, mdir, config, seconds)
    conds = {"reference": [C.baseline(model), C.from_artifact(model, run_dir), *controls], "budget": []}
    protocol = {"pear": {"steps": recipe.steps, "train_seed": recipe.seed, "label": "PEAR"},
                "controls": control_records, "k_selection": k_selection, "recipe": recipe.to_dict(), "budget": None}
    roles = [{"label": "baseline", "role": "baseline", "steps": None},
             {"label": "PEAR", "role": "pear", "steps": recipe.steps, "budget": "reference"},
             *({"label": c["label"], "role": "control", "kind": c["kind"], "seed": c["seed"], "steps": c["steps"],
                "budget": "reference"} for c in control_records)]
    if config.budget_steps and model.name in config.budget_models:
        longer = dataclasses.replace(recipe, steps=config.budget_steps)
        tag = f" ({config.budget_steps} steps)"
        tau, seconds[f"train_budget/pear_steps{longer.steps}"], _ = cached_tau(
            model, pear_heads, longer, mdir / "tau" / f"pear_steps{longer.steps}.json")
        pear_long = C.folded(model, tau, "PEAR" + tag, C.ConditionKind.PEAR, steps=longer.steps)
        budget_seconds: dict = {}
        controls_long, records_long = control_stage(model, pear_heads, longer, mdir, config, budget_seconds, tag,
                                                    seeds=config.budget_control_seeds or config.control_seeds)
        seconds.update({k.replace("train_control/", "train_budget/"): v for k, v in budget_seconds.items()})
        conds["budget"] = [pear_long, *controls_long]
        protocol["budget"] = {"steps": longer.steps, "train_seed": longer.seed, "tasks": list(config.budget_tasks),
                              "pear": {"steps": longer.steps, "train_seed": longer.seed, "label": "PEAR" + tag,
                                       "tau": [round(tau[h], 4) for h in pear_heads]},
                              "controls": records_long,
                              "note": "PEAR and every control trained again at the longer budget, everything else "
                                      f"equal; evaluated on {', '.join(config.budget_tasks)} only"}
        roles += [{"label": "PEAR" + tag, "role": "pear", "steps": longer.steps, "budget": "longer"},
                  *({"label": c["label"], "role": "control", "kind": c["kind"], "seed": c["seed"],
                     "steps": c["steps"], "budget": "longer"} for c in records_long)]
    if config.uniform:
        mean_tau = float(artifact.tau.mean())
        conds["reference"].append(C.all_heads(model, round(mean_tau, 3),
                                            label=f"uniform (all heads × mean PEAR τ = {mean_tau:.2f})"))
        roles.append({"label": conds["reference"][-1].label, "role": "other", "steps": None})
    record = {"k": k, "k_chosen": k_selection_phrase(k_selection), "heads": [head_label(h) for h in pear_heads],
              "tau": [round(float(t), 4) for t in artifact.tau], "copy_task": copy, "protocol": protocol,
              "conditions": roles}
    return conds, record


def k_selection_phrase(sel: dict) -> str:
    """How K was chosen, in one phrase (the record's ``k_chosen``); says so where percentages of the grid
    round to one K."""
    if sel["split"] != "dev":
        return sel["rule"]
    grid, percents = list(sel["grid"]), list(sel["grid_percents"])
    # percentages that round to one K are tried once (Gemma: 1 % and 2 % of 72 heads are both K = 1)
    merged = "" if len(grid) == len(percents) else "; percentages that give the same K tried once"
    return (f"{sel['rule']}, over K = {', '.join(map(str, grid))} ({', '.join(f'{p:g}' for p in percents)} % "
            f"of the heads, rounded half up, at least 1{merged}), {sel['dev_steps']} training steps, dev items seed {sel['dev_seed']} (test seed "
            f"{sel['test_seed']})")


def publish(run_dir: Path, dest: Path) -> None:
    """Copy the artifact (and what produced it) to ``dest``: a folder ``pear-lens eval --artifact`` and
    ``pear-lens apply`` accept."""
    import shutil

    from pear_lens.io import staged_dir

    with staged_dir(dest, overwrite=True, kind="run", inputs=(run_dir,)) as tmp:
        for name in PUBLISHED:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)


# --------------------------------------------------------------------------- resume records


def task_conditions(conds: dict, task: TaskName, config: ProtocolConfig) -> list:
    """The conditions evaluated on ``task``: the reference ones, and the longer budget's on ``--budget-tasks``."""
    return conds["reference"] + (conds["budget"] if task.value in config.budget_tasks else [])


def evaluated(eval_dir: Path, conds: Sequence, n: int, seed: int) -> bool:
    """Whether ``eval_dir`` holds an evaluation of exactly ``conds`` on ``n`` items of seed ``seed``."""
    from pear_lens import constants

    meta = eval_dir / constants.EVAL_JSON
    if not meta.exists():
        return False
    info = json.loads(meta.read_text())
    return (info.get("config", {}).get("n") == n and info.get("config", {}).get("seed") == seed
            and info.get("conditions") == as_json([c.describe() for c in conds]))


def record_devices(record_path: Path, device: str) -> list[str]:
    """Every device that ran stages of this record, in order: an earlier session's (the cached stages keep
    the minutes they took there), then this one's."""
    from pear_lens.models.loaded import device_description

    earlier: list[str] = []
    if record_path.exists():
        old = json.loads(record_path.read_text())
        earlier = old.get("devices") or ([old["device"]] if old.get("device") else [])
    return list(dict.fromkeys([*earlier, device_description(device)]))


def save_record(mdir: Path, record: dict, seconds: dict, conds: dict, config: ProtocolConfig) -> None:
    """Write ``MDIR/evaluate_all.json``: the tasks whose evaluation matches these conditions (with the minutes
    each took, also when an earlier session evaluated it) and the total."""
    done = [t.value for t in TASK_ORDER
            if evaluated(mdir / t.value, task_conditions(conds, t, config), config.n, config.test_seed)]
    for task in done:  # finished in an earlier session (same conditions): its measured minutes
        if f"eval/{task}" not in seconds:
            info = json.loads((mdir / task / "eval.json").read_text())
            seconds[f"eval/{task}"] = round(sum(info.get("seconds_per_condition", {}).values()), 2)
    record["tasks"] = done
    record["total_seconds"] = round(sum(seconds.values()), 1)
    atomic_write_json(mdir / RECORD, record)


# --------------------------------------------------------------------------- report


def report(runs: Path, out: Path, no_png: bool = False) -> None:
    """The report of every model evaluated under ``runs`` (models in :data:`PROTOCOL_MODELS` order), and
    ``run.json``."""
    from pear_lens.commands.eval_report import EvalReportConfig, write_report

    records, eval_dirs = {}, []
    order = PROTOCOL_MODELS
    for name in sorted((p.parent.name for p in runs.glob(f"*/{RECORD}")),
                       key=lambda m: order.index(m) if m in order else len(order)):
        records[name] = json.loads((runs / name / RECORD).read_text())
        eval_dirs += [runs / name / task for task in records[name]["tasks"]]
    if eval_dirs:
        write_report(EvalReportConfig(eval_dirs=tuple(eval_dirs), out=out, overwrite=True, no_png=no_png))
    path = out / "run.json"
    kept = json.loads(path.read_text()) if path.exists() else {}  # e.g. studies/confirm.py's 'confirmatory' section
    atomic_write_json(path, {**kept, "models": records})


def redraw(config: ProtocolConfig) -> None:
    """``--report-only``: the report, and the dev figures drawn from the dev tables, of the models under ``--runs``."""
    import pandas as pd

    report(config.runs, config.report, no_png=config.no_png)
    tasks = [TaskName(t) for t in config.dev_tasks]
    for table in sorted(config.runs.glob("*/dev/dev_table.csv")):
        dev = pd.read_csv(table)
        dev_figure(dev, table.parent.parent.name, config.figures, config.no_png, chosen=select_k(dev, tasks))
