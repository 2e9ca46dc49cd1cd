"""Every statistic of a confirmatory run, recomputed from its saved items and outputs (nothing else is read).

:func:`load_run` reads one model's folder (:mod:`studies.confirmatory.run`); :func:`endpoint_table`
gives one row per task with PEAR's difference from the baseline, the planned test, Holm's adjustment over
the model's family, the verdict word of the plan's rule, PEAR's rank among the controls and its difference
from their mean; :func:`condition_table`, :func:`error_table` and :func:`position_table` give the rest, and
:func:`summarise` one model's record for run.json. Every number is a function of the per-item outputs, so
anyone can check the table from the repository; :mod:`studies.confirmatory.document` writes them out.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.stage_cache import read_record
from studies.confirmatory import plan as PL
from studies.confirmatory.run import (PEAR_RETRAINED, PLAN_JSON, RECORD_JSON, RETRACE_TOLERANCE, iter_outputs,
                                         load_items)
from pear_lens.evaluation.tasks.facts import fact_clusters
from pear_lens.evaluation.outcomes import error_breakdown, loops, memorised_answer_rate
from pear_lens.evaluation.runner import score_items
from pear_lens.evaluation.stats import (bootstrap_ci, controls_distribution, empirical_p, holm, mcnemar_exact,
                                        paired_cluster_bootstrap_diff, paired_diff_vs_controls)
from pear_lens.evaluation.tasks import TaskName
from pear_lens.evaluation.verdict import VerdictRule

UNIFORM, LAYER_MATCHED = "uniform", "layer_matched"


@dataclass
class ConfirmRun:
    """One model's confirmatory run as saved: plan, items, outputs and τ records."""

    folder: Path
    plan: PL.ConfirmatoryPlan
    sha256: str
    items: dict[str, list]
    outputs: dict[str, dict[str, dict[str, Any]]]
    """task → condition id → saved record (``outputs``, ``label``, ``key``, ``seconds``)."""
    tau: dict[str, dict[str, Any]]
    record: dict[str, Any]

    def correct(self, task: str) -> dict[str, np.ndarray]:
        """Per condition id, whether each item (in item order) was answered correctly."""
        items = self.items[task]
        ids = [it.item_id for it in items]
        out = {}
        for cid, rec in self.outputs[task].items():
            if rec["item_ids"] != ids:
                raise PearLensError(f"{self.folder}: outputs of {cid} on {task} are for other items; rerun the stage")
            out[cid] = np.asarray(score_items(items, rec["outputs"]), dtype=bool)
        return out

    def controls(self, task: str, kind: str, arm: str = "") -> list[str]:
        """Condition ids of the controls of ``kind`` evaluated on ``task`` (``arm="_unclipped"`` for those)."""
        return sorted(c for c in self.outputs[task] if c.startswith(f"{kind}{arm}_s"))


def load_run(folder: str | Path) -> ConfirmRun:
    folder = Path(folder)
    plan, sha = PL.read_plan(folder / PLAN_JSON)
    items, outputs = {}, {}
    for task in plan.tasks():
        path = folder / "items" / f"{task}.jsonl.gz"
        if not path.exists():
            continue
        items[task] = load_items(path, TaskName(task))[0]
        outputs[task] = dict(iter_outputs(folder, task))
    tau = {p.stem: read_record(p) for p in sorted((folder / "tau").glob("*.json"))}
    record = json.loads((folder / RECORD_JSON).read_text()) if (folder / RECORD_JSON).exists() else {}
    return ConfirmRun(folder, plan, sha, items, outputs, tau, record)


def clusters_of(run: ConfirmRun, task: str) -> list[str] | None:
    """Resampling units: the fact for counterfactual items (two items can ask one fact), else one per item."""
    return fact_clusters(run.items[task]) if task == TaskName.COUNTERFACTUAL.value else None


def first_per_fact(run: ConfirmRun, task: str) -> np.ndarray:
    """Mask keeping the first item of every fact (the one-item-per-fact sensitivity rows)."""
    seen: set[str] = set()
    keep = []
    for c in fact_clusters(run.items[task]):
        keep.append(c not in seen)
        seen.add(c)
    return np.asarray(keep)


