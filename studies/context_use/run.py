"""Run the context-use study under its committed plan: test items, then every condition, resumable per condition.

Order of events, enforced: the plan (``figures/results/context_use/plan.json``) must be in a commit as it is
(:func:`studies.context_use.plan.check_committed_before`); then the study's seed is closed in the seed record
(no model can join the study after its first item exists); then the known test facts are probed, the items
drawn and written (``MODEL/items/TASK.jsonl``), and each condition's per-item scores written to
``MODEL/outputs/TASK/LABEL.likelihood.json.gz`` (greedy ones beside them): commit them as they come, and a rerun
resumes from them, refusing any whose inputs changed.

Run: ``python -m studies.context_use.run --model smollm2-135m-instruct`` (hours on 2 CPU cores; see the plan's
estimate); ``--only-main`` stops before the random controls.
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
    """The pilot's dev items of ``task`` (regenerated from the dev seed and the pilot's known dev facts)."""
    from studies.context_use.pilot import known_dev_facts, task_items

    facts, _ = known_dev_facts(model, RESULTS / "pilot" / model.name, 16)
    return task_items(task, model, N_SCAN, facts)[0]


def scan(model, task: TaskName, task_items: list, out: Path):
    """Every head's effect on the task's first-answer-token contrast (closed-book: log-probability) over the first
    :data:`N_SCAN` items; read back when saved."""
    from pear_lens.evaluation.task_scan import scan_items
    from pear_lens.results import HeadScores

    if (out / "scores.json").is_file():
        return HeadScores.load(out)
    style = settings_for(model.name, task, model.tokenizer).prompt_style
    metric = "logprob" if task is TaskName.CLOSED_BOOK else "logit_diff"
    scores, _ = scan_items(model, task_items[:N_SCAN], style, name=f"{task.value} ({out.name})", metric=metric,
                           progress=False)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only-main", action="store_true", help="stop before the random controls: the five main "
                                                             "conditions, the head scans and the task-scan heads")
    args = ap.parse_args(argv)
    commit = check_committed_before()
    plan = json.loads((RESULTS / "plan.json").read_text(encoding="utf-8"))
    mplan = next((m for m in plan["models"] if m["model"] == args.model), None)
    if mplan is None:
        raise SystemExit(f"{args.model} is not in the plan; the plan's models: "
                         f"{', '.join(m['model'] for m in plan['models'])}")
    model = load_model(args.model)
    if model.fingerprint != mplan["fingerprint"]:
        raise SystemExit(f"{args.model}'s weights are not the ones the plan was written for")
    close_study(REGISTRY, STUDY)
    folder = RESULTS / args.model
    items = test_items(model, plan, mplan, folder, args.batch_size)
    conds = conditions(model, mplan, args.only_main)
    key = {"fingerprint": model.fingerprint, "plan_commit": commit}
    settings = {t: settings_for(args.model, t, model.tokenizer) for t in items}
    clusters = {t: fact_clusters(v) if t in (TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK) else None
                for t, v in items.items()}
    for t, v in items.items():
        print(f"{args.model} · {t.value}: {len(v)} items ({items_digest(v)})", flush=True)
    def run_condition(i: int, cond: cond_mod.Condition, tasks=tuple(items)) -> None:
        # one model per condition, shared by the tasks (a fresh load costs seconds); built only if a task needs it
        shared = _Once(cond.build)
        once = replace(cond, build=shared)
        for task in tasks:
            if task is TaskName.CLOSED_BOOK and cond.cad_alpha is not None:
                continue  # CAD contrasts with and without the context: closed-book has none
            evaluate_likelihood(args.model, task.value, items[task], [once], model.tokenizer, settings[task],
                                n_ctx=model.n_ctx, batch_size=args.batch_size, clusters=clusters[task],
                                cache_dir=folder / "outputs" / task.value, cache_key=key, progress=False)
            if mplan["endpoints"] == "all" and i < N_MAIN:
                for no_empty in (False, True):
                    evaluate(args.model, task.value, items[task], [once], model.tokenizer, settings[task],
                             n_ctx=model.n_ctx, batch_size=args.batch_size, cache_key=key, progress=False,
                             cache_dir=folder / "outputs" / task.value / ("greedy_no_empty" if no_empty else "greedy"),
                             no_empty=no_empty)
        print(f"  {cond.label}" + ("" if shared.built else " (from the committed outputs)"), flush=True)

    for i, cond in enumerate(conds[:N_MAIN]):
        run_condition(i, cond)
    k = len(conds[1].coefficients)
    for task in items:
        if task is not TaskName.CLOSED_BOOK:  # the selection is for context use; closed-book has no context
            dev = scan(model, task, dev_items(model, task), folder / "scans" / f"dev_{task.value}")
            chosen = dev.top_k(k)
            run_condition(N_MAIN, cond_mod.pruned(model, chosen, f"task-scan heads pruned ({task.value})",
                                                  chosen_on=f"dev scan of {N_SCAN} pilot items"), tasks=(task,))
        scan(model, task, items[task], folder / "scans" / f"test_{task.value}")
    if not args.only_main:
        for i, cond in enumerate(conds[N_MAIN:], start=N_MAIN):
            run_condition(i, cond)
    print(f"{args.model}: every condition done; commit {folder.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
