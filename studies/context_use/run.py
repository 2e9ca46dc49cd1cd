"""Run the context-use study under its committed plan: test items, then every condition, resumable per condition.

Order of events, enforced: the plan (``figures/results/context_use/plan.json``) must be in a commit as it is
(:func:`studies.context_use.plan.check_committed_before`); then the study's seed is closed in the seed record
(no model can join the study after its first item exists); then the known test facts are probed, the items
drawn and written (``MODEL/items/TASK.jsonl``), and each condition's per-item scores written to
``MODEL/outputs/TASK/LABEL.likelihood.json.gz`` (greedy ones beside them): commit them as they come, and a rerun
resumes from them, refusing any whose inputs changed.

Run: ``python -m studies.context_use.run --model smollm2-135m-instruct`` (hours on 2 CPU cores; see the plan's
estimate); ``--only-main`` stops before the random controls. Each condition and each head scan is a job
(:mod:`pear_lens.jobs`): ``--executor ray --workers 2 --threads 1`` (or ``submitit-local``, or ``slurm``
with ``--partition``) runs them side by side, and ``pear-lens jobs figures/results/context_use/MODEL`` says
which are done, running, pending or failed.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pear_lens.controls import ControlKind, draw_control
from pear_lens.evaluation import conditions as cond_mod
from pear_lens.evaluation.runner import evaluate, evaluate_likelihood
from pear_lens.evaluation.splits import items_digest
from pear_lens.evaluation.tasks import TASKS as TASKS_SPEC
from pear_lens.evaluation.tasks import TaskName, generate_items
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.facts import fact_clusters, generate_counterfactual
from pear_lens.evaluation.tasks.items import write_jsonl
from pear_lens.models import load_model
from pear_lens.stage_cache import OnMismatch
from studies.confirmatory.ledger import close_study
from studies.context_use.design import REGISTRY, RESULTS, TEST, closed_book, known_bank_facts
from studies.context_use.plan import CAD_ALPHA, N_SCAN, STUDY, check_committed_before

ROOT = Path(__file__).resolve().parents[2]
N_MAIN = 5
"""The main conditions (baseline, PEAR, damped and pruned PEAR heads, CAD): also decoded greedily."""
TASKS = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK)


def test_items(model, plan: dict[str, Any], mplan: dict[str, Any], folder: Path, batch_size: int) -> dict:
    """Each task's test items: read back when written, else drawn from the plan's seed and written first."""
    kept, _ = known_bank_facts(model, TEST, folder / "known_facts.json", batch_size, OnMismatch.REFUSE)
    n, seed = mplan["n_items_per_task"], plan["test_seed"]
    out = {}
    for task in TASKS:
        path = folder / "items" / f"{task.value}.jsonl"
        if not path.is_file():
            settings = settings_for(model.name, task, model.tokenizer)
            if task is TaskName.COUNTERFACTUAL:
                items = generate_counterfactual(kept, n, n_context=settings.n_context, seed=seed)
            elif task is TaskName.CLOSED_BOOK:  # a seeded sample: the bank is ordered by country code
                items = random.Random(seed).sample(closed_book(kept), min(n, len(kept)))
            else:
                items = generate_items(task, settings, n, seed=seed)
            write_jsonl(items, path)
        out[task] = TASKS_SPEC[task].load(path)
    return out


class _Once:
    """A condition's build, run at most once."""

    def __init__(self, build):
        self.build, self.model, self.built = build, None, False

    def __call__(self):
        if self.model is None:
            self.model, self.built = self.build(), True
        return self.model


def dev_items(model, task: TaskName) -> list:
    """The pilot's dev items of ``task`` (regenerated from the dev seed and the pilot's committed known dev facts:
    refused, never probed again, if they no longer match the model or its settings, since they choose the heads)."""
    from studies.context_use.pilot import known_dev_facts, task_items

    facts, _ = known_dev_facts(model, RESULTS / "pilot" / model.name, 16, on_mismatch="refuse")
    return task_items(task, model, N_SCAN, facts)[0]