def _vs_baseline(run: ConfirmRun, task: str, pear: np.ndarray, base: np.ndarray, clusters, seed: int,
                 resamples: int) -> dict[str, float]:
    diff = paired_cluster_bootstrap_diff(pear, base, clusters, n_resamples=resamples, seed=seed)
    mcn = mcnemar_exact(pear, base)
    # the planned test: the clustered bootstrap where items share a fact, exact McNemar where they are independent
    p = diff.p_value if clusters is not None else mcn.p_value
    return {"delta": diff.estimate, "ci_low": diff.ci_low, "ci_high": diff.ci_high, "p_raw": p,
            "p_mcnemar": mcn.p_value, "n_items": diff.n_items, "n_clusters": diff.n_clusters}


def rank_among(pear: np.ndarray, base: np.ndarray, controls: list[np.ndarray]) -> tuple[int, float]:
    """(controls at least as good as PEAR, empirical p) on the same items, compared by item counts.

    Counts are integers, so a control that ties PEAR counts as "at least PEAR"; differences of float means
    could miss a tie by a rounding step and make the rank p one step too small.
    """
    gain = int(pear.sum()) - int(base.sum())
    gains = [int(c.sum()) - int(base.sum()) for c in controls]
    return int(sum(g >= gain for g in gains)), empirical_p(float(gain), [float(g) for g in gains])  # exact: integers


def endpoint_table(run: ConfirmRun, sensitivity: bool = True) -> pd.DataFrame:
    """One row per planned task (plus counterfactual's one-item-per-fact row): PEAR against the baseline with
    the planned test, Holm over the model's family, the verdict word, and PEAR against the controls."""
    plan, stats = run.plan, run.plan.statistics
    seed, resamples = int(stats["seed"]), int(stats["bootstrap_resamples"])
    rule = VerdictRule(alpha=plan.rule["alpha"], correction=plan.rule["correction"])
    planned = PL.planned_conditions(plan)
    rows = []
    for e in plan.endpoints:
        if e.task not in run.outputs or not {"baseline", "pear"} <= set(run.outputs[e.task]):
            continue
        correct = run.correct(e.task)
        masks = [("all items", np.ones(len(run.items[e.task]), dtype=bool))]
        if sensitivity and e.task == TaskName.COUNTERFACTUAL.value:
            masks.append(("one item per fact", first_per_fact(run, e.task)))
        for subset, mask in masks:
            clusters = clusters_of(run, e.task)
            clusters = None if clusters is None or subset != "all items" else list(np.asarray(clusters)[mask])
            base, pear = correct["baseline"][mask], correct["pear"][mask]
            row = {"model": plan.model, "task": e.task, "role": e.role, "kind": e.kind, "subset": subset,
                   "baseline": base.mean(), "pear": pear.mean(),
                   **_vs_baseline(run, e.task, pear, base, clusters, seed, resamples)}
            for kind in (UNIFORM, LAYER_MATCHED):
                ids = run.controls(e.task, kind)
                wanted = sum(c.startswith(f"{kind}_s") for c in planned[e.task])
                deltas = [correct[c][mask].mean() - base.mean() for c in ids]
                row[f"{kind}_done"], row[f"{kind}_planned"] = len(ids), wanted
                if ids:
                    spread = controls_distribution(deltas)
                    vs = paired_diff_vs_controls(pear, np.stack([correct[c][mask] for c in ids]), clusters,
                                                 n_resamples=resamples, seed=seed)
                    row.update({f"{kind}_median": spread.median, f"{kind}_q10": spread.q10, f"{kind}_q90": spread.q90,
                                f"{kind}_min": spread.low, f"{kind}_max": spread.high,
                                **dict(zip((f"{kind}_n_at_least_pear", f"{kind}_rank_p"),
                                           rank_among(pear, base, [correct[c][mask] for c in ids]))),
                                f"pear_minus_{kind}": vs.estimate, f"pear_minus_{kind}_low": vs.ci_low,
                                f"pear_minus_{kind}_high": vs.ci_high})
            for arm in ("fixed_damping", "pear_unclipped"):
                if arm in correct:
                    row[f"{arm}_delta"] = correct[arm][mask].mean() - base.mean()
            if "fixed_damping" in correct:  # does learning τ add to damping the same heads? paired, same test
                vs = _vs_baseline(run, e.task, pear, correct["fixed_damping"][mask], clusters, seed, resamples)
                row.update({"pear_minus_fixed_damping": vs["delta"], "pear_minus_fixed_damping_low": vs["ci_low"],
                            "pear_minus_fixed_damping_high": vs["ci_high"], "pear_minus_fixed_damping_p": vs["p_raw"]})
            # the unclipped arm's own controls (same larger learning rate): too few for a rank test, so their
            # deltas are kept one by one, and how many of them reach PEAR unclipped's
            unclipped = [c for kind in (UNIFORM, LAYER_MATCHED) for c in run.controls(e.task, kind, "_unclipped")]
            row["unclipped_controls_done"] = len(unclipped)
            row["unclipped_controls_planned"] = sum("_unclipped_s" in c for c in planned[e.task])
            if unclipped:
                row["unclipped_controls_deltas"] = [float(correct[c][mask].mean() - base.mean()) for c in unclipped]
                if "pear_unclipped" in correct:
                    row["unclipped_controls_n_at_least_pear"] = rank_among(
                        correct["pear_unclipped"][mask], base, [correct[c][mask] for c in unclipped])[0]
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    main = df["subset"] == "all items"
    # Holm over the plan's whole family: a test not run yet counts as p = 1 (it cannot make another test's
    # adjustment smaller than the complete family would), and no word is given until the family is complete
    missing = len(plan.endpoints) - int(main.sum())
    adjusted = rule.adjust(np.concatenate([df.loc[main, "p_raw"].to_numpy(), np.ones(missing)]))
    df["p_holm"] = np.nan
    df.loc[main, "p_holm"] = adjusted[: int(main.sum())]
    df["verdict"] = ""
    for i in df.index[main]:
        df.loc[i, "verdict"] = (rule.verdict(df.loc[i, "delta"], df.loc[i, "p_holm"], df.loc[i, "kind"]).value
                                if not missing else f"pending ({len(plan.endpoints) - missing} of "
                                                    f"{len(plan.endpoints)} tests in)")
    # the rank test: Holm over every primary endpoint of the plan (one not ranked yet counts as p = 1), and no
    # word until every primary endpoint has all its planned controls (an interim word could flip later)
    primary = main & (df["role"] == PL.PRIMARY) & df.get(f"{UNIFORM}_rank_p", pd.Series(np.nan, index=df.index)).notna()
    df[f"{UNIFORM}_rank_p_holm"] = np.nan
    df["beyond_random_heads"] = ""
    # what the plan's controls allow at best: at or above alpha, the rule's 'yes' was out of reach from the start
    df["rank_p_floor"] = np.where(df["role"] == PL.PRIMARY, plan.rank_p_floor(), np.nan)
    df["rank_test_reachable"] = [bool(plan.rank_p_floor() < rule.alpha) if role == PL.PRIMARY else None
                                 for role in df["role"]]
    if primary.any():
        n_primary = sum(e.role == PL.PRIMARY for e in plan.endpoints)
        ranked = df.loc[primary, f"{UNIFORM}_rank_p"].to_numpy()
        adjusted = holm(np.concatenate([ranked, np.ones(n_primary - ranked.size)]))
        df.loc[primary, f"{UNIFORM}_rank_p_holm"] = adjusted[: ranked.size]
        complete = bool((df.loc[primary, f"{UNIFORM}_done"] == df.loc[primary, f"{UNIFORM}_planned"]).all()
                        and ranked.size == n_primary)
        sig = df.loc[primary, f"{UNIFORM}_rank_p_holm"] < rule.alpha
        df.loc[primary, "beyond_random_heads"] = np.where(sig, "yes", "no") if complete else "pending"
    return df


