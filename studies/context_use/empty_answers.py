"""How much of the issue-16 greedy accuracy is answering at all: Δcorrect against Δempty over every condition.

Reads the committed confirmatory outputs (``figures/results/confirm/MODEL/outputs/TASK/*.json.gz``: every
condition's greedy answers on the same test items) and, per model and task, for every condition against the
baseline: Δcorrect and Δempty (points of items), the line Δcorrect = a + b·Δempty fitted over the trained
random-head controls (uniform and layer-matched) with its Pearson r, where PEAR sits against that line, and
PEAR's accuracy on the items both PEAR and the baseline answered (an empty answer cannot move it). Writes
``figures/results/context_use/empty_answers.json`` and ``.md`` and the figure ``figures/empty_vs_correct``
(HTML, and PNG where a Chrome exists).

Run: ``python -m studies.context_use.empty_answers`` (seconds; no model).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from pear_lens.evaluation.outcomes import AnswerKind, classify_answer
from pear_lens.evaluation.tasks import TaskName
from pear_lens.figure_files import save_figure
from pear_lens.io import atomic_write_text
from pear_lens.tables import markdown_table
from studies.confirmatory.run import iter_outputs, load_items

ROOT = Path(__file__).resolve().parents[2]
CONFIRM = ROOT / "figures" / "results" / "confirm"
OUT = ROOT / "figures" / "results" / "context_use"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
TASKS = ("kv", "mdqa", "counterfactual", "closed-book")


def family(label: str) -> str:
    if label.startswith("uniform_unclipped") or label.startswith("layer_matched_unclipped"):
        return "control, unclipped τ"
    if label.startswith("uniform"):
        return "uniform random heads (trained)"
    if label.startswith("layer_matched"):
        return "layer-matched random heads (trained)"
    return {"pear": "PEAR", "pear_unclipped": "PEAR, unclipped τ", "fixed_damping": "PEAR heads, untrained damping",
            "baseline": "baseline"}.get(label, label)


def task_table(model: str, task: str) -> dict[str, Any]:
    items, _ = load_items(CONFIRM / model / "items" / f"{task}.jsonl.gz", TaskName(task))
    by_id = {it.item_id: it for it in items}
    kinds: dict[str, list[AnswerKind]] = {}
    labels: dict[str, str] = {}
    for stem, rec in iter_outputs(CONFIRM / model, task):  # the file names the condition (labels carry details)
        kinds[stem] = [classify_answer(by_id[i], o) for i, o in zip(rec["item_ids"], rec["outputs"])]
        labels[stem] = rec["label"]
    base = np.asarray([k is AnswerKind.CORRECT for k in kinds["baseline"]])
    base_empty = np.asarray([k is AnswerKind.EMPTY for k in kinds["baseline"]])
    rows = []
    for label, ks in kinds.items():
        correct = np.asarray([k is AnswerKind.CORRECT for k in ks])
        empty = np.asarray([k is AnswerKind.EMPTY for k in ks])
        both = ~empty & ~base_empty
        rows.append({"condition": label, "label": labels[label], "family": family(label), "d_correct": 100 * float(correct.mean() - base.mean()),
                     "d_empty": 100 * float(empty.mean() - base_empty.mean()),
                     "answered_both": int(both.sum()),
                     "acc_answered_both": 100 * float(correct[both].mean()) if both.any() else None,
                     "base_acc_answered_both": 100 * float(base[both].mean()) if both.any() else None,
                     "memorised": 100 * float(np.mean([k is AnswerKind.MEMORISED for k in ks]))})
    ctrl = [r for r in rows if "trained" in r["family"]]
    x, y = np.asarray([r["d_empty"] for r in ctrl]), np.asarray([r["d_correct"] for r in ctrl])
    fit: dict[str, Any] = {"n_controls": len(ctrl)}
    if len(ctrl) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        lr = stats.linregress(x, y)
        pear = next((r for r in rows if r["condition"] == "pear"), None)
        fit.update(intercept=float(lr.intercept), slope=float(lr.slope), r=float(lr.rvalue))
        if pear:
            fit["pear_residual"] = pear["d_correct"] - float(lr.intercept + lr.slope * pear["d_empty"])
            fit["control_residual_sd"] = float(np.std(y - (lr.intercept + lr.slope * x), ddof=2))
    elif len(ctrl) < 3:
        fit["undefined"] = f"{len(ctrl)} trained controls; a line needs 3"
    else:
        same = "Δempty" if np.ptp(x) == 0 else "Δcorrect"
        fit["undefined"] = f"{same} is {x[0] if same == 'Δempty' else y[0]:+.1f} for every control"
    return {"n_items": len(items), "rows": rows, "fit": fit}


def figure(result: dict[str, Any]) -> go.Figure:
    models = list(result)
    fig = make_subplots(rows=len(models), cols=len(TASKS), shared_xaxes=False, shared_yaxes=False,
                        subplot_titles=[t if i == 0 else "" for i, _ in enumerate(models) for t in TASKS],
                        horizontal_spacing=0.08,
                        vertical_spacing=0.14)
    style = {"uniform random heads (trained)": ("#0072B2", "circle"),
             "layer-matched random heads (trained)": ("#56B4E9", "diamond"),
             "control, unclipped τ": ("#999999", "circle-open"), "PEAR heads, untrained damping": ("#E69F00", "square"),
             "PEAR, unclipped τ": ("#CC79A7", "star-open"), "PEAR": ("#D55E00", "star")}
    shown: set[str] = set()
    for i, m in enumerate(models, start=1):
        for j, t in enumerate(TASKS, start=1):
            tab = result[m][t]
            for fam, (colour, symbol) in style.items():
                pts = [r for r in tab["rows"] if r["family"] == fam]
                if not pts:
                    continue
                fig.add_trace(go.Scatter(x=[r["d_empty"] for r in pts], y=[r["d_correct"] for r in pts], mode="markers",
                                         name=fam, legendgroup=fam, showlegend=fam not in shown,
                                         marker=dict(color=colour, symbol=symbol, size=11 if fam == "PEAR" else 7),
                                         text=[r["label"] for r in pts],
                                         hovertemplate="%{text}<br>Δempty %{x:.1f}<br>Δcorrect %{y:.1f}<extra></extra>"),
                              row=i, col=j)
                shown.add(fam)
            fit = tab["fit"]
            if "slope" in fit:
                xs = [r["d_empty"] for r in tab["rows"]]
                lo, hi = min(xs), max(xs)
                fig.add_trace(go.Scatter(x=[lo, hi], y=[fit["intercept"] + fit["slope"] * v for v in (lo, hi)],
                                         mode="lines", line=dict(color="#555555", dash="dash", width=1),
                                         showlegend=False, hoverinfo="skip"), row=i, col=j)
                fig.add_annotation(text=f"r = {fit['r']:.2f}", xref=f"x{(i - 1) * len(TASKS) + j} domain",
                                   yref=f"y{(i - 1) * len(TASKS) + j} domain", x=0.98, y=0.02, showarrow=False,
                                   xanchor="right", yanchor="bottom")
            fig.update_xaxes(title_text="Δ empty answers (points)" if i == len(models) else None, row=i, col=j)
            fig.update_yaxes(title_text=f"<b>{m}</b><br>Δ correct (points)" if j == 1 else None, row=i, col=j)
    from pear_lens.drawing import SMALL_FONT, finish

    fig.update_annotations(font_size=SMALL_FONT)
    finish(fig, "Greedy accuracy moves with empty answers",
           "each condition against the baseline on the issue-16 test items; dashed: fit over the trained "
           "random-head controls", width="full", height=250 * len(models) + 170, legend_rows=3)
    return fig


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Greedy accuracy and empty answers (issue-16 confirmatory outputs)", "",
             "Per condition against the baseline on the same test items, in points. The fit is over the trained "
             "random-head controls; PEAR's residual is its Δcorrect minus the line at its Δempty.", ""]
    rows = []
    for m, tasks in result.items():
        for t, tab in tasks.items():
            pear = next((r for r in tab["rows"] if r["condition"] == "pear"), None)
            damp = next((r for r in tab["rows"] if r["condition"] == "fixed_damping"), None)
            fit = tab["fit"]
            rows.append([m, t, tab["n_items"], f"{pear['d_correct']:+.1f}" if pear else "–",
                         f"{pear['d_empty']:+.1f}" if pear else "–",
                         f"{damp['d_correct']:+.1f}" if damp else "–",
                         (f"{fit['intercept']:+.2f} {fit['slope']:+.2f}·Δempty (r {fit['r']:+.2f}, {fit['n_controls']} "
                          "controls)") if "slope" in fit else f"undefined ({fit['undefined']})",
                         f"{fit['pear_residual']:+.1f} (controls' SD {fit['control_residual_sd']:.1f})"
                         if "pear_residual" in fit else "–",
                         (f"{pear['base_acc_answered_both']:.1f} → {pear['acc_answered_both']:.1f} "
                          f"({pear['answered_both']} items)") if pear and pear["acc_answered_both"] is not None else "–"])
    lines.append(markdown_table(["model", "task", "n", "PEAR Δcorrect", "PEAR Δempty", "untrained damping Δcorrect",
                                 "controls' line", "PEAR residual", "accuracy on items both answered (base → PEAR)"],
                                rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-png", action="store_true", help="write the figure as HTML only (no PNG, PDF, SVG)")
    args = ap.parse_args(argv)
    result = {m: {t: task_table(m, t) for t in TASKS} for m in MODELS}
    atomic_write_text(OUT / "empty_answers.json", json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(OUT / "empty_answers.md", markdown(result))
    fig = figure(result)
    save_figure(fig, ROOT / "figures" / "empty_vs_correct.html",
                formats=("html",) if args.no_png else ("html", "png", "pdf", "svg"))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
