"""Predict the run time of ``scripts/evaluate_all.py``'s protocol, stage by stage, on the device it will run on.

``estimate(config)`` takes the protocol's options (:class:`~pear_lens.evaluation.protocol_config.ProtocolConfig`:
models, tasks, K grid, dev split, steps, controls, budget, ``n``, ``device``) and prints minutes per stage per model.
"""
from __future__ import annotations

import time
from pathlib import Path

from pear_lens.evaluation import protocol as P
from pear_lens.evaluation.calibration import settings_for
from pear_lens.evaluation.prompts import PromptStyle
from pear_lens.evaluation.protocol_config import ProtocolConfig
from pear_lens.evaluation.runner import encode_items, generate_outputs
from pear_lens.evaluation.tasks import TaskName, generate_items


def _calibrated_speed(name: str, task: TaskName) -> tuple[float, float] | None:
    """Seconds per item and mean prompt tokens that calibration measured at the chosen settings, if any."""
    from pear_lens.evaluation.calibration import load_calibration

    entry = load_calibration().get("models", {}).get(name, {})
    chosen = entry.get("tasks", {}).get(task.value, {}).get("chosen")
    for m in entry.get("measurements", []):
        if chosen and (m["prompt_style"], m["n_context"]) == (chosen["prompt_style"], chosen["n_context"]):
            return m["seconds_per_item"], m["prompt_tokens_mean"]
    return None


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


def estimate(config: ProtocolConfig) -> int:
    """Predict the protocol's run time per stage: training steps × seconds per step + items × seconds per item.

    Seconds per training step are timed on the loaded model, on the run's device (2 steps of the largest K
    of the grid: steps cost more the lower the lowest re-weighted layer sits, so this errs high); seconds
    per item come from calibration, or (missing, or all with ``--estimate-items N``) are timed now too.
    Stages already cached under ``--runs`` are counted as if they had to run.
    """
    from pear_lens.evaluation.facts import load_facts

    tasks = [TaskName(t) for t in dict.fromkeys(config.tasks)]
    n_facts = len(load_facts())
    controls = len(config.control_kinds) * len(config.control_seeds)
    grand = 0.0
    for name in config.models:
        # steps are timed on the device the run will use: a published artifact's seconds may come from another
        # device (SmolLM2's 0.2 s per step on an H200 is ~11 s on two CPU cores)
        pub, model = _published(name, config), _load(name, None, config)
        total_heads = model.n_layers * model.n_heads
        per_step, step_src = _time_steps(model, config), f"timed now on {config.device}: 2 steps"
        dev_tasks = [TaskName(t) for t in dict.fromkeys(config.dev_tasks)] if config.k == "dev" else []
        speeds = {} if config.estimate_items else {t: _calibrated_speed(name, t) for t in set(tasks) | set(dev_tasks)}
        for t in set(tasks) | set(dev_tasks):
            if speeds.get(t) is None:
                model = _load(name, model, config)
                speeds[t] = (_time_items(model, t, config), None)
        item = {t: s[0] for t, s in speeds.items()}
        grid = P.k_grid(total_heads, config.k_percents) if config.k == "dev" else ()
        stages: list[tuple[str, float]] = []
        if config.k == "dev":
            runs = len(grid) * (1 + len(config.dev_seeds))
            stages.append((f"dev training ({runs} runs × {config.dev_steps} steps, K in {grid})",
                           runs * config.dev_steps * per_step))
            stages.append((f"dev evaluation ({1 + runs} conditions × {config.dev_n} items of {' and '.join(t.value for t in dev_tasks)})",
                           (1 + runs) * config.dev_n * sum(item[t] for t in dev_tasks)))
        stages.append((f"PEAR training ({config.steps} steps)", config.steps * per_step))
        stages.append((f"control training ({controls} × {config.steps} steps)", controls * config.steps * per_step))
        n_conds = 2 + controls + config.uniform
        budget = config.budget_steps and name in config.budget_models
        long_controls = len(config.control_kinds) * len(config.budget_control_seeds or config.control_seeds)
        if budget:
            stages.append((f"budget training ({1 + long_controls} × {config.budget_steps} steps)",
                           (1 + long_controls) * config.budget_steps * per_step))
        for t in tasks:
            conds = n_conds + ((1 + long_controls) if budget and t.value in config.budget_tasks else 0)
            extra = n_facts if t is TaskName.COUNTERFACTUAL else 0  # the closed-book check of every fact
            stages.append((f"{t.value} evaluation ({conds} conditions × {config.n} items"
                           + (f" + {n_facts} fact checks" if extra else "") + ")", (conds * config.n + extra) * item[t]))
        minutes = sum(s for _, s in stages) / 60
        grand += minutes
        print(f"{name}: {per_step:.1f} s per training step ({step_src}); s/item "
              + ", ".join(f"{t.value} {item[t]:.2f}" for t in sorted(item, key=lambda t: t.value)))
        for stage, secs in stages:
            print(f"  {stage}: {secs / 60:.0f} min")
        print(f"  total: {minutes:.0f} min ({minutes / 60:.1f} h), plus the copy check and discovery "
              f"({_discovery_minutes(pub)}), and model loading", flush=True)
    print(f"estimated for {', '.join(config.models)}: {grand:.0f} min ({grand / 60:.1f} h)")
    return 0


def _discovery_minutes(pub: dict) -> str:
    seconds = pub.get("discovery", {}).get("seconds")
    return f"{seconds / 60:.0f} min last time" if seconds else "reused when runs/MODEL/discovery matches"


def _load(name: str, model, config):
    from pear_lens.models.loaded import load_model

    return model or load_model(name, device=config.device)


def _time_steps(model, config) -> float:
    from pear_lens.k_sweep import random_heads
    from pear_lens.reweight import Recipe, train_coefficients

    k = P.k_grid(model.n_layers * model.n_heads, config.k_percents)[-1]
    result = train_coefficients(model, random_heads(model.n_layers, model.n_heads, k, 0), Recipe(steps=2),
                                progress=False)
    return result.seconds / 2


def _time_items(model, task: TaskName, config) -> float:
    from pear_lens.evaluation.facts import load_facts

    settings = settings_for(model.name, task, model.tokenizer)
    known = load_facts() if task is TaskName.COUNTERFACTUAL else None  # timing only: prompt lengths barely change
    items = generate_items(task, settings, config.estimate_items or 16, seed=7, known_facts=known)
    prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer, n_ctx=model.n_ctx,
                           max_new_tokens=settings.max_new_tokens)
    start = time.perf_counter()
    generate_outputs(model.fresh_hf(), model.tokenizer, prompts, settings, batch_size=config.batch_size,
                     progress=not config.quiet, desc=f"{model.name} {task.value} timing")
    return (time.perf_counter() - start) / len(items)