def condition_table(run: ConfirmRun) -> pd.DataFrame:
    """Accuracy of every condition on every task, with its Δ from the baseline and, where trained, its τ."""
    from pear_lens.reweight import at_step_limit
    from pear_lens.recipe import Recipe

    published = run.plan.artifact["tau"]  # PEAR's τ come from the artifact, trained with the plan's recipe
    pear_tau = {"tau": published, "at_step_limit": at_step_limit(published, Recipe(**run.plan.recipe))}
    rows = []
    for task in run.outputs:
        correct = run.correct(task)
        base = correct["baseline"].mean() if "baseline" in correct else np.nan
        for cid, ok in correct.items():
            tau = run.tau.get(cid) or (pear_tau if cid == "pear" else {})
            # how τ were trained: a control's own key, PEAR's published recipe (the plan), nothing when untrained
            recipe = tau["key"]["recipe"] if "key" in tau else run.plan.recipe if cid == "pear" else {}
            rows.append({"model": run.plan.model, "task": task, "condition": cid, "label": run.outputs[task][cid]["label"],
                         "n": int(ok.size), "accuracy": float(ok.mean()), "delta": float(ok.mean() - base),
                         "tau_mean": float(np.mean(tau["tau"])) if tau else np.nan,
                         "n_tau": len(tau["tau"]) if tau else None,
                         "tau_at_step_limit": int(sum(tau["at_step_limit"])) if tau else None,
                         "train_steps": recipe.get("steps"), "train_seed": recipe.get("seed"),
                         "train_lr": recipe.get("lr"),
                         "device": run.outputs[task][cid]["key"]["device"],
                         "dtype": run.outputs[task][cid]["key"]["dtype"],
                         "batch_size": run.outputs[task][cid]["key"]["batch_size"],
                         "seconds": run.outputs[task][cid].get("seconds")})
    counts = ("n_tau", "tau_at_step_limit", "train_steps", "train_seed")  # whole numbers, blank where untrained
    return pd.DataFrame(rows).astype({c: "Int64" for c in counts}) if rows else pd.DataFrame()


