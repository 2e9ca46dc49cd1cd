"""Every statistic of a confirmatory run, recomputed from its saved items and outputs (nothing else is read).

:func:`load_run` reads one model's folder (:mod:`pear_lens.evaluation.confirm`); :func:`endpoint_table`
gives one row per task with PEAR's difference from the baseline, the planned test, Holm's adjustment over
the model's family, the verdict word of the plan's rule, PEAR's rank among the controls and its difference
from their mean; :func:`condition_table`, :func:`error_table` and :func:`position_table` give the rest.
Every number is a function of the per-item outputs, so anyone can check the table from the repository.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.evaluation import plan as PL
from pear_lens.evaluation.confirm import PLAN_JSON, RECORD_JSON, iter_outputs, load_items
from pear_lens.evaluation.facts import fact_clusters
from pear_lens.evaluation.outcomes import error_breakdown, memorised_answer_rate
from pear_lens.evaluation.runner import score_items
from pear_lens.evaluation.stats import (controls_distribution, empirical_p, holm, mcnemar_exact,
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
    import json

    folder = Path(folder)
    plan, sha = PL.read_plan(folder / PLAN_JSON)
    items, outputs = {}, {}
    for task in plan.tasks():
        path = folder / "items" / f"{task}.jsonl.gz"
        if not path.exists():
            continue
        items[task] = load_items(path, TaskName(task))[0]
        outputs[task] = dict(iter_outputs(folder, task))
    tau = {p.stem: json.loads(p.read_text()) for p in sorted((folder / "tau").glob("*.json"))}
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
                                f"{kind}_rank_p": empirical_p(row["delta"], deltas),
                                f"{kind}_n_at_least_pear": int(np.sum(np.asarray(deltas) >= row["delta"])),
                                f"pear_minus_{kind}": vs.estimate, f"pear_minus_{kind}_low": vs.ci_low,
                                f"pear_minus_{kind}_high": vs.ci_high})
            for arm in ("fixed_damping", "pear_unclipped"):
                if arm in correct:
                    row[f"{arm}_delta"] = correct[arm][mask].mean() - base.mean()
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
    primary = main & (df["role"] == PL.PRIMARY) & df.get(f"{UNIFORM}_rank_p", pd.Series(np.nan, index=df.index)).notna()
    df[f"{UNIFORM}_rank_p_holm"] = np.nan
    if primary.any():
        df.loc[primary, f"{UNIFORM}_rank_p_holm"] = holm(df.loc[primary, f"{UNIFORM}_rank_p"].to_numpy())
        complete = df[f"{UNIFORM}_done"] == df[f"{UNIFORM}_planned"]
        df["beyond_random_heads"] = ""
        sig = df[f"{UNIFORM}_rank_p_holm"] < rule.alpha
        df.loc[primary & complete, "beyond_random_heads"] = np.where(sig[primary & complete], "yes", "no")
        df.loc[primary & ~complete, "beyond_random_heads"] = "pending"
    return df


def condition_table(run: ConfirmRun) -> pd.DataFrame:
    """Accuracy of every condition on every task, with its Δ from the baseline and, where trained, its τ."""
    rows = []
    for task in run.outputs:
        correct = run.correct(task)
        base = correct["baseline"].mean() if "baseline" in correct else np.nan
        for cid, ok in correct.items():
            tau = run.tau.get(cid, {})
            rows.append({"model": run.plan.model, "task": task, "condition": cid, "label": run.outputs[task][cid]["label"],
                         "n": int(ok.size), "accuracy": float(ok.mean()), "delta": float(ok.mean() - base),
                         "tau_mean": float(np.mean(tau["tau"])) if tau else np.nan,
                         "tau_at_step_limit": int(sum(tau["at_step_limit"])) if tau else np.nan,
                         "device": run.outputs[task][cid]["key"]["device"],
                         "dtype": run.outputs[task][cid]["key"]["dtype"],
                         "batch_size": run.outputs[task][cid]["key"]["batch_size"],
                         "seconds": run.outputs[task][cid].get("seconds")})
    return pd.DataFrame(rows)


def error_table(run: ConfirmRun) -> pd.DataFrame:
    """Answer kinds per condition (correct, empty, another item's answer, memorised, other) for every task
    with context, plus the memorised-answer rate on counterfactual."""
    frames = []
    for task in run.outputs:
        if task == TaskName.CLOSED_BOOK.value:
            continue
        outs = {cid: rec["outputs"] for cid, rec in run.outputs[task].items()}
        df = error_breakdown(run.items[task], outs)
        df.insert(0, "task", task)
        df.insert(0, "model", run.plan.model)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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


def step_limit_table(run: ConfirmRun) -> pd.DataFrame:
    """Per trained condition: how many τ sit at the step limit, of how many (the unclipped arm's criterion)."""
    from pear_lens.reweight import Recipe, at_step_limit, step_limit

    rows = [{"condition": "pear (published)", "n_tau": len(run.plan.artifact["tau"]),
             "at_step_limit": sum(at_step_limit(run.plan.artifact["tau"], Recipe(**run.plan.recipe))),
             "step_limit": step_limit(Recipe(**run.plan.recipe)), "tau": run.plan.artifact["tau"]}]
    for cid, rec in run.tau.items():
        rows.append({"condition": cid, "n_tau": len(rec["tau"]), "at_step_limit": int(sum(rec["at_step_limit"])),
                     "step_limit": rec["step_limit"], "tau": [round(t, 4) for t in rec["tau"]]})
    return pd.DataFrame(rows)


def position_table(run: ConfirmRun, task: str) -> pd.DataFrame:
    """Accuracy by gold position: baseline, PEAR and the uniform controls' median and 10–90 % band."""
    items = run.items[task]
    pos = np.asarray([it.gold_position if it.gold_position is not None else -1 for it in items])
    correct = run.correct(task)
    rows = []
    for p in sorted(set(pos.tolist()) - {-1}):
        at = pos == p
        ctrl = [correct[c][at].mean() for c in run.controls(task, UNIFORM)]
        row = {"task": task, "gold_position": int(p), "n": int(at.sum()),
               "baseline": correct["baseline"][at].mean(), "pear": correct["pear"][at].mean()}
        if ctrl:
            q10, med, q90 = np.quantile(ctrl, [0.1, 0.5, 0.9])
            row.update(controls_median=med, controls_q10=q10, controls_q90=q90, controls_n=len(ctrl))
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- writing


def _pct(x: "float | None", sign: bool = False) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _p(x: "float | None") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


def verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The compact verdict table: one row per model and task (all items), the words from the plan's rule."""
    rows = []
    for r in table[table["subset"] == "all items"].itertuples():
        d = r._asdict()
        n_u, planned = d.get(f"{UNIFORM}_done", 0), d.get(f"{UNIFORM}_planned", 0)
        rank = ("–" if not n_u else
                f"{1 + d[f'{UNIFORM}_n_at_least_pear']} of {n_u + 1} (p {_p(d[f'{UNIFORM}_rank_p'])})"
                + ("" if n_u == planned else f", {n_u}/{planned} controls so far"))
        rows.append({"model": r.model, "task": f"{r.task} ({r.role})", "baseline %": _pct(r.baseline),
                     "PEAR Δ pts [95 % CI]": f"{_pct(r.delta, True)} [{_pct(r.ci_low, True)}, {_pct(r.ci_high, True)}]",
                     "p raw": _p(r.p_raw), "p Holm": _p(r.p_holm), "verdict": r.verdict,
                     "rank among uniform controls": rank,
                     "controls' median Δ [10–90 %]": ("–" if not n_u else f"{_pct(d[f'{UNIFORM}_median'], True)} "
                                                      f"[{_pct(d[f'{UNIFORM}_q10'], True)}, {_pct(d[f'{UNIFORM}_q90'], True)}]"),
                     "PEAR − controls' mean [95 % CI]": ("–" if not n_u else
                                                         f"{_pct(d[f'pear_minus_{UNIFORM}'], True)} [{_pct(d[f'pear_minus_{UNIFORM}_low'], True)}, "
                                                         f"{_pct(d[f'pear_minus_{UNIFORM}_high'], True)}]")})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(nothing evaluated yet)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def position_figure(pos: pd.DataFrame, title: str):
    """Accuracy by gold position: baseline, PEAR, and the uniform controls as a median line in a 10–90 % band."""
    import plotly.graph_objects as go

    from pear_lens.drawing import template

    x = pos["gold_position"].tolist()
    fig = go.Figure()
    if "controls_q10" in pos:
        fig.add_trace(go.Scatter(x=x + x[::-1], y=(pos["controls_q90"].tolist() + pos["controls_q10"].tolist()[::-1]),
                                 fill="toself", line=dict(width=0), fillcolor="rgba(120,120,120,0.25)",
                                 name=f"uniform controls 10–90 % (n = {int(pos['controls_n'].iloc[0])})"))
        fig.add_trace(go.Scatter(x=x, y=pos["controls_median"], mode="lines", line=dict(color="grey", dash="dash"),
                                 name="uniform controls, median"))
    fig.add_trace(go.Scatter(x=x, y=pos["baseline"], mode="lines+markers", line=dict(color="black"), name="baseline"))
    fig.add_trace(go.Scatter(x=x, y=pos["pear"], mode="lines+markers", line=dict(color="crimson"), name="PEAR"))
    fig.update_layout(template=template(), title=title, xaxis_title="gold position", yaxis_title="accuracy",
                      yaxis_range=[0, 1], width=700, height=420)
    return fig


def errors_figure(err: pd.DataFrame, title: str):
    """Stacked shares of answer kinds for baseline, PEAR, the arms and the uniform controls' mean, per task."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from pear_lens.drawing import template

    tasks = list(dict.fromkeys(err["task"]))
    fig = make_subplots(rows=1, cols=len(tasks), subplot_titles=tasks, shared_yaxes=True)
    colors = {"correct": "seagreen", "empty": "lightgrey", "other_item": "darkorange", "memorised": "purple",
              "other": "firebrick"}
    shown: set[str] = set()
    for i, task in enumerate(tasks, start=1):
        share = err[err["task"] == task].pivot(index="condition", columns="kind", values="share")
        keep = [c for c in ("baseline", "pear", "fixed_damping", "pear_unclipped") if c in share.index]
        ctrl = [c for c in share.index if c.startswith(f"{UNIFORM}_s")]
        table = share.loc[keep]
        if ctrl:
            table.loc["uniform controls (mean)"] = share.loc[ctrl].mean()
        for kind in [k for k in colors if k in table.columns]:
            fig.add_trace(go.Bar(x=table.index.tolist(), y=table[kind].tolist(), name=kind, legendgroup=kind,
                                 showlegend=kind not in shown, marker_color=colors[kind]), row=1, col=i)
            shown.add(kind)
    fig.update_layout(template=template(), barmode="stack", title=title, yaxis_title="share of items",
                      width=max(500, 380 * len(tasks)), height=430)
    return fig


def summarise(run: ConfirmRun) -> dict[str, Any]:
    """The record of one model for run.json: plan, its SHA-256, deviations, the tables' numbers."""
    table = endpoint_table(run)
    done = {t: list(outs) for t, outs in run.outputs.items()}
    measured = {"device": run.plan.device if not run.outputs else
                next(iter(next(iter(run.outputs.values())).values()))["key"]["device"],
                "n_items": {t: len(items) for t, items in run.items.items()}}
    import json

    created = json.loads((run.folder / PLAN_JSON).read_text()).get("created")
    return {"plan": run.plan.to_dict(), "plan_sha256": run.sha256, "plan_created": created,
            "test_seed": run.plan.test_seed,
            "deviations": PL.deviations(run.plan, done, measured), "endpoints": _records(table),
            "conditions": _records(condition_table(run)), "memorised_answer_rate": memorised_rates(run),
            "head_overlap": head_overlap(run), "step_limit": _records(step_limit_table(run)),
            "devices": run.record.get("devices", []), "seconds": run.record.get("seconds", {})}


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in df.to_dict("records")]


def _arms_rows(table: pd.DataFrame, run: ConfirmRun) -> pd.DataFrame:
    rows = []
    limits = step_limit_table(run).set_index("condition")
    for r in table[table["subset"] == "all items"].to_dict("records"):
        rows.append({"model": r["model"], "task": r["task"], "PEAR Δ": _pct(r["delta"], True),
                     "fixed damping Δ": _pct(r.get("fixed_damping_delta"), True),
                     "PEAR unclipped Δ": _pct(r.get("pear_unclipped_delta"), True),
                     "layer-matched median Δ": _pct(r.get(f"{LAYER_MATCHED}_median"), True),
                     "PEAR − layer-matched mean [95 % CI]": (
                         "–" if not r.get(f"{LAYER_MATCHED}_done") else
                         f"{_pct(r[f'pear_minus_{LAYER_MATCHED}'], True)} [{_pct(r[f'pear_minus_{LAYER_MATCHED}_low'], True)}, "
                         f"{_pct(r[f'pear_minus_{LAYER_MATCHED}_high'], True)}]")})
    out = pd.DataFrame(rows)
    if "pear_unclipped" in limits.index:
        u = limits.loc["pear_unclipped"]
        out.attrs["unclipped"] = (f"PEAR unclipped τ: {u['tau']} ({u['at_step_limit']} of {u['n_tau']} at the step "
                                  f"limit {u['step_limit']:.2f}); published PEAR τ: {limits.loc['pear (published)', 'tau']} "
                                  f"({limits.loc['pear (published)', 'at_step_limit']} of "
                                  f"{limits.loc['pear (published)', 'n_tau']} at the limit "
                                  f"{limits.loc['pear (published)', 'step_limit']:.2f})")
    return out


def _errors_rows(run: ConfirmRun) -> pd.DataFrame:
    """Answer kinds in % for baseline, PEAR, the arms and the uniform controls' mean, per task."""
    err = error_table(run)
    if err.empty:
        return err
    rows = []
    for task, sub in err.groupby("task", sort=False):
        share = sub.pivot(index="condition", columns="kind", values="share")
        show = [c for c in ("baseline", "pear", "fixed_damping", "pear_unclipped") if c in share.index]
        for cid in show:
            rows.append({"task": task, "condition": cid, **{k: _pct(v) for k, v in share.loc[cid].items()}})
        ctrl = [c for c in share.index if c.startswith(f"{UNIFORM}_s")]
        if ctrl:
            rows.append({"task": task, "condition": f"uniform controls, mean of {len(ctrl)}",
                         **{k: _pct(v) for k, v in share.loc[ctrl].mean().items()}})
    return pd.DataFrame(rows).fillna("–")


def write_report(root: str | Path, out: str | Path, *, run_json: str | Path | None = None, png: bool = False) -> Path:
    """Recompute every table of the runs under ``root`` (one folder per model) into ``out/README.md`` and CSVs,
    draw the position figures, and put each model's record under ``confirmatory`` in ``run_json``."""
    import json

    from pear_lens.io import atomic_path, atomic_write_json, atomic_write_text, save_figure

    root, out = Path(root), Path(out)
    runs = [load_run(p.parent) for p in sorted(root.glob(f"*/{PLAN_JSON}"))]
    order = {m: i for i, m in enumerate(("smollm2-135m-instruct", "gemma-3-270m"))}
    runs.sort(key=lambda r: order.get(r.plan.model, len(order)))
    tables = [endpoint_table(r) for r in runs]
    lines = ["# Confirmatory results (generated by `scripts/confirm.py --report-only`; do not edit)", "",
             "Every number below is recomputed from the per-item outputs under `figures/results/confirm/MODEL/` "
             "(items, outputs and τ of every condition), under the plan each model fixed before its test items "
             "existed. The exploratory run that came before the plans (test seed 0) is in "
             "[`summary.md`](summary.md).", ""]
    all_verdicts = [verdict_rows(t) for t in tables if not t.empty]
    lines += ["## Verdicts", "", markdown(pd.concat(all_verdicts) if all_verdicts else pd.DataFrame())]
    for run, table in zip(runs, tables):
        name = run.plan.model
        lines += [f"## {name}", "", f"**Plan** (SHA-256 `{run.sha256}`): {run.plan.text()}", ""]
        devs = summarise(run)["deviations"]
        lines += ["**Deviations from the plan, and what is still pending:** "
                  + ("none." if not devs else "; ".join(devs) + "."), ""]
        if table.empty:
            lines += ["Nothing evaluated yet.", ""]
            continue
        sens = table[table["subset"] != "all items"]
        if not sens.empty:
            s = sens.iloc[0]
            lines += [f"Counterfactual on one item per fact ({int(s['n_items'])} items): PEAR Δ "
                      f"{_pct(s['delta'], True)} points [{_pct(s['ci_low'], True)}, {_pct(s['ci_high'], True)}], "
                      f"McNemar p {_p(s['p_mcnemar'])}.", ""]
        arms = _arms_rows(table, run)
        lines += ["### Arms and layer-matched controls", "", markdown(arms)]
        if "unclipped" in arms.attrs:
            lines += [arms.attrs["unclipped"] + ".", ""]
        overlap = head_overlap(run)
        if overlap:
            lines += ["Mean share of heads two control draws have in common: "
                      + ", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in overlap.items()) + ".", ""]
        rates = memorised_rates(run)
        if rates:
            ctrl = [v for k, v in rates.items() if k.startswith(f"{UNIFORM}_s")]
            lines += ["Counterfactual answered with the memorised fact instead of the context's: "
                      + ", ".join(f"{k} {_pct(v)} %" for k, v in rates.items() if not k.startswith(("uniform", "layer")))
                      + (f", uniform controls' mean {_pct(float(np.mean(ctrl)))} %" if ctrl else "") + ".", ""]
        errors = _errors_rows(run)
        if not errors.empty:
            lines += ["### Answer kinds (% of items)", "", markdown(errors)]
            fig = errors_figure(error_table(run), f"{name}: answer kinds per condition")
            stem = f"confirm_answer_kinds_{name}"
            save_figure(fig, out / "figures" / f"{stem}.html", formats=["html"] + (["png"] if png else []))
            lines += [f"![{name} answer kinds](figures/{stem}.png) ([interactive](figures/{stem}.html))", ""]
        conds = condition_table(run)
        show = conds[["task", "condition", "label", "n", "accuracy", "delta", "tau_mean", "tau_at_step_limit",
                      "device", "dtype", "batch_size"]].copy()
        for col in ("accuracy", "delta", "tau_mean"):
            show[col] = show[col].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
        lines += ["### Every condition", "", markdown(show.fillna("–"))]
        for task in run.outputs:
            if task == TaskName.CLOSED_BOOK.value or not {"baseline", "pear"} <= set(run.outputs[task]):
                continue
            pos = position_table(run, task)
            fig = position_figure(pos, f"{name} · {task}: accuracy by gold position")
            save_figure(fig, out / "figures" / f"confirm_positions_{name}_{task}.html",
                        formats=["html"] + (["png"] if png else []))
            stem = f"confirm_positions_{name}_{task}"
            lines += [f"![{name} {task}](figures/{stem}.png) ([interactive](figures/{stem}.html))", ""]
    for stem, frames in (("confirm_endpoints", tables), ("confirm_conditions", [condition_table(r) for r in runs]),
                         ("confirm_errors", [error_table(r) for r in runs])):
        frames = [f for f in frames if not f.empty]
        with atomic_path(out / f"{stem}.csv") as tmp:
            (pd.concat(frames) if frames else pd.DataFrame()).to_csv(tmp, index=False)
    atomic_write_text(out / "README.md", "\n".join(lines))
    if run_json is not None:
        path = Path(run_json)
        record = json.loads(path.read_text()) if path.exists() else {}
        record["confirmatory"] = {r.plan.model: summarise(r) for r in runs}
        atomic_write_json(path, record)
    return out / "README.md"
