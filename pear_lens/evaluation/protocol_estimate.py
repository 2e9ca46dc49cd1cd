"""Predict the run time of ``scripts/evaluate_all.py``'s protocol, stage by stage, on the device it will run on.

``estimate(args)`` takes the protocol's options as the script parses them (models, tasks, K grid, dev split,
steps, controls, budget, ``n``, ``device``) and prints minutes per stage per model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pear_lens.evaluation import protocol as P
from pear_lens.evaluation.calibration import settings_for
from pear_lens.evaluation.prompts import PromptStyle
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


def _published(name: str, args) -> dict:
    """What an earlier run published for ``name`` (pear.json, discovery.json), to estimate without the model."""
    out = {}
    for key, file in (("pear", "pear.json"), ("discovery", "discovery.json")):
        path = (args.publish or Path("artifacts")) / name / file
        if path.exists():
            out[key] = json.loads(path.read_text())
    return out


def estimate(args) -> int:
    """Predict the protocol's run time per stage: training steps × seconds per step + items × seconds per item.

    Seconds per training step are timed on the loaded model, on the run's device (2 steps of the largest K
    of the grid: steps cost more the lower the lowest re-weighted layer sits, so this errs high); seconds
    per item come from calibration, or (missing, or all with ``--estimate-items N``) are timed now too.
    Stages already cached under ``--runs`` are counted as if they had to run.
    """
    from pear_lens.evaluation.facts import load_facts

    tasks = [TaskName(t) for t in dict.fromkeys(args.tasks)]
    n_facts = len(load_facts())
    controls = len(args.control_kinds) * len(args.control_seeds)
    grand = 0.0
    for name in args.models:
        # steps are timed on the device the run will use: a published artifact's seconds may come from another
        # device (SmolLM2's 0.2 s per step on an H200 is ~11 s on two CPU cores)
        pub, model = _published(name, args), _load(name, None, args)
        total_heads = model.n_layers * model.n_heads
        per_step, step_src = _time_steps(model, args), f"timed now on {args.device}: 2 steps"
        dev_tasks = [TaskName(t) for t in dict.fromkeys(args.dev_tasks)] if args.k == "dev" else []
        speeds = {} if args.estimate_items else {t: _calibrated_speed(name, t) for t in set(tasks) | set(dev_tasks)}
        for t in set(tasks) | set(dev_tasks):
            if speeds.get(t) is None:
                model = _load(name, model, args)
                speeds[t] = (_time_items(model, t, args), None)
        item = {t: s[0] for t, s in speeds.items()}
        grid = P.k_grid(total_heads, args.k_percents) if args.k == "dev" else ()
        stages: list[tuple[str, float]] = []
        if args.k == "dev":
            runs = len(grid) * (1 + len(args.dev_seeds))
            stages.append((f"dev training ({runs} runs × {args.dev_steps} steps, K in {grid})",
                           runs * args.dev_steps * per_step))
            stages.append((f"dev evaluation ({1 + runs} conditions × {args.dev_n} items of {' and '.join(t.value for t in dev_tasks)})",
                           (1 + runs) * args.dev_n * sum(item[t] for t in dev_tasks)))
        stages.append((f"PEAR training ({args.steps} steps)", args.steps * per_step))
        stages.append((f"control training ({controls} × {args.steps} steps)", controls * args.steps * per_step))
        n_conds = 2 + controls + args.uniform
        budget = args.budget_steps and name in args.budget_models
        long_controls = len(args.control_kinds) * len(args.budget_control_seeds or args.control_seeds)
        if budget:
            stages.append((f"budget training ({1 + long_controls} × {args.budget_steps} steps)",
                           (1 + long_controls) * args.budget_steps * per_step))
        for t in tasks:
            conds = n_conds + ((1 + long_controls) if budget and t.value in args.budget_tasks else 0)
            extra = n_facts if t is TaskName.COUNTERFACTUAL else 0  # the closed-book check of every fact
            stages.append((f"{t.value} evaluation ({conds} conditions × {args.n} items"
                           + (f" + {n_facts} fact checks" if extra else "") + ")", (conds * args.n + extra) * item[t]))
        minutes = sum(s for _, s in stages) / 60
        grand += minutes
        print(f"{name}: {per_step:.1f} s per training step ({step_src}); s/item "
              + ", ".join(f"{t.value} {item[t]:.2f}" for t in sorted(item, key=lambda t: t.value)))
        for stage, secs in stages:
            print(f"  {stage}: {secs / 60:.0f} min")
        print(f"  total: {minutes:.0f} min ({minutes / 60:.1f} h), plus the copy check and discovery "
              f"({_discovery_minutes(pub)}), and model loading", flush=True)
    print(f"estimated for {', '.join(args.models)}: {grand:.0f} min ({grand / 60:.1f} h)")
    return 0


def _discovery_minutes(pub: dict) -> str:
    seconds = pub.get("discovery", {}).get("seconds")
    return f"{seconds / 60:.0f} min last time" if seconds else "reused when runs/MODEL/discovery matches"


def _load(name: str, model, args):
    from pear_lens.models import load_model

    return model or load_model(name, device=args.device)


def _time_steps(model, args) -> float:
    from pear_lens.ablation import random_heads
    from pear_lens.reweight import TrainConfig, train_coefficients

    k = P.k_grid(model.n_layers * model.n_heads, args.k_percents)[-1]
    result = train_coefficients(model, random_heads(model.n_layers, model.n_heads, k, 0), TrainConfig(steps=2),
                                progress=False)
    return result.seconds / 2


def _time_items(model, task: TaskName, args) -> float:
    from pear_lens.evaluation.facts import load_facts

    settings = settings_for(model.name, task, model.tokenizer)
    known = load_facts() if task is TaskName.COUNTERFACTUAL else None  # timing only: prompt lengths barely change
    items = generate_items(task, settings, args.estimate_items or 16, seed=7, known_facts=known)
    prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer, n_ctx=model.n_ctx,
                           max_new_tokens=settings.max_new_tokens)
    start = time.perf_counter()
    generate_outputs(model.fresh_hf(), model.tokenizer, prompts, settings, batch_size=args.batch_size,
                     progress=not args.quiet, desc=f"{model.name} {task.value} timing")
    return (time.perf_counter() - start) / len(items)