def error_table(run: ConfirmRun) -> pd.DataFrame:
    """Answer kinds per condition and task (correct, empty, another item's answer, memorised, looping, other;
    each task lists the kinds its items can get, closed-book only correct, empty, looping and other)."""
    frames = []
    for task in run.outputs:
        outs = {cid: rec["outputs"] for cid, rec in run.outputs[task].items()}
        df = error_breakdown(run.items[task], outs)
        df.insert(0, "task", task)
        df.insert(0, "model", run.plan.model)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def looping_rates(run: ConfirmRun) -> dict[str, dict[str, dict[str, float]]]:
    """task → condition → ``share``: outputs that loop whatever their kind; ``correct_share``: outputs that loop
    and still score correct (the accuracy counts them, the looping kind does not)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, outs in run.outputs.items():
        correct = run.correct(task)
        for cid, rec in outs.items():
            loop = np.asarray([loops(o) for o in rec["outputs"]], dtype=bool)
            out.setdefault(task, {})[cid] = {"share": float(loop.mean()),
                                             "correct_share": float((loop & correct[cid]).mean())}
    return out


def memorised_rates(run: ConfirmRun) -> dict[str, float]:
    task = TaskName.COUNTERFACTUAL.value
    if task not in run.outputs:
        return {}
    return {cid: memorised_answer_rate(run.items[task], rec["outputs"]) for cid, rec in run.outputs[task].items()}


def head_overlap(run: ConfirmRun) -> dict[str, float]:
    """Mean share of heads two draws of one control kind have in common (0: disjoint, 1: the same heads)."""
    out = {}
    for kind in (UNIFORM, LAYER_MATCHED):
        draws = [{tuple(h) for h in rec["key"]["heads"]} for cid, rec in run.tau.items() if cid.startswith(f"{kind}_s")]
        pairs = list(itertools.combinations(draws, 2))
        if pairs:
            out[kind] = float(np.mean([len(a & b) / len(a) for a, b in pairs]))
    return out


def controls_sharing_pear_heads(run: ConfirmRun) -> list[str]:
    """Controls (any kind, any learning rate) whose drawn heads include one of PEAR's; the draws exclude
    PEAR's heads, and this reads it off the saved τ records instead of trusting the drawing code."""
    pear = {tuple(h) for h in run.plan.artifact["heads"]}
    return sorted(cid for cid, rec in run.tau.items()
                  if cid.startswith((UNIFORM, LAYER_MATCHED)) and pear & {tuple(h) for h in rec["key"]["heads"]})


SETTLE_STEPS = 10
"""The last steps over which :func:`step_limit_table` measures how far τ still moved."""


def step_limit_table(run: ConfirmRun) -> pd.DataFrame:
    """Per trained condition: how many τ sit at the step limit, of how many (the unclipped arm's criterion),
    the largest |τ − 1| as a share of the limit, and, where the τ path was saved, the largest move of a τ in
    the last :data:`SETTLE_STEPS` steps as a share of the most it could move in them (the summed learning
    rate): near 1, τ was still moving at full speed when training stopped; near 0, it had settled."""
    from pear_lens.reweight import at_step_limit, step_limit
    from pear_lens.recipe import Recipe

    published, recipe = run.plan.artifact["tau"], Recipe(**run.plan.recipe)
    limit = step_limit(recipe)
    rows = [{"condition": "pear (published)", "n_tau": len(published),
             "at_step_limit": sum(at_step_limit(published, recipe)), "step_limit": limit,
             "largest_move_share": max(abs(t - 1) for t in published) / limit, "tau": published}]
    for cid, rec in run.tau.items():
        row = {"condition": cid, "n_tau": len(rec["tau"]), "at_step_limit": int(sum(rec["at_step_limit"])),
               "step_limit": rec["step_limit"], "largest_move_share": max(abs(t - 1) for t in rec["tau"]) / rec["step_limit"],
               "tau": [round(t, 4) for t in rec["tau"]]}
        path, lrs = rec.get("tau_trajectory"), rec.get("lr_curve")
        if path and lrs and len(lrs) >= SETTLE_STEPS:
            last = np.asarray(path[-1]) - np.asarray(path[-1 - SETTLE_STEPS])
            row["last_steps_move_share"] = float(np.abs(last).max() / sum(lrs[-SETTLE_STEPS:]))
        rows.append(row)
    return pd.DataFrame(rows)


