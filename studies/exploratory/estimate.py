"""Predict the run time of ``python -m studies.evaluate_all``'s protocol, stage by stage, on the device it will run on.

``estimate(config)`` takes the protocol's options (:class:`~studies.exploratory.config.ProtocolConfig`:
models, tasks, K grid, dev split, steps, controls, budget, ``n``, ``device``), counts the protocol's work per
model and prints minutes per stage; the measuring and printing are :mod:`studies.estimate`'s.
"""
from __future__ import annotations

from pathlib import Path

from pear_lens.evaluation.tasks import TaskName
from studies.estimate import (Estimate, Stage, calibrated_seconds_per_item, grand_total, seconds_per_item,
                              seconds_per_step)
from studies.exploratory.config import ProtocolConfig
from studies.exploratory.design import k_grid


def _published(name: str, config: ProtocolConfig) -> dict:
    """What an earlier run published for ``name`` (pear.json, discovery.json), to estimate without the model."""
    from pear_lens.runs import has_artifact, is_run, read_info, read_pear_json

    folder = (config.publish or Path("artifacts")) / name
    out = {}
    if has_artifact(folder):
        out["pear"] = read_pear_json(folder)
    if is_run(folder):
        out["discovery"] = read_info(folder)
    return out


def stages(config: ProtocolConfig, name: str, total_heads: int) -> list[Stage]:
    """The protocol's work for model ``name`` (with ``total_heads`` heads), stage by stage. Stages already
    cached under ``--runs`` are counted as if they had to run."""
    from pear_lens.evaluation.tasks.facts import load_facts

    tasks = [TaskName(t) for t in dict.fromkeys(config.tasks)]
    n_facts = len(load_facts())
    controls = len(config.control_kinds) * len(config.control_seeds)
    out: list[Stage] = []
    if config.k == "dev":
        grid = k_grid(total_heads, config.k_percents)
        dev_tasks = [TaskName(t) for t in dict.fromkeys(config.dev_tasks)]
        runs = len(grid) * (1 + len(config.dev_seeds))
        out.append(Stage(f"dev training ({runs} runs × {config.dev_steps} steps, K in {grid})",
                         steps=runs * config.dev_steps))
        out.append(Stage(f"dev evaluation ({1 + runs} conditions × {config.dev_n} items of "
                         f"{' and '.join(t.value for t in dev_tasks)})",
                         items={t.value: (1 + runs) * config.dev_n for t in dev_tasks}))
    out.append(Stage(f"PEAR training ({config.steps} steps)", steps=config.steps))
    out.append(Stage(f"control training ({controls} × {config.steps} steps)", steps=controls * config.steps))
    n_conds = 2 + controls + config.uniform
    budget = config.budget_steps and name in config.budget_models
    long_controls = len(config.control_kinds) * len(config.budget_control_seeds or config.control_seeds)
    if budget:
        out.append(Stage(f"budget training ({1 + long_controls} × {config.budget_steps} steps)",
                         steps=(1 + long_controls) * config.budget_steps))
    for t in tasks:
        conds = n_conds + ((1 + long_controls) if budget and t.value in config.budget_tasks else 0)
        extra = n_facts if t is TaskName.COUNTERFACTUAL else 0  # the closed-book check of every fact
        out.append(Stage(f"{t.value} evaluation ({conds} conditions × {config.n} items"
                         + (f" + {n_facts} fact checks" if extra else "") + ")",
                         items={t.value: conds * config.n + extra}))
    return out


def estimate(config: ProtocolConfig) -> int:
    """Predict the protocol's run time per stage: training steps × seconds per step + items × seconds per item.

    Seconds per training step are timed on the loaded model, on the run's device (2 steps of the largest K
    of the grid: steps cost more the lower the lowest re-weighted layer sits, so this errs high); seconds
    per item come from calibration, or (missing, or all with ``--estimate-items N``) are timed now too.
    """
    from pear_lens.controls import random_heads
    from pear_lens.models.loaded import load_model
    from pear_lens.recipe import Recipe

    estimates = []
    for name in config.models:
        # steps are timed on the device the run will use: a published artifact's seconds may come from another
        # device (SmolLM2's 0.2 s per step on an H200 is ~11 s on two CPU cores)
        pub, model = _published(name, config), load_model(name, device=config.device)
        total_heads = model.n_layers * model.n_heads
        largest = k_grid(total_heads, config.k_percents)[-1]
        per_step = seconds_per_step(model, random_heads(model.n_layers, model.n_heads, largest, 0), Recipe())
        work = stages(config, name, total_heads)
        priced = sorted({t for s in work for t in s.items})
        per_item = {}
        for task in priced:
            calibrated = None if config.estimate_items else calibrated_seconds_per_item(name, TaskName(task))
            per_item[task] = calibrated if calibrated is not None else seconds_per_item(
                model, TaskName(task), config.estimate_items or 16, batch_size=config.batch_size,
                progress=not config.quiet)
        est = Estimate(name, per_step, f"timed now on {config.device}: 2 steps", per_item, work,
                       left_out=f", plus the copy check and discovery ({_discovery_minutes(pub)}), and model loading")
        est.show()
        estimates.append(est)
    print(grand_total(estimates))
    return 0


def _discovery_minutes(pub: dict) -> str:
    seconds = pub.get("discovery", {}).get("seconds")
    return f"{seconds / 60:.0f} min last time" if seconds else "reused when runs/MODEL/discovery matches"