def scan(model, task: TaskName, task_items: list, out: Path, method: str = "activation", n_items: int = N_SCAN):
    """Every head's effect on the task's first-answer-token contrast (closed-book: log-probability) over the first
    ``n_items`` items, by ``method`` (the exact scan, or attribution where the amendment says); read back when saved.
    Each batch's result is kept in ``parts/NAME`` beside it as it is made (committed with the outputs), so a scan
    stopped by the end of a session resumes where it stopped."""
    from pear_lens.evaluation.task_scan import scan_items
    from pear_lens.results import HeadScores

    if (out / "scores.json").is_file():
        saved = HeadScores.load(out)
        items = saved.extra.get("items", {})
        if saved.method != method or len(items.get("kept", [])) + len(items.get("dropped", [])) != min(
                n_items, len(task_items)):
            raise SystemExit(f"{out} holds a {saved.method} scan of other items than this job's {method} scan of "
                             f"{n_items}; move it aside to rescan")
        return saved
    style = settings_for(model.name, task, model.tokenizer).prompt_style
    metric = "logprob" if task is TaskName.CLOSED_BOOK else "logit_diff"
    scores, _ = scan_items(model, task_items[:n_items], style, name=f"{task.value} ({out.name})", metric=metric,
                           method=method, progress=False, checkpoint=out.parent / "parts" / out.name)
    scores.save(out)
    print(f"  head scan {out.name} saved", flush=True)
    return scores


MAIN_LABELS = ("baseline", "PEAR", "PEAR heads damped", "PEAR heads pruned", f"CAD α={CAD_ALPHA:g}")
"""The main conditions, in the order the run evaluates them (these are also decoded greedily)."""


def main_conditions(model, pear: cond_mod.Condition) -> list[cond_mod.Condition]:
    """Baseline, PEAR, PEAR's heads damped at PEAR's mean τ (untrained), PEAR's heads pruned, and CAD."""
    heads = sorted(pear.coefficients)
    tau = sum(pear.coefficients.values()) / len(heads)
    conds = [cond_mod.baseline(model), pear, cond_mod.damped(model, heads, tau, "PEAR heads damped"),
             cond_mod.pruned(model, heads, "PEAR heads pruned"), cond_mod.context_aware(model, CAD_ALPHA)]
    assert len(conds) == N_MAIN, "N_MAIN counts the main conditions"
    return conds


def trained_controls(model: str) -> list[Path]:
    """The issue-16 study's committed trained uniform controls of ``model`` (reused, not retrained)."""
    return sorted((ROOT / "figures" / "results" / "confirm" / model / "tau").glob("uniform_s*.json"))


def conditions(model, plan_model: dict[str, Any], only_main: bool) -> list[cond_mod.Condition]:
    pear = cond_mod.from_artifact(model, ROOT / "artifacts" / model.name)
    heads = sorted(pear.coefficients)
    tau = sum(pear.coefficients.values()) / len(heads)  # as in main_conditions
    conds = main_conditions(model, pear)
    if only_main:
        return conds
    from studies.context_use.plan import N_DAMPED, N_PRUNED

    kinds = {"uniform": ControlKind.UNIFORM, "layer-matched": ControlKind.LAYER_MATCHED}
    for name, count in N_DAMPED.items():
        for s in range(count):
            d = draw_control(kinds[name], model.n_layers, model.n_heads, heads, s)
            conds.append(cond_mod.damped(model, d.heads, tau, f"damped {name} s{s:02d}", seed=s, control=name))
    for name, count in N_PRUNED.items():
        for s in range(count):
            d = draw_control(kinds[name], model.n_layers, model.n_heads, heads, s)
            conds.append(cond_mod.pruned(model, d.heads, f"pruned {name} s{s:02d}", seed=s, control=name))
    if plan_model["endpoints"] == "all":
        for path in trained_controls(model.name):
            rec = json.loads(path.read_text(encoding="utf-8"))
            if rec["key"]["fingerprint"] != model.fingerprint:
                raise SystemExit(f"{path.relative_to(ROOT)} was trained on other weights; it cannot be reused")
            coef = {(int(l), int(h)): float(t) for (l, h), t in zip(rec["key"]["heads"], rec["tau"])}
            conds.append(cond_mod.random_k(model, coef, int(path.stem.split("_s")[-1]),
                                           label=f"trained uniform {path.stem.split('_')[-1]}", reused=path.name))
    return conds