def pear_retrained(run: ConfirmRun) -> dict[str, Any] | None:
    """PEAR's τ retrained on this run's device against the published ones (None until retrained): the
    largest |τ difference|, whether it is within :data:`~studies.confirmatory.run.RETRACE_TOLERANCE`
    (then training where the controls were gives PEAR its published τ up to that gap; the retrained τ are not
    evaluated), the device it was retrained on, and the retrained τ."""

    rec = run.tau.get(PEAR_RETRAINED)
    if rec is None:
        return None
    gap = max(abs(a - b) for a, b in zip(rec["tau"], run.plan.artifact["tau"]))
    return {"gap": gap, "tolerance": RETRACE_TOLERANCE, "within_tolerance": bool(gap <= RETRACE_TOLERANCE),
            "device": rec["key"].get("device"), "tau": [round(t, 6) for t in rec["tau"]]}


def position_table(run: ConfirmRun, task: str) -> pd.DataFrame:
    """Accuracy by gold position: baseline and PEAR with their 95 % bootstrap intervals (items at that position
    resampled), and the uniform controls: each one's accuracy (``controls``, a list) and their median and
    10–90 % quantiles."""
    items = run.items[task]
    pos = np.asarray([it.gold_position if it.gold_position is not None else -1 for it in items])
    correct = run.correct(task)
    rows = []
    for p in sorted(set(pos.tolist()) - {-1}):
        at = pos == p
        ctrl = [float(correct[c][at].mean()) for c in run.controls(task, UNIFORM)]
        row: dict[str, Any] = {"task": task, "gold_position": int(p), "n": int(at.sum())}
        for arm in ("baseline", "pear"):
            low, high = bootstrap_ci(correct[arm][at], seed=int(p))
            row.update({arm: float(correct[arm][at].mean()), f"{arm}_ci_low": low, f"{arm}_ci_high": high})
        if ctrl:
            q10, med, q90 = np.quantile(ctrl, [0.1, 0.5, 0.9])
            row.update(controls_median=med, controls_q10=q10, controls_q90=q90, controls_n=len(ctrl), controls=ctrl)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- the record


RECENT_PACE = 5  # measurements of a kind that price pending work


def pending_work(run: ConfirmRun) -> dict[str, Any]:
    """What is left of the plan and about how long it takes at this run's own measured pace.

    Evaluations: planned (task, condition) pairs without saved outputs. Trainings: planned controls and arms
    without a τ record, plus PEAR's retraining. The estimate prices each with the median seconds of the last
    ``RECENT_PACE`` measurements this run saved of that kind (a training; an evaluation of that task): recent,
    since the same machine's pace drifts between sessions (Gemma's trainings took 800–930 s one day and
    1130–1215 s two days later, both uncontended), and a median, since one measurement slowed by another job
    would pull a mean far up. None until one of each needed kind was measured.
    """
    planned = PL.planned_conditions(run.plan)
    evals = {t: [c for c in ids if c not in run.outputs.get(t, {})] for t, ids in planned.items()}
    trainings = [c for c in [*PL.planned_trainings(run.plan), PEAR_RETRAINED] if c not in run.tau]
    seconds = run.record.get("seconds", {})

    def median(prefix: str) -> float | None:  # the record keeps its measurements in the order they were made
        values = [v for k, v in seconds.items() if k.startswith(prefix)][-RECENT_PACE:]
        return float(np.median(values)) if values else None

    costs = [(len(trainings), median("train/"))] + [(len(m), median(f"eval/{t}/")) for t, m in evals.items()]
    known = all(sec is not None for n, sec in costs if n)
    minutes = sum(n * sec for n, sec in costs if n) / 60 if known else None
    return {"evaluations": sum(len(m) for m in evals.values()), "trainings": len(trainings),
            "minutes_estimate": minutes, "devices": run.record.get("devices", []),
            "basis": f"the median seconds of the last {RECENT_PACE} trainings and of the last {RECENT_PACE} "
                     "evaluations of each task this run measured"}


