"""The README's results: the fair PEAR experiment on every evaluation task, for each real model.

For each model, every stage cached under ``--runs/MODEL`` and reused while its inputs are the same
(weights, heads, recipe, item seeds, n), so an interrupted run continues where it stopped:

1. **Copy task**: the unmodified model's copy accuracy on the proxy task without BOS (the reference) and
   with it; the reference is kept when it reaches 50 %, else BOS (``pear_lens.commands.discover.MIN_COPY_ACCURACY``).
2. **Discovery** on that task (``pear_lens.commands.discover``).
3. **K on dev items** (``pear_lens.evaluation.protocol``): the rule (``selection_rule``) is written down
   first; then for each K of a grid in percent of the model's heads, τ is learned for the top-K heads and
   for layer-matched random heads at a small budget (``--dev-steps``, equal for both) and scored on dev
   items of KV and MDQA (another seed than the test items, checked to share none). Dev accuracy against K
   goes to ``--figures/dev_k_MODEL.html/.png``.
4. **PEAR** at the chosen K with the full recipe (``--steps``, the reference 60), the artifact published.
5. **Controls** equal to PEAR in everything but the heads (same steps, lr, schedule, batch, precision and
   training sequences): for each ``--control-seeds`` seed a uniform and a layer-matched random draw.
6. Optionally (``--budget-steps``, for ``--budget-models``) PEAR and every control again at a longer
   budget, evaluated on ``--budget-tasks``.
7. **Evaluation** of baseline, PEAR and the controls on identical test items of every task, condition by
   condition (each condition's outputs are cached too).

Writes ``--report`` (``summary.md`` for the README, ``summary.html``, ``figures/``) and ``run.json``
(protocol, copy task, K selection with its dev accuracies, heads, τ, the measured seconds of every stage),
rewritten after every task.

    .venv/bin/python scripts/evaluate_all.py --estimate         # predicted minutes per stage
    .venv/bin/python scripts/evaluate_all.py                    # everything (resumes where it stopped)
    .venv/bin/python scripts/evaluate_all.py --models smollm2-135m-instruct --budget-steps 180
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from pear_lens.evaluation import conditions as C
from pear_lens.evaluation import protocol as P
from pear_lens.evaluation.calibration import settings_for
from pear_lens.commands.eval import EvalConfig, run_eval
from pear_lens.evaluation.tasks import TaskName
from pear_lens.io import atomic_write_json

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TASK_ORDER = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK)
RECORD = "evaluate_all.json"


# --------------------------------------------------------------------------- stages


def copy_task_stage(model, mdir: Path, args, seconds: dict) -> dict:
    """Measure clean copy accuracy without and with BOS (cached); choose by ``pear_lens.copy_task.COPY_RULE``."""
    from pear_lens.copy_task import choose_copy_task, copy_task_variants, measure_copy_tasks

    # the cache key names the tasks measure_copy_tasks measures (discovery's defaults: the reference task)
    key = {"fingerprint": model.fingerprint, "tasks": [t.to_dict() for t in copy_task_variants(model)]}
    measured, seconds["copy_task"], _ = P.cached_stage(mdir / "copy_task.json", key,
                                                       lambda: measure_copy_tasks(model))
    return choose_copy_task(model.name, measured, args.allow_weak_copy_task)


def discovery_stage(model, mdir: Path, prepend_bos: bool, args, seconds: dict) -> Path:
    """The discovery run for these weights on the chosen copy task (reused when it is one already)."""
    from pear_lens import constants
    from pear_lens.commands.discover import DiscoverConfig, discover
    from pear_lens.task import ProxyTask

    run_dir = mdir / "discovery"
    meta = run_dir / constants.DISCOVERY_JSON
    info = json.loads(meta.read_text()) if meta.exists() and (run_dir / constants.HEAD_SCORES_CSV).exists() else {}
    same = (info.get("model", {}).get("fingerprint") == model.fingerprint
            and bool(info.get("config", {}).get("prepend_bos", False)) == prepend_bos)
    if not same:
        discover(DiscoverConfig(out=run_dir, model=model.name, task=ProxyTask(prepend_bos=prepend_bos), overwrite=True,
                                allow_weak_copy_task=args.allow_weak_copy_task, no_png=args.no_png, quiet=args.quiet,
                                device=args.device))
        info = json.loads(meta.read_text())
    if info.get("seconds") is not None:  # runs from before discovery timed itself say nothing
        seconds["discovery"] = info["seconds"]
    return run_dir


def dev_stage(model, scores, mdir: Path, recipe, args, seconds: dict, name: str) -> tuple[int, dict]:
    """Choose K on dev items by :func:`pear_lens.evaluation.protocol.selection_rule` (or take ``--k``)."""
    from pear_lens.evaluation.runner import evaluate

    total = model.n_layers * model.n_heads
    test_seed = args.test_seed
    if args.k != "dev":
        return int(args.k), {"split": "given", "rule": "given with --k", "chosen": int(args.k),
                             "dev_seed": None, "test_seed": test_seed, "grid": [int(args.k)]}
    grid = P.k_grid(total, args.k_percents)
    dev_recipe = dataclasses.replace(recipe, steps=args.dev_steps)  # the same for top-K and random-K at every K
    dev_tasks = [TaskName(t) for t in dict.fromkeys(args.dev_tasks)]
    plan = {"split": "dev", "rule": P.selection_rule(dev_tasks), "grid": list(grid), "grid_percents": list(args.k_percents),
            "dev_seed": args.dev_seed, "test_seed": test_seed, "dev_steps": args.dev_steps,
            "dev_seeds": list(args.dev_seeds), "n_dev": args.dev_n, "tasks": [t.value for t in dev_tasks],
            "train_seed": recipe.seed}
    atomic_write_json(mdir / "dev" / "plan.json", plan)  # the rule is on disk before any dev result exists

    conds, jobs = [C.baseline(model)], [("baseline", 0, 0, "baseline")]
    for k in grid:
        top = scores.top_k(k)
        draws = [("top", 0, top)] + [("layer_matched", s, P.layer_matched_heads(model.n_heads, top, s).heads)
                                     for s in args.dev_seeds]
        for selection, seed, heads in draws:
            label = f"top-{k}" if selection == "top" else f"layer-matched random-{k} seed {seed}"
            stage = f"{selection}_k{k}" + (f"_seed{seed}" if selection != "top" else "")
            tau, seconds[f"dev_train/{stage}"], _ = P.cached_tau(model, heads, dev_recipe,
                                                                 mdir / "dev" / "tau" / f"{stage}.json")
            conds.append(C.folded(model, tau, label, C.ConditionKind.CUSTOM, k=k, selection=selection, seed=seed,
                                  steps=args.dev_steps))
            jobs.append((selection, k, seed, label))
    outcomes, dropped = [], {}
    for task in dev_tasks:
        settings = settings_for(model.name, task, model.tokenizer)
        split = P.dev_test_items(task, settings, n_dev=args.dev_n, n_test=args.n, dev_seed=args.dev_seed,
                                 test_seed=test_seed)
        dropped[task.value] = split.dropped
        result = evaluate(model.name, task.value, split.dev, conds, model.tokenizer, settings, n_ctx=model.n_ctx,
                          batch_size=args.batch_size, progress=not args.quiet, seed=args.dev_seed,
                          cache_dir=mdir / "dev" / task.value, cache_key={"fingerprint": model.fingerprint})
        for label, secs in result.info["seconds_per_condition"].items():
            seconds[f"dev_eval/{task.value}/{label}"] = secs
        correct = result.items.groupby("condition", sort=False)["correct"].apply(list)
        for selection, k, seed, label in jobs:
            outcomes.append({"selection": selection, "k": k, "seed": seed, "task": task.value,
                             "steps": 0 if selection == "baseline" else args.dev_steps, "correct": correct[label]})
    table = P.dev_table(outcomes, seed=args.dev_seed)
    chosen = P.select_k(table, dev_tasks)
    table.to_csv(mdir / "dev" / "dev_table.csv", index=False)
    dev_figure(table, name, args.figures, args.no_png)
    rows = [{**r, "accuracy": round(r["accuracy"], 4), "ci_low": round(r["ci_low"], 4),
             "ci_high": round(r["ci_high"], 4)} for r in table.to_dict("records")]
    return chosen, {**plan, "chosen": chosen, "dev_items_dropped_as_test_repeats": dropped, "dev_accuracy": rows}


def dev_figure(table, name: str, figures: Path, no_png: bool) -> None:
    from pear_lens.plots import dev_accuracy_curve, save_figure

    fig = dev_accuracy_curve(table, title=f"{name}: dev accuracy against K")
    save_figure(fig, figures / f"dev_k_{name}.html", formats=["html"] + ([] if no_png else ["png"]))


def pear_stage(model, run_dir: Path, k: int, recipe, args, seconds: dict):
    """The PEAR artifact at K (trained into the discovery run unless one of the same heads and recipe is there)."""
    from pear_lens.commands.train import TrainRunConfig, train_run
    from pear_lens.training_cache import matching_artifact

    fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe) if f.name not in ("heads", "top_k")}
    config = TrainRunConfig(run_dir=run_dir, top_k=k, overwrite=True, no_png=args.no_png, quiet=args.quiet, **fields)
    artifact = matching_artifact(run_dir, config, model)
    if artifact is None:  # training is seeded: an artifact of the same heads and recipe would come out the same
        artifact, _ = train_run(config, model=model)
    seconds["train_pear"] = float(artifact.training.get("seconds", 0.0))
    if args.publish:
        publish(run_dir, args.publish / model.name)
    return artifact


def control_stage(model, pear_heads, recipe, mdir: Path, args, seconds: dict, steps_tag: str = "",
                  seeds: list[int] | None = None) -> tuple[list, list]:
    """Every control (kinds × seeds): heads drawn by the control's seed, τ trained with PEAR's ``recipe``."""
    conds, records = [], []
    for kind in args.control_kinds:
        for seed in args.control_seeds if seeds is None else seeds:
            draw = P.draw_control(kind, model.n_layers, model.n_heads, pear_heads, seed)
            label = f"{draw.kind.label} seed {seed}" + steps_tag
            stage = f"{draw.kind.value}_seed{seed}_steps{recipe.steps}"
            tau, secs, _ = P.cached_tau(model, draw.heads, recipe, mdir / "tau" / f"{stage}.json")
            seconds[f"train_control/{stage}"] = secs
            conds.append(C.random_k(model, tau, seed, label=label, control=draw.kind.value, steps=recipe.steps,
                                    train_seed=recipe.seed))
            records.append({"kind": draw.kind.value, "seed": seed, "steps": recipe.steps, "train_seed": recipe.seed,
                            "label": label, "heads": P.head_names(draw.heads),
                            "tau": [round(tau[h], 4) for h in draw.heads], **draw.note})
    return conds, records


def conditions_for(model, mdir: Path, args, seconds: dict) -> tuple[dict, dict]:
    """Run every stage before the evaluation; return the conditions per role and the record so far."""
    from pear_lens.results import HeadScores
    from pear_lens.reweight import TrainConfig

    copy = copy_task_stage(model, mdir, args, seconds)
    run_dir = discovery_stage(model, mdir, copy["prepend_bos"], args, seconds)
    scores = HeadScores.load(run_dir)
    # the one recipe PEAR and every control share: steps, lr, schedule, batch, precision, training sequences
    recipe = TrainConfig(steps=args.steps, seed=args.train_seed, prepend_bos=copy["prepend_bos"])
    k, k_selection = dev_stage(model, scores, mdir, recipe, args, seconds, model.name)
    artifact = pear_stage(model, run_dir, k, recipe, args, seconds)
    pear_heads = [tuple(h) for h in artifact.heads]
    controls, control_records = control_stage(model, pear_heads, recipe, mdir, args, seconds)
    conds = {"reference": [C.baseline(model), C.from_artifact(model, run_dir), *controls], "budget": []}
    protocol = {"pear": {"steps": recipe.steps, "train_seed": recipe.seed, "label": "PEAR"},
                "controls": control_records, "k_selection": k_selection, "recipe": recipe.to_dict(), "budget": None}
    roles = [{"label": "baseline", "role": "baseline", "steps": None},
             {"label": "PEAR", "role": "pear", "steps": recipe.steps, "budget": "reference"},
             *({"label": c["label"], "role": "control", "kind": c["kind"], "seed": c["seed"], "steps": c["steps"],
                "budget": "reference"} for c in control_records)]
    if args.budget_steps and model.name in args.budget_models:
        longer = dataclasses.replace(recipe, steps=args.budget_steps)
        tag = f" ({args.budget_steps} steps)"
        tau, seconds[f"train_budget/pear_steps{longer.steps}"], _ = P.cached_tau(
            model, pear_heads, longer, mdir / "tau" / f"pear_steps{longer.steps}.json")
        pear_long = C.folded(model, tau, "PEAR" + tag, C.ConditionKind.PEAR, steps=longer.steps)
        budget_seconds: dict = {}
        controls_long, records_long = control_stage(model, pear_heads, longer, mdir, args, budget_seconds, tag,
                                                    seeds=args.budget_control_seeds or args.control_seeds)
        seconds.update({k.replace("train_control/", "train_budget/"): v for k, v in budget_seconds.items()})
        conds["budget"] = [pear_long, *controls_long]
        protocol["budget"] = {"steps": longer.steps, "train_seed": longer.seed, "tasks": list(args.budget_tasks),
                              "pear": {"steps": longer.steps, "train_seed": longer.seed, "label": "PEAR" + tag,
                                       "tau": [round(tau[h], 4) for h in pear_heads]},
                              "controls": records_long,
                              "note": "PEAR and every control trained again at the longer budget, everything else "
                                      f"equal; evaluated on {', '.join(args.budget_tasks)} only"}
        roles += [{"label": "PEAR" + tag, "role": "pear", "steps": longer.steps, "budget": "longer"},
                  *({"label": c["label"], "role": "control", "kind": c["kind"], "seed": c["seed"],
                     "steps": c["steps"], "budget": "longer"} for c in records_long)]
    if args.uniform:
        mean_tau = float(artifact.tau.mean())
        conds["reference"].append(C.uniform(model, round(mean_tau, 3),
                                            label=f"uniform (all heads × mean PEAR τ = {mean_tau:.2f})"))
        roles.append({"label": conds["reference"][-1].label, "role": "other", "steps": None})
    record = {"k": k, "k_chosen": _k_phrase(k_selection), "heads": P.head_names(pear_heads),
              "tau": [round(float(t), 4) for t in artifact.tau], "copy_task": copy, "protocol": protocol,
              "conditions": roles}
    return conds, record


def _k_phrase(sel: dict) -> str:
    if sel["split"] != "dev":
        return sel["rule"]
    return (f"{sel['rule']}, over K = {', '.join(map(str, sel['grid']))} ({', '.join(f'{p:g}' for p in sel['grid_percents'])} % "
            f"of the heads), {sel['dev_steps']} training steps, dev items seed {sel['dev_seed']} (test seed "
            f"{sel['test_seed']})")


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


def _evaluated(eval_dir: Path, conds, n: int, seed: int) -> bool:
    """Whether ``eval_dir`` holds an evaluation of exactly ``conds`` on ``n`` items of seed ``seed``."""
    from pear_lens import constants

    meta = eval_dir / constants.EVAL_JSON
    if not meta.exists():
        return False
    info = json.loads(meta.read_text())
    return (info.get("config", {}).get("n") == n and info.get("config", {}).get("seed") == seed
            and info.get("conditions") == P._plain([c.describe() for c in conds]))


def _devices(record_path: Path, device: str) -> list[str]:
    """Every device that ran stages of this record, in order: an earlier session's (the cached stages keep
    the minutes they took there), then this one's."""
    from pear_lens.models import device_description

    earlier: list[str] = []
    if record_path.exists():
        old = json.loads(record_path.read_text())
        earlier = old.get("devices") or ([old["device"]] if old.get("device") else [])
    return list(dict.fromkeys([*earlier, device_description(device)]))