# --------------------------------------------------------------------------- the study as jobs (pear_lens.jobs)
# Each condition is one job (its likelihood records on every task and, for the main ones, its greedy records),
# and each head scan is one: any executor runs them (`--executor ray --workers 2`, `slurm`, ...), a job whose
# records hold the same key is done, and a killed worker's condition is run again from scratch. The items, the
# known facts and the seed record are written by the launcher first, in this process.


class _Context:
    """What every job of one model shares, built once per worker process: the model, the items, their settings."""

    def __init__(self, model_name: str, batch_size: int):
        commit = check_committed_before()
        plan = json.loads((RESULTS / "plan.json").read_text(encoding="utf-8"))
        self.mplan = next((m for m in plan["models"] if m["model"] == model_name), None)
        if self.mplan is None:
            raise SystemExit(f"{model_name} is not in the plan; the plan's models: "
                             f"{', '.join(m['model'] for m in plan['models'])}")
        self.model = model = load_model(model_name)
        if model.fingerprint != self.mplan["fingerprint"]:
            raise SystemExit(f"{model_name}'s weights are not the ones the plan was written for")
        self.plan, self.batch_size, self.folder = plan, batch_size, RESULTS / model_name
        self.key = {"fingerprint": model.fingerprint, "plan_commit": commit}
        self.items: dict[TaskName, list] = {}
        self._conds: dict[str, tuple[int, cond_mod.Condition]] | None = None

    def load_items(self, draw: bool) -> None:
        """The test items (drawn and written first when ``draw``: only the launcher draws)."""
        if draw:
            close_study(REGISTRY, STUDY)
            self.items = test_items(self.model, self.plan, self.mplan, self.folder, self.batch_size)
        else:
            self.items = {t: TASKS_SPEC[t].load(self.folder / "items" / f"{t.value}.jsonl") for t in TASKS}
        self.settings = {t: settings_for(self.model.name, t, self.model.tokenizer) for t in self.items}
        self.clusters = {t: fact_clusters(v) if t in (TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK) else None
                         for t, v in self.items.items()}

    def condition(self, label: str) -> tuple[int, cond_mod.Condition]:
        """The condition labelled ``label`` and its place (< N_MAIN: a main one, also decoded greedily)."""
        if self._conds is None:
            conds = conditions(self.model, self.mplan, only_main=False)
            self._conds = {c.label: (i, c) for i, c in enumerate(conds)}
        for task in SCANNED_FOR_HEADS:  # built only when asked for: it reads the task's dev scan
            if label == task_scan_label(task) and label not in self._conds:
                k = len(self._conds["PEAR"][1].coefficients)
                self._conds[label] = (N_MAIN, task_scan_condition(self.model, task, k, self.folder))
        return self._conds[label]


_CONTEXTS: dict[tuple[str, int], _Context] = {}
SCANNED_FOR_HEADS = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL)
"""The tasks whose dev scan chooses heads to prune (closed-book has no context to use)."""


def _context(model_name: str, batch_size: int) -> _Context:
    if (model_name, batch_size) not in _CONTEXTS:
        ctx = _Context(model_name, batch_size)
        ctx.load_items(draw=False)
        _CONTEXTS[model_name, batch_size] = ctx
    return _CONTEXTS[model_name, batch_size]


def task_scan_condition(model, task: TaskName, k: int, folder: Path) -> cond_mod.Condition:
    """The top ``k`` heads of the dev scan of ``task`` (saved by its scan job), pruned."""
    from pear_lens.results import HeadScores

    dev = HeadScores.load(folder / "scans" / f"dev_{task.value}")
    return cond_mod.pruned(model, dev.top_k(k), task_scan_label(task),
                           chosen_on=f"dev scan ({dev.method}) of {N_SCAN} pilot items")


