"""The README's results: discovery, training, and every evaluation task on both real models.

For each model: discover the heads (``pear_lens.discover``), choose K from the
ablation curve (``pear_lens.ablation.choose_k``), learn τ on the top-K heads
(``pear_lens.train``, the artifact), learn τ on K random heads for each control
seed, and evaluate baseline, PEAR, the random-K controls (and with ``--uniform``
every head times the mean PEAR τ) on identical items of every task (n items each, task
sizes and prompt styles from ``data/calibration.json``). Writes eval folders
under ``--runs``, then ``--report`` (``summary.md`` for the README, ``summary.html``,
``figures/``) and ``run.json`` (K, how it was chosen, heads, τ, seconds per stage),
rewritten after every task. Each model's artifact is copied to ``--publish``.

    .venv/bin/python scripts/evaluate_all.py                    # everything (see --estimate first)
    .venv/bin/python scripts/evaluate_all.py --models smollm2-135m-instruct --tasks kv closed-book
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


def train(model, heads, cache: Path | None = None, **overrides) -> tuple[dict[tuple[int, int], float], bool]:
    """Learn τ for ``heads`` on the copy proxy task (the model stays frozen): the random-K controls.

    Training is seeded, so with ``cache`` (a JSON file) τ trained before on the same weights, heads
    and recipe is read back instead of trained again; anything else is trained and written there.
    Returns τ per head, and whether it was trained now.
    """
    import json

    from pear_lens.reweight import TrainConfig, train_coefficients

    config = dataclasses.replace(TrainConfig(), **overrides)
    key = {"fingerprint": model.fingerprint, "heads": [list(h) for h in heads],
           "recipe": {k: v for k, v in dataclasses.asdict(config).items() if k != "heads"}}
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        if json.loads(json.dumps(key)) == saved["key"]:
            return {tuple(h): float(t) for h, t in zip(saved["key"]["heads"], saved["tau"])}, False
    result = train_coefficients(model, list(heads), config, progress=False)
    if cache is not None:
        atomic_write_json(cache, {"key": key, "tau": [float(t) for t in result.tau]})
    return result.coefficients(), True


def pick_k(model, run_dir: Path, args, timing: dict) -> tuple[int, str]:
    """K as given, or (``--k auto``) from the ablation curve in ``run_dir`` (run with ``--ablation-steps`` if absent)."""
    import pandas as pd

    from pear_lens import constants
    from pear_lens.ablation import AblateConfig, ablate, choose_k

    if args.k != "auto":
        return int(args.k), "given with --k"
    csv = run_dir / constants.ABLATION_CSV
    if csv.exists():
        df = pd.read_csv(csv)
    else:
        start = time.perf_counter()
        grid = tuple(k for k in AblateConfig.k if k <= model.n_layers * model.n_heads)  # a tiny model has few heads
        df = ablate(AblateConfig(run_dir=run_dir, k=grid, steps=args.ablation_steps, control_steps=args.ablation_steps,
                                 seeds=1, quiet=args.quiet))
        timing["ablation"] = time.perf_counter() - start
    k = choose_k(df, fraction=args.k_fraction)
    steps = "/".join(str(v) for v in sorted(df.loc[df["selection"] == "top", "steps"].unique()))
    return k, (f"smallest K of the ablation curve ({', '.join(str(v) for v in sorted(df['k'].unique()) if v)}; "
               f"{steps} steps) whose top-K heads reach {args.k_fraction:.0%} of its largest held-out copy-loss gain")


def conditions_for(model, runs: Path, args, timing: dict) -> tuple[list[C.Condition], dict]:
    """Discover, choose K, train the PEAR artifact into the discovery run, train the random-K controls."""
    from pear_lens.discover import DiscoverConfig, discover
    from pear_lens.train import TrainRunConfig, train_run

    run_dir = runs / "discovery"
    if not (run_dir / "head_scores.csv").exists():
        start = time.perf_counter()
        discover(DiscoverConfig(out=run_dir, model=model.name, overwrite=True, quiet=args.quiet))
        timing["discovery"] = time.perf_counter() - start
    k, how = pick_k(model, run_dir, args, timing)
    config = TrainRunConfig(run_dir=run_dir, top_k=k, overwrite=True, quiet=args.quiet)
    artifact = _trained_before(run_dir, config, model)
    if artifact is None:  # training is seeded: an artifact of the same heads and recipe would come out the same
        start = time.perf_counter()
        artifact, _ = train_run(config, model=model)
        timing["train_pear"] = time.perf_counter() - start
    if args.publish:
        publish(run_dir, args.publish / model.name)
    conds = [C.baseline(model), C.from_artifact(model, run_dir)]
    avoid_pear = model.n_layers * model.n_heads >= 2 * k  # enough other heads are left (K above half cannot)
    for seed in args.control_seeds:
        exclude = artifact.heads if avoid_pear else ()
        heads = C.random_heads(model.n_layers, model.n_heads, k, seed, exclude=exclude)
        start = time.perf_counter()
        budget = {"steps": args.control_steps} if args.control_steps else {}
        taus, trained = train(model, heads, cache=runs / "controls" / f"seed{seed}.json", seed=seed, **budget)
        if trained:
            timing[f"train_random_{seed}"] = time.perf_counter() - start
        label = f"random-K seed {seed}" + (f" ({args.control_steps} steps)" if args.control_steps else "")
        conds.append(C.random_k(model, taus, seed, label=label, training_budget=args.control_steps or "same as PEAR"))
    if args.uniform:
        mean_tau = float(artifact.tau.mean())
        conds.append(C.uniform(model, round(mean_tau, 3), label=f"uniform (all heads × mean PEAR τ = {mean_tau:.2f})"))
    return conds, {"k": k, "k_chosen": how, "controls_avoid_pear_heads": avoid_pear, "heads": [f"L{l}.H{h}" for l, h in artifact.heads],
                   "tau": [round(float(t), 4) for t in artifact.tau]}


def _trained_before(run_dir: Path, config, model):
    """The artifact already in ``run_dir`` if it was trained on the same heads with the same recipe, else None."""
    from pear_lens import constants
    from pear_lens.artifact import load_artifact
    from pear_lens.reweight import select_heads
    from pear_lens.train import read_discovery

    if not (run_dir / constants.PEAR_JSON).exists():
        return None
    artifact = load_artifact(run_dir, model=model)
    scores, _ = read_discovery(run_dir)
    recipe = dataclasses.asdict(config.train_config())
    same = all(artifact.training.get(key) == value for key, value in recipe.items() if key != "heads")
    return artifact if same and artifact.heads == select_heads(scores, config.train_config()) else None


PUBLISHED = ("pear.json", "coefficients.safetensors", "head_scores.csv", "discovery.json", "ablation.csv",
             "training_log.csv")


def publish(run_dir: Path, dest: Path) -> None:
    """Copy the artifact (and what produced it) to ``dest``: a folder ``pear-lens eval --artifact`` and
    ``pear-lens apply`` accept."""
    import shutil

    from pear_lens.io import staged_dir

    with staged_dir(dest, overwrite=True, kind="run", inputs=(run_dir,)) as tmp:
        for name in PUBLISHED:
            if (run_dir / name).exists():
                shutil.copy2(run_dir / name, tmp / name)


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

    n_conditions = 2 + len(args.control_seeds) + args.uniform  # baseline, PEAR, random-K seeds, uniform
    n_facts = len(load_facts())
    total = 0.0
    tasks = [TaskName(t) for t in dict.fromkeys(args.tasks)]
    for name in args.models:
        speeds = {t: _calibrated_speed(name, t) for t in tasks}
        if not args.estimate_items and all(speeds.values()):
            for task, (per_item, tokens) in speeds.items():
                n_items = args.n * n_conditions + (n_facts if task is TaskName.COUNTERFACTUAL else 0)
                total += per_item * n_items
                print(f"{name} {task.value}: {per_item:.3f} s/item measured by calibration (mean prompt {tokens:.0f} "
                      f"tokens) -> {per_item * n_items / 60:.1f} min for {n_items} generations", flush=True)
            continue
        model = load_model(name)
        hf = model.fresh_hf()
        for task in tasks:
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
    parser.add_argument("--tasks", nargs="+", default=[t.value for t in TASK_ORDER], choices=[t.value for t in TASK_ORDER])
    parser.add_argument("--n", type=int, default=300, help="items per task and condition")
    parser.add_argument("--k", default="auto", help="number of PEAR heads, or 'auto': chosen from the ablation curve")
    parser.add_argument("--k-fraction", type=float, default=0.9,
                        help="with --k auto: the smallest K reaching this fraction of the best copy-loss gain")
    parser.add_argument("--ablation-steps", type=int, default=20,
                        help="with --k auto and no ablation.csv in the discovery run: training steps per ablation run")
    parser.add_argument("--control-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--control-steps", type=int, default=None,
                        help="training steps of each random-K control (default: the same budget as PEAR)")
    parser.add_argument("--uniform", action="store_true", help="also evaluate every head scaled by the mean PEAR τ")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=Path, default=Path("runs/evaluate_all"))
    parser.add_argument("--publish", type=Path, default=Path("artifacts"),
                        help="copy each model's trained artifact here (ARTIFACT_DIR/MODEL)")
    parser.add_argument("--report", type=Path, default=Path("figures/results"))
    parser.add_argument("--estimate", action="store_true",
                        help="only predict the generation time (from calibration timings, or timing a few items)")
    parser.add_argument("--estimate-items", type=int, default=0, help="with --estimate: time this many items anew")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild --report from the models already evaluated under --runs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        report(args.runs, args.report)
        print(f"wrote {args.report}")
        return 0
    if args.k != "auto" and not args.k.isdigit():
        parser.error(f"--k must be a positive integer or 'auto', got {args.k!r}")
    if args.estimate:
        return estimate(args)

    from pear_lens.models import load_model

    for name in args.models:
        start_model = time.perf_counter()
        model = load_model(name)
        timing: dict[str, float] = {}
        conds, chosen = conditions_for(model, args.runs / name, args, timing)
        record = {**chosen, "n": args.n, "control_seeds": args.control_seeds, "control_steps": args.control_steps,
                  "batch_size": args.batch_size, "tasks": [], "seconds": timing}
        record = _carry_over(args.runs / name / RECORD, record, args.tasks)
        timing, start_model = record["seconds"], start_model - record.get("total_seconds", 0.0)
        for task in [TaskName(t) for t in dict.fromkeys(args.tasks)]:  # in the order given
            start = time.perf_counter()
            run_eval(EvalConfig(out=args.runs / name / task.value, task=task.value, model=name, n=args.n,
                                batch_size=args.batch_size, seed=0, overwrite=True, quiet=args.quiet),
                     model=model, conditions=conds)
            timing[f"eval_{task.value}"] = time.perf_counter() - start
            record["tasks"] = [t for t in record["tasks"] if t != task.value] + [task.value]
            record["total_seconds"] = time.perf_counter() - start_model
            atomic_write_json(args.runs / name / RECORD, record)
            print(f"{name} {task.value}: {timing[f'eval_{task.value}'] / 60:.1f} min", flush=True)
            # the report so far: an interrupted run still leaves every finished task reported
            report(args.runs, args.report)
    print(f"wrote {args.report}")
    return 0


RECORD = "evaluate_all.json"


def _carry_over(path: Path, record: dict, tasks: list[str]) -> dict:
    """``record``, keeping the tasks (and their seconds) of an earlier run of the same conditions.

    Same conditions means the same K, heads, τ, n, control seeds, control budget and batch size: then
    the earlier eval folders of the tasks not run again belong to this run, and the time they took
    counts in its total. Otherwise the earlier record is dropped.
    """
    import json

    if not path.exists():
        return record
    old = json.loads(path.read_text())
    if any(old.get(key) != value for key, value in record.items() if key not in ("tasks", "seconds")):
        return record
    kept = [t for t in old["tasks"] if t not in tasks]
    seconds = {k: v for k, v in old["seconds"].items() if not k.startswith("eval_") or k[5:] in kept}
    seconds.update(record["seconds"])  # the stages run again now
    total = sum(v for k, v in old["seconds"].items() if k in seconds and k not in record["seconds"])
    return {**record, "tasks": kept, "seconds": seconds, "total_seconds": total}


def report(runs: Path, out: Path) -> None:
    """The report of every model evaluated under ``runs`` (models in :data:`MODELS` order), and ``run.json``."""
    import json

    from pear_lens.evaluation.report import EvalReportConfig, write_report

    records, eval_dirs = {}, []
    for name in sorted((p.parent.name for p in runs.glob(f"*/{RECORD}")),
                       key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS)):
        records[name] = json.loads((runs / name / RECORD).read_text())
        eval_dirs += [runs / name / task for task in records[name]["tasks"]]
    write_report(EvalReportConfig(eval_dirs=tuple(eval_dirs), out=out, overwrite=True))
    atomic_write_json(out / "run.json", {"models": records})


if __name__ == "__main__":
    sys.exit(main())