def evaluate_model(name: str, args, differs: list[dict]) -> None:
    """Every stage for ``name``; ``differs``: the protocol options this run changed (:func:`differs_from_default`)."""
    from pear_lens.models import load_model

    model = load_model(name, device=args.device)
    mdir = args.runs / name
    seconds: dict[str, float] = {}
    conds, record = conditions_for(model, mdir, args, seconds)
    record.update({"n": args.n, "batch_size": args.batch_size, "test_seed": args.test_seed, "tasks": [],
                   "seconds": seconds, "devices": _devices(mdir / RECORD, args.device)})
    record["protocol"]["differs_from_default"] = differs

    def task_conds(task: TaskName) -> list:
        return conds["reference"] + (conds["budget"] if task.value in args.budget_tasks else [])

    def save() -> None:
        done = [t.value for t in TASK_ORDER if _evaluated(mdir / t.value, task_conds(t), args.n, args.test_seed)]
        for task in done:  # finished in an earlier session (same conditions): its measured minutes
            if f"eval/{task}" not in seconds:
                info = json.loads((mdir / task / "eval.json").read_text())
                seconds[f"eval/{task}"] = round(sum(info.get("seconds_per_condition", {}).values()), 2)
        record["tasks"] = done
        record["total_seconds"] = round(sum(seconds.values()), 1)
        atomic_write_json(mdir / RECORD, record)

    save()  # the protocol is on record before the first evaluation
    for task in [TaskName(t) for t in dict.fromkeys(args.tasks)]:  # in the order given
        if _evaluated(mdir / task.value, task_conds(task), args.n, args.test_seed):
            continue  # done in an earlier session (the counterfactual fact check alone would take minutes)
        result = run_eval(EvalConfig(out=mdir / task.value, task=task.value, model=name, n=args.n,
                                     batch_size=args.batch_size, seed=args.test_seed, overwrite=True, quiet=args.quiet),
                          model=model, conditions=task_conds(task), cache_dir=mdir / "outputs" / task.value)
        seconds[f"eval/{task.value}"] = round(sum(result.info["seconds_per_condition"].values()), 2)
        save()
        print(f"{name} {task.value}: {seconds[f'eval/{task.value}'] / 60:.1f} min", flush=True)
        report(args.runs, args.report, no_png=args.no_png)  # an interrupted run still leaves every finished task
    report(args.runs, args.report, no_png=args.no_png)