def task_scan_label(task: TaskName) -> str:
    return f"task-scan heads pruned ({task.value})"


def condition_tasks(ctx_items, cond: cond_mod.Condition) -> tuple[TaskName, ...]:
    """The tasks a condition is evaluated on: a task-scan condition on its own task; CAD never on closed-book
    (it contrasts with and without the context, and closed-book has none)."""
    if cond.label.startswith("task-scan heads pruned ("):
        return tuple(t for t in ctx_items if task_scan_label(t) == cond.label)
    return tuple(t for t in ctx_items if not (t is TaskName.CLOSED_BOOK and cond.cad_alpha is not None))


def condition_outputs(tasks, cond: cond_mod.Condition, main: bool) -> tuple[str, ...]:
    """The records a condition's job writes, relative to the model's folder."""
    from pear_lens.evaluation.runner import record_names

    greedy, likelihood = record_names(cond.label)
    out = []
    for task in tasks:
        out.append(f"outputs/{task.value}/{likelihood}")
        if main:
            out += [f"outputs/{task.value}/greedy/{greedy}", f"outputs/{task.value}/greedy_no_empty/{greedy}"]
    return tuple(out)


def condition_job(root: Path, model: str, label: str, batch_size: int) -> None:
    """Job: one condition on every task it applies to (records resume: a record with the same key is kept)."""
    ctx = _context(model, batch_size)
    i, cond = ctx.condition(label)
    shared = _Once(cond.build)  # one model per condition, shared by the tasks; built only if a task needs it
    once = replace(cond, build=shared)
    folder = Path(root)
    for task in condition_tasks(ctx.items, cond):
        items = ctx.items[task]
        evaluate_likelihood(model, task.value, items, [once], ctx.model.tokenizer, ctx.settings[task],
                            n_ctx=ctx.model.n_ctx, batch_size=batch_size, clusters=ctx.clusters[task],
                            cache_dir=folder / "outputs" / task.value, cache_key=ctx.key, progress=False)
        if ctx.mplan["endpoints"] == "all" and i < N_MAIN:
            for no_empty in (False, True):
                evaluate(model, task.value, items, [once], ctx.model.tokenizer, ctx.settings[task],
                         n_ctx=ctx.model.n_ctx, batch_size=batch_size, cache_key=ctx.key, progress=False,
                         cache_dir=folder / "outputs" / task.value / ("greedy_no_empty" if no_empty else "greedy"),
                         no_empty=no_empty)


def scan_job(root: Path, model: str, task: str, split: str, batch_size: int, method: str = "activation",
             n_items: int = N_SCAN) -> None:
    """Job: every head's effect on ``task`` over the first ``n_items`` items of the dev or test split by ``method``;
    split ``check``: the test items, scanned by a second method as the amendment's check (``scans/check/``)."""
    ctx = _context(model, batch_size)
    t = TaskName(task)
    items = dev_items(ctx.model, t) if split == "dev" else ctx.items[t]
    scan(ctx.model, t, items, Path(root) / "scans" / scan_folder(split, task, method), method, n_items)


def scan_folder(split: str, task: str, method: str) -> str:
    """Where a scan is saved under ``scans/``: ``SPLIT_TASK``, or ``check/METHOD_TASK`` for a check."""
    return f"check/{method}_{task}" if split == "check" else f"{split}_{task}"


def _cond_job(ctx: _Context, i: int, cond: cond_mod.Condition, inputs: tuple[str, ...] = ()):
    from pear_lens.evaluation.runner import record_names
    from pear_lens.jobs import Job

    main = ctx.mplan["endpoints"] == "all" and i < N_MAIN
    return Job(f"condition-{record_names(cond.label)[0].removesuffix('.json')}", "studies.context_use.run:condition_job",
               {"model": ctx.model.name, "batch_size": ctx.batch_size, "label": cond.label},
               outputs=condition_outputs(condition_tasks(ctx.items, cond), cond, main), inputs=inputs,
               key=_job_key(ctx))


def _job_key(ctx: _Context) -> dict[str, Any]:
    return {**ctx.key, "items": {t.value: items_digest(v) for t, v in ctx.items.items()}}


