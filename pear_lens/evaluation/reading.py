"""The README's reading of the results: compact tables and sentences computed from the records, never typed.

Two sources: the exploratory protocol (``scripts/evaluate_all.py``: ``summary.csv`` and ``run.json``'s
``models``) and the confirmatory run (``scripts/confirm.py``: ``run.json``'s ``confirmatory``). Both are
read with the same rule (:class:`~pear_lens.evaluation.verdict.VerdictRule`, Holm within each model), so a
word in the README is always the rule applied to a number in the record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pear_lens.evaluation.stats import empirical_p
from pear_lens.evaluation.verdict import EndpointKind, VerdictRule

SAFETY_TASKS = ("closed-book",)


def exploratory_table(summary_csv: str | Path, records: dict[str, Any], rule: VerdictRule = VerdictRule()) -> pd.DataFrame:
    """One row per model and task at the reference budget: PEAR against the baseline (McNemar, Holm within the
    model, the rule's word) and PEAR's rank among the controls trained with its budget."""
    df = pd.read_csv(summary_csv)
    df = df[df["gold_position"].astype(str) == "all"]
    rows = []
    for (model, task), g in df.groupby(["model", "task"], sort=False):
        acc = g.set_index("condition")
        roles = [c for c in records.get(model, {}).get("conditions", []) if c.get("budget", "reference") == "reference"
                 and c["label"] in acc.index]
        pear = next((c["label"] for c in roles if c["role"] == "pear"), "PEAR" if "PEAR" in acc.index else None)
        if pear is None or "baseline" not in acc.index:
            continue
        base, row = float(acc.loc["baseline", "accuracy"]), acc.loc[pear]
        controls = [float(acc.loc[c["label"], "accuracy"]) - base for c in roles if c["role"] == "control"]
        delta = float(row["delta_vs_baseline"])
        rows.append({"model": model, "task": task, "n": int(row["n"]), "baseline": base, "pear": float(row["accuracy"]),
                     "delta": delta, "p_raw": float(row["p_vs_baseline"]), "n_controls": len(controls),
                     "controls_at_least": int(sum(c >= delta for c in controls)),
                     "rank_p": empirical_p(delta, controls) if controls else np.nan,
                     "controls_min": min(controls) if controls else np.nan,
                     "controls_max": max(controls) if controls else np.nan})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for model, g in out.groupby("model", sort=False):
        out.loc[g.index, "p_holm"] = rule.adjust(g["p_raw"].to_numpy())
    out["verdict"] = [rule.verdict(r.delta, r.p_holm, _kind(r.task)).value for r in out.itertuples()]
    return out


def _kind(task: str) -> EndpointKind:
    return EndpointKind.SAFETY if task in SAFETY_TASKS else EndpointKind.EFFICACY


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


def exploratory_markdown(table: pd.DataFrame) -> str:
    lines = ["| model | task | n | baseline % | PEAR % | Δ pts | p raw | p Holm | verdict | controls ≥ PEAR (rank p) "
             "| controls' Δ range |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ctrl = ("–" if not r.n_controls else f"{r.controls_at_least} of {r.n_controls} ({_p(r.rank_p)})")
        rng = "–" if not r.n_controls else f"{_pts(r.controls_min)} to {_pts(r.controls_max)}"
        lines.append(f"| {r.model} | {r.task} | {r.n} | {100 * r.baseline:.1f} | {100 * r.pear:.1f} | {_pts(r.delta)} | "
                     f"{_p(r.p_raw)} | {_p(r.p_holm)} | {r.verdict} | {ctrl} | {rng} |")
    return "\n".join(lines) + "\n"


def exploratory_sentences(table: pd.DataFrame, rule: VerdictRule = VerdictRule()) -> list[str]:
    """What the exploratory table says, one sentence per model, each fact a cell of the table."""
    out = []
    for model, g in table.groupby("model", sort=False):
        words = {r.task: r.verdict for r in g.itertuples()}
        sig = [t for t, w in words.items() if w not in ("no significant change", "knowledge kept")]
        raw_only = [r.task for r in g.itertuples() if r.p_raw < rule.alpha <= r.p_holm]
        text = (f"- **{model}**: after Holm's correction over its {len(g)} tests, "
                + (", ".join(f"{t} {words[t]}" for t in sig) if sig else "no test stays significant"))
        if raw_only:
            text += f"; {', '.join(raw_only)} below {rule.alpha:g} before the correction only"
        best = g[g["n_controls"] > 0]
        if not best.empty:
            top = best[best["controls_at_least"] == 0]["task"].tolist()
            text += (f"; PEAR above all {int(best['n_controls'].iloc[0])} controls on {', '.join(top)}" if top else
                     "; PEAR above every control on no task")
            text += f" (the smallest rank p {int(best['n_controls'].iloc[0])} controls allow is {_p(1 / (1 + best['n_controls'].iloc[0]))})"
        out.append(text + ".")
    return out


def confirmatory_markdown(records: dict[str, Any]) -> tuple[str, list[str]]:
    """The compact verdict table of every confirmatory model and one status line each (plan, progress)."""
    from pear_lens.evaluation.confirm_report import markdown, verdict_rows

    frames, status = [], []
    for model, rec in records.items():
        endpoints = pd.DataFrame(rec["endpoints"])
        done = sum(len(c) for c in _done(rec).values())
        planned = sum(len(c) for c in _planned(rec).values())
        status.append(f"- **{model}**: plan `{rec['plan_sha256'][:12]}` (test seed {rec['test_seed']}, fixed "
                      f"{rec.get('plan_created') or 'before its items'}); {done} of {planned} planned evaluations "
                      f"done" + ("" if done == planned else " — **provisional**, the rest is pending"))
        if not endpoints.empty:
            frames.append(verdict_rows(endpoints))
    table = markdown(pd.concat(frames)) if frames else "(no confirmatory evaluation finished yet)\n"
    return table, status


def _planned(rec: dict[str, Any]) -> dict[str, list[str]]:
    from pear_lens.evaluation import plan as PL

    plan = PL.ConfirmatoryPlan.from_dict({k: v for k, v in rec["plan"].items() if k != "created"})
    return PL.planned_conditions(plan)


def _done(rec: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in rec["conditions"]:
        out.setdefault(c["task"], []).append(c["condition"])
    return out