# --------------------------------------------------------------------------- command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", default=[t.value for t in TASK_ORDER], choices=[t.value for t in TASK_ORDER])
    parser.add_argument("--n", type=int, default=300, help="test items per task and condition")
    parser.add_argument("--test-seed", type=int, default=0, help="seed of the test items")
    parser.add_argument("--k", default="dev", help="'dev': choose K on dev items (the protocol); or a number of heads")
    parser.add_argument("--k-percents", type=float, nargs="+", default=list(P.K_PERCENTS),
                        help="the dev grid of K, in percent of the model's heads (at least 1 head each)")
    parser.add_argument("--dev-n", type=int, default=100, help="dev items per dev task; shrink this first")
    parser.add_argument("--dev-tasks", nargs="+", choices=[t.value for t in P.DEV_TASKS],
                        default=[t.value for t in P.DEV_TASKS],
                        help="tasks whose dev items choose K (the rule names them before the sweep)")
    parser.add_argument("--dev-seed", type=int, default=1, help="seed of the dev items (must differ from --test-seed)")
    parser.add_argument("--dev-steps", type=int, default=20, help="training steps of every dev run (top-K and random-K)")
    parser.add_argument("--dev-seeds", type=int, nargs="*", default=[0],
                        help="layer-matched random draws per K on the dev split (none: top-K only, which is all "
                             "the rule reads; the draws only show the dev figure's control)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of PEAR and of every control (reference: 60)")
    parser.add_argument("--train-seed", type=int, default=0,
                        help="seed of the training sequences, the same for PEAR and every control")
    parser.add_argument("--control-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds drawing the control heads (one control of each kind per seed)")
    parser.add_argument("--control-kinds", nargs="+", default=[k.value for k in P.ControlKind],
                        choices=[k.value for k in P.ControlKind])
    parser.add_argument("--budget-steps", type=int, default=None,
                        help="also train PEAR and every control for this many steps (budget sensitivity)")
    parser.add_argument("--budget-models", nargs="+", default=[MODELS[0]], help="models given the longer budget")
    parser.add_argument("--budget-tasks", nargs="+", default=[TaskName.KV.value, TaskName.MDQA.value],
                        choices=[t.value for t in TASK_ORDER], help="tasks the longer-budget conditions are evaluated on")
    parser.add_argument("--budget-control-seeds", type=int, nargs="+", default=None,
                        help="control seeds trained at the longer budget (default: every --control-seeds)")
    parser.add_argument("--uniform", action="store_true", help="also evaluate every head scaled by the mean PEAR τ")
    parser.add_argument("--allow-weak-copy-task", action="store_true",
                        help="go on when the model copies below 50%% with and without BOS (tiny models in tests)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="device of every stage (cpu, cuda, cuda:1): the cached "
                        "stages are device-independent, so a run may continue on another device")
    parser.add_argument("--runs", type=Path, default=Path("runs/evaluate_all"))
    parser.add_argument("--publish", type=Path, default=Path("artifacts"),
                        help="copy each model's trained artifact here (ARTIFACT_DIR/MODEL)")
    parser.add_argument("--report", type=Path, default=Path("figures/results"))
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="where the dev accuracy-vs-K figures go")
    parser.add_argument("--no-png", action="store_true", help="HTML figures only (PNG needs a Chrome for kaleido)")
    parser.add_argument("--estimate", action="store_true", help="only predict the run time of every stage")
    parser.add_argument("--estimate-items", type=int, default=0, help="with --estimate: time this many items anew")
    parser.add_argument("--report-only", action="store_true",
                        help="only rebuild --report (and the dev figures in --figures) from the models already "
                             "evaluated under --runs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        import pandas as pd

        report(args.runs, args.report, no_png=args.no_png)
        for table in sorted(args.runs.glob("*/dev/dev_table.csv")):  # the dev figures, drawn from the dev tables
            dev_figure(pd.read_csv(table), table.parent.parent.name, args.figures, args.no_png)
        print(f"wrote {args.report} and the dev figures in {args.figures}")
        return 0
    if args.k != "dev" and not (args.k.isdigit() and int(args.k) > 0):
        parser.error(f"--k must be a positive integer or 'dev', got {args.k!r}")
    if args.dev_seed == args.test_seed:
        parser.error("--dev-seed must differ from --test-seed: K is never chosen on the test items")
    if args.estimate:
        from pear_lens.evaluation.protocol_estimate import estimate

        return estimate(args)
    differs = differs_from_default(parser, args)
    for name in args.models:
        evaluate_model(name, args, differs)
    print(f"wrote {args.report}")
    return 0


PROTOCOL_OPTIONS = ("n", "k_percents", "dev_n", "dev_tasks", "dev_steps", "dev_seeds", "steps", "control_seeds",
                    "control_kinds")
"""Options that set how much evidence the protocol gathers: a run that changes them (to fit a slow machine)
says so in its record and in the README."""


def differs_from_default(parser: argparse.ArgumentParser, args) -> list[dict]:
    """The protocol options this run sets to other values than the defaults, e.g. ``--steps 20 (default 60)``."""
    out = []
    for dest in PROTOCOL_OPTIONS:
        value, default = getattr(args, dest), parser.get_default(dest)
        if value != default:
            out.append({"option": "--" + dest.replace("_", "-"), "value": value, "default": default})
    return out


def report(runs: Path, out: Path, no_png: bool = False) -> None:
    """The report of every model evaluated under ``runs`` (models in :data:`MODELS` order), and ``run.json``."""
    from pear_lens.evaluation.report import EvalReportConfig, write_report

    records, eval_dirs = {}, []
    for name in sorted((p.parent.name for p in runs.glob(f"*/{RECORD}")),
                       key=lambda m: MODELS.index(m) if m in MODELS else len(MODELS)):
        records[name] = json.loads((runs / name / RECORD).read_text())
        eval_dirs += [runs / name / task for task in records[name]["tasks"]]
    if eval_dirs:
        write_report(EvalReportConfig(eval_dirs=tuple(eval_dirs), out=out, overwrite=True, no_png=no_png))
    path = out / "run.json"
    kept = json.loads(path.read_text()) if path.exists() else {}  # e.g. scripts/confirm.py's 'confirmatory' section
    atomic_write_json(path, {**kept, "models": records})


if __name__ == "__main__":
    sys.exit(main())
