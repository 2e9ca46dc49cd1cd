"""The README's results: discovery, training, and every evaluation task on both real models.

For each model: discover the heads (``pear_lens.discover``), learn τ on the
top-K heads (``pear_lens.reweight.train_coefficients``), learn τ on K random
heads for each control seed (reduced budget, stated in the table), and
evaluate baseline, PEAR, the random-K controls and uniform scaling (every head
times the mean PEAR τ) on identical items of every task (n items each, task
sizes and prompt styles from ``data/calibration.json``). Writes eval folders
under ``--runs``, then ``--report`` (``summary.md`` for the README, ``summary.html``,
``figures/``) and ``timing.json``; the total time is printed and recorded.

    .venv/bin/python scripts/evaluate_all.py                    # everything (see --estimate first)
    .venv/bin/python scripts/evaluate_all.py --estimate         # predict the run time from calibration timings
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from pear_lens.errors import PearLensError
from pear_lens.evaluation import conditions as C
from pear_lens.evaluation.calibration import settings_for
from pear_lens.evaluation.pipeline import EvalConfig, run_eval
from pear_lens.evaluation.prompts import PromptStyle
from pear_lens.evaluation.runner import encode_items, generate_outputs
from pear_lens.evaluation.tasks import TaskName, generate_items
from pear_lens.io import atomic_write_json

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TASK_ORDER = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK)


def train_config(**overrides):
    """``pear_lens.reweight.TrainConfig`` with the given fields changed (each must exist)."""
    from pear_lens.reweight import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise PearLensError(f"TrainConfig has no field(s) {unknown}; adapt scripts/evaluate_all.py")
    return dataclasses.replace(TrainConfig(), **overrides)


def train(model, heads, **overrides) -> dict[tuple[int, int], float]:
    """Learn τ for ``heads`` on the copy proxy task (the model stays frozen)."""
    from pear_lens.reweight import train_coefficients

    result = train_coefficients(model, list(heads), train_config(**overrides))
    return {(int(l), int(h)): float(t) for (l, h), t in zip(result.heads, result.tau)}


def conditions_for(model, runs: Path, args, timing: dict) -> list[C.Condition]:
    from pear_lens.discover import DiscoverConfig, discover

    start = time.perf_counter()
    scores = discover(DiscoverConfig(out=runs / "discovery", model=model.name, overwrite=True, quiet=args.quiet))
    timing["discovery"] = time.perf_counter() - start
    top = scores.top_k(args.k)
    start = time.perf_counter()
    pear = train(model, top)
    timing["train_pear"] = time.perf_counter() - start
    conds = [C.baseline(model), C.folded(model, pear, "PEAR", C.ConditionKind.PEAR, k=args.k)]
    for seed in args.control_seeds:
        heads = C.random_heads(model.n_layers, model.n_heads, args.k, seed, exclude=top)
        start = time.perf_counter()
        budget = {"steps": args.control_steps} if args.control_steps else {}
        taus = train(model, heads, seed=seed, **budget)
        timing[f"train_random_{seed}"] = time.perf_counter() - start
        label = f"random-K seed {seed}" + (f" ({args.control_steps} steps)" if args.control_steps else "")
        conds.append(C.random_k(model, taus, seed, label=label, training_budget=args.control_steps or "same as PEAR"))
    mean_tau = sum(pear.values()) / len(pear)
    conds.append(C.uniform(model, round(mean_tau, 3), label=f"uniform (all heads × mean PEAR τ = {mean_tau:.2f})"))
    return conds


def _calibrated_speed(name: str, task: TaskName) -> tuple[float, float] | None:
    """Seconds per item and mean prompt tokens that calibration measured at the chosen settings, if any."""
    from pear_lens.evaluation.calibration import load_calibration

    entry = load_calibration().get("models", {}).get(name, {})
    chosen = entry.get("tasks", {}).get(task.value, {}).get("chosen")
    for m in entry.get("measurements", []):
        if chosen and (m["prompt_style"], m["n_context"]) == (chosen["prompt_style"], chosen["n_context"]):
            return m["seconds_per_item"], m["prompt_tokens_mean"]
    return None


def estimate(args) -> int:
    """Predict the full run's generation time from measured seconds per item.

    Uses the timings ``scripts/calibrate_eval.py`` recorded at the chosen settings;
    with ``--estimate-items N`` (or without calibration timings) it times N items
    per task anew with the baseline.
    """
    from pear_lens.evaluation.facts import load_facts
    from pear_lens.models import load_model

    n_conditions = 3 + len(args.control_seeds)  # baseline, PEAR, random-K seeds, uniform
    n_facts = len(load_facts())
    total = 0.0
    for name in args.models:
        speeds = {t: _calibrated_speed(name, t) for t in TASK_ORDER}
        if not args.estimate_items and all(speeds.values()):
            for task, (per_item, tokens) in speeds.items():
                n_items = args.n * n_conditions + (n_facts if task is TaskName.COUNTERFACTUAL else 0)
                total += per_item * n_items
                print(f"{name} {task.value}: {per_item:.3f} s/item measured by calibration (mean prompt {tokens:.0f} "
                      f"tokens) -> {per_item * n_items / 60:.1f} min for {n_items} generations", flush=True)
            continue
        model = load_model(name)
        hf = model.fresh_hf()
        for task in TASK_ORDER:
            settings = settings_for(model.name, task, model.tokenizer)
            known = None
            if task is TaskName.COUNTERFACTUAL:
                known = load_facts()  # timing only: which facts are known does not change prompt lengths much
            items = generate_items(task, settings, args.estimate_items or 32, seed=7, known_facts=known)
            prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer,
                                   n_ctx=model.n_ctx, max_new_tokens=settings.max_new_tokens)
            start = time.perf_counter()
            generate_outputs(hf, model.tokenizer, prompts, settings, batch_size=args.batch_size,
                             progress=not args.quiet, desc=f"{name} {task.value} timing")
            per_item = (time.perf_counter() - start) / len(items)
            # the counterfactual task first checks every fact closed-book on the baseline
            n_items = args.n * n_conditions + (n_facts if task is TaskName.COUNTERFACTUAL else 0)
            total += per_item * n_items
            print(f"{name} {task.value}: {per_item:.3f} s/item (mean prompt {sum(map(len, prompts)) / len(prompts):.0f} "
                  f"tokens, batch {args.batch_size}) -> {per_item * n_items / 60:.1f} min for {n_items} generations",
                  flush=True)
    print(f"estimated generation time for {args.models}: {total / 60:.1f} min "
          f"(plus discovery and training, not timed here)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--n", type=int, default=300, help="items per task and condition")
    parser.add_argument("--k", type=int, default=10, help="number of PEAR heads (state how it was chosen)")
    parser.add_argument("--control-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--control-steps", type=int, default=None,
                        help="training steps of each random-K control (default: the same budget as PEAR)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=Path, default=Path("runs/evaluate_all"))
    parser.add_argument("--report", type=Path, default=Path("results"))
    parser.add_argument("--estimate", action="store_true",
                        help="only predict the generation time (from calibration timings, or timing a few items)")
    parser.add_argument("--estimate-items", type=int, default=0, help="with --estimate: time this many items anew")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.estimate:
        return estimate(args)
    import pear_lens.reweight  # noqa: F401  fail before an hour of work if training is not available

    from pear_lens.evaluation.report import EvalReportConfig, write_report
    from pear_lens.models import load_model

    start_all = time.perf_counter()
    timing: dict[str, dict[str, float]] = {}
    eval_dirs = []
    for name in args.models:
        model = load_model(name)
        timing[name] = {}
        conds = conditions_for(model, args.runs / name, args, timing[name])
        for task in TASK_ORDER:
            start = time.perf_counter()
            out = args.runs / name / task.value
            run_eval(EvalConfig(out=out, task=task.value, model=name, n=args.n, batch_size=args.batch_size,
                                seed=0, overwrite=True, quiet=args.quiet), model=model, conditions=conds)
            timing[name][f"eval_{task.value}"] = time.perf_counter() - start
            eval_dirs.append(out)
            print(f"{name} {task.value}: {timing[name][f'eval_{task.value}'] / 60:.1f} min", flush=True)
    write_report(EvalReportConfig(eval_dirs=tuple(eval_dirs), out=args.report, overwrite=True))
    total = time.perf_counter() - start_all
    atomic_write_json(args.report / "timing.json", {"total_seconds": total, "stages": timing, "n": args.n,
                                                    "k": args.k, "control_seeds": args.control_seeds,
                                                    "control_steps": args.control_steps,
                                                    "batch_size": args.batch_size})
    print(f"total {total / 60:.1f} min; wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