def condition_wave(ctx: _Context, only_main: bool) -> list:
    """The main conditions, then (unless ``only_main``) the random controls: what the verdict needs, first."""
    conds = conditions(ctx.model, ctx.mplan, only_main=only_main)
    return [_cond_job(ctx, i, c) for i, c in enumerate(conds)]


def scan_wave(ctx: _Context) -> list:
    """Every head scan: dev (choosing each context task's heads) and test (read beside the proxy's Δπ, which is the
    artifact's own: ``artifacts/MODEL/scores``, its per-prompt values added by ``pear-lens rescore``), by the method
    the committed amendment gives the model, and the amendment's checks; attribution's (minutes) first."""
    from pear_lens.jobs import Job
    from studies.context_use import amendment

    amended = amendment.load()  # every amendment checked against git once, for the whole wave
    methods, checks = amended["scan_methods"], amended["checks"]
    if ctx.model.name not in methods:
        raise SystemExit(f"the amendment gives {ctx.model.name} no scan method")
    jobs = []

    def add(task: TaskName, split: str, method: str, n_items: int, **extra_key) -> None:
        key = {**_job_key(ctx), "n_scan": n_items, "method": method, **extra_key}
        jobs.append(Job(f"scan-{scan_folder(split, task.value, method).replace('/', '-')}",
                        "studies.context_use.run:scan_job",
                        {"model": ctx.model.name, "batch_size": ctx.batch_size, "task": task.value, "split": split,
                         "method": method, "n_items": n_items},
                        outputs=(f"scans/{scan_folder(split, task.value, method)}",), key=key))

    for task in TASKS:
        for split in ("dev", "test") if task in SCANNED_FOR_HEADS else ("test",):
            # a dev scan is made on the pilot's items, not the test items the key names
            extra = {"dev_items": items_digest(dev_items(ctx.model, task))} if split == "dev" else {}
            add(task, split, methods[ctx.model.name], N_SCAN, **extra)
    check = checks[ctx.model.name]
    for method in check["methods"]:
        for task in check["tasks"]:
            add(TaskName(task), "check", method, check["n_items"])
    return sorted(jobs, key=lambda j: j.kwargs["method"] != "attribution")  # stable: the plan's order within


def task_scan_wave(ctx: _Context) -> list:
    """The heads each dev scan chose, pruned (their job's input: that scan, so they come last)."""
    return [_cond_job(ctx, N_MAIN, ctx.condition(task_scan_label(t))[1], inputs=(f"scans/dev_{t.value}",))
            for t in SCANNED_FOR_HEADS]


def main(argv: list[str] | None = None) -> int:
    from pear_lens.config import add_arguments, from_namespace
    from pear_lens.jobs import ExecutorOptions, Study, run_study

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only-main", action="store_true", help="stop before the random controls: the five main "
                                                             "conditions, the head scans and the task-scan heads")
    add_arguments(ap, ExecutorOptions)
    args = ap.parse_args(argv)
    opts = from_namespace(ExecutorOptions, {k: v for k, v in vars(args).items()
                                            if k in ExecutorOptions.__dataclass_fields__})
    ctx = _Context(args.model, args.batch_size)
    ctx.load_items(draw=True)  # the launcher alone draws the items, before any job exists
    _CONTEXTS[args.model, args.batch_size] = ctx  # the local executor's jobs share this model
    for t, v in ctx.items.items():
        print(f"{args.model} · {t.value}: {len(v)} items ({items_digest(v)})", flush=True)
    # the conditions the verdict needs first (main, then the random controls), then the head scans (hours each on
    # a CPU), then the conditions the dev scans choose (their jobs read the scans, so they are made after them)
    jobs: list = []
    for wave in (lambda: condition_wave(ctx, args.only_main), lambda: scan_wave(ctx), lambda: task_scan_wave(ctx)):
        jobs += wave()
        result = run_study(Study(ctx.folder, jobs), opts)
        print(result, flush=True)
        if not result.status.complete:
            return 1
    print(f"{args.model}: every condition done; commit {ctx.folder.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