def plan_created(run: ConfirmRun) -> str | None:
    return json.loads((run.folder / PLAN_JSON).read_text()).get("created")


def _odd_conditions(outs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """key field ("items", "settings") → the conditions whose value differs from the one most of the task's
    conditions share (empty when they all agree)."""
    odd = {}
    for field in ("items", "settings"):
        values = {cid: json.dumps(rec["key"].get(field), sort_keys=True) for cid, rec in outs.items()}
        common = max(set(values.values()), key=list(values.values()).count) if values else None
        if any(v != common for v in values.values()):
            odd[field] = sorted(cid for cid, v in values.items() if v != common)
    return odd


NOT_RETRAINED = "PEAR's τ not yet retrained on this run's device"


def summarise(run: ConfirmRun, study_closed: str = "", table: pd.DataFrame | None = None) -> dict[str, Any]:
    """The record of one model for run.json: plan, its SHA-256, deviations, the tables' numbers.

    ``study_closed``: when the plan's study drew its first items (the seed registry); a plan fixed after
    that is named among the deviations. ``table``: ``endpoint_table(run)`` if already computed (its
    bootstraps are the report's slow part)."""
    table = endpoint_table(run) if table is None else table
    done = {t: list(outs) for t, outs in run.outputs.items()}
    keys = [rec["key"] for outs in run.outputs.values() for rec in outs.values()]
    # what the outputs were made on, as their keys record it (measured off the weights when they ran)
    measured: dict[str, Any] = {k: ", ".join(sorted({str(key.get(k)) for key in keys}))
                                for k in ("device", "dtype", "batch_size") if keys}
    measured["n_items"] = {t: len(items) for t, items in run.items.items()}
    measured["mixed"] = {t: _odd_conditions(outs) for t, outs in run.outputs.items()}
    created = plan_created(run)
    deviations = PL.deviations(run.plan, done, measured)
    missing = PL.missing_conditions(run.plan, done)  # pending work, not a departure that will stand
    retrained = pear_retrained(run)
    if retrained is None:
        deviations.append(f"{NOT_RETRAINED} (studies/confirm.py does it after the planned conditions)")
    elif not retrained["within_tolerance"]:
        deviations.append(f"PEAR's τ retrained on {retrained['device']} differ from the published τ by up to "
                          f"{retrained['gap']:.2g} (more than {retrained['tolerance']:g}): the controls were "
                          "trained on this device, PEAR's τ on the artifact's")
    if study_closed and created and created > study_closed:
        deviations.insert(0, f"this plan was fixed on {created}, after its study had drawn its first test items "
                             f"(by {study_closed}); the plan is computed from the published artifact and the "
                             "exploratory record alone (make_plan), so no confirmatory result is an input to it")
    return {"plan": run.plan.to_dict(), "plan_sha256": run.sha256, "plan_created": created,
            "test_seed": run.plan.test_seed, "study_items_first_drawn": study_closed or None,
            "deviations": deviations,
            # what stays a deviation once the pending work is done (the status line names these)
            "standing_deviations": [d for d in deviations if d not in missing and not d.startswith(NOT_RETRAINED)],
            "pending": pending_work(run), "endpoints": _records(table),
            "conditions": _records(condition_table(run)), "answer_kinds": _records(error_table(run)),
            "memorised_answer_rate": memorised_rates(run), "looping_rate": looping_rates(run),
            "head_overlap": head_overlap(run), "step_limit": _records(step_limit_table(run)),
            "pear_retrained": retrained,
            "devices": run.record.get("devices", []), "seconds": run.record.get("seconds", {})}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def study_closed_at(registry: str | Path | None, run: ConfirmRun) -> str:
    """When the study that claimed ``run``'s test seed drew its first items ('' when not recorded)."""
    from studies.confirmatory.ledger import used_seeds

    if registry is None or not Path(registry).exists():
        return ""
    uses = used_seeds(registry)
    mine = [u for u in uses if u.seed == run.plan.test_seed and u.study
            and Path(u.record).parts[-2:] == (run.folder.name, PLAN_JSON)]
    closed = [u.closed for u in uses if mine and u.study == mine[0].study and u.closed]
    return min(closed) if closed else ""
