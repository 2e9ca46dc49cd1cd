"""The confirmatory report as a reader sees it: ``figures/results/README.md``, its CSVs and figures, and each
model's record in ``run.json`` (every number from :mod:`pear_lens.evaluation.confirm_report`).

:func:`write_report` writes them all; :func:`verdict_rows` and :func:`markdown` also give the README's
compact verdict table (:mod:`pear_lens.evaluation.reading`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pear_lens.evaluation.confirm import PEAR_RETRAINED, PLAN_JSON
from pear_lens.evaluation.confirm_report import (LAYER_MATCHED, SETTLE_STEPS, UNIFORM, ConfirmRun, condition_table,
                                                 controls_sharing_pear_heads,
                                                 endpoint_table, error_table, head_overlap, load_run, looping_rates, memorised_rates,
                                                 pear_retrained, position_table, step_limit_table, study_closed_at,
                                                 summarise)
from pear_lens.evaluation.outcomes import LOOP_RULE, AnswerKind
from pear_lens.evaluation.stats import LEVEL
from pear_lens.evaluation.tasks import TaskName


def _pct(x: "float | None", sign: bool = False) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else (f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}")


def _p(x: "float | None") -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


def _out_of_reach(row: dict) -> str:
    """Said beside a 'no' the plan's controls could not have turned into a 'yes'."""
    if row.get("rank_test_reachable") is not False:
        return ""
    planned = row.get(f"{UNIFORM}_planned")
    which = "its" if planned is None or pd.isna(planned) else f"its {int(planned)}"
    return f" (out of reach: the plan's controls, {which}, allow adjusted p ≥ {_p(row.get('rank_p_floor'))})"


SPREAD_MIN_CONTROLS = 10
"""From this many controls on, their spread is shown as 10–90 % quantiles; below it, as the extremes."""
# below the verdict table wherever it appears: what each column measures, so no cell is read as another claim
LEGEND = (f"Δ and CIs in percentage points; CIs: {100 * LEVEL:g} % paired bootstrap over items (over facts on counterfactual). "
          "p raw: the plan's test (exact McNemar; counterfactual: the fact-clustered bootstrap), Holm over the "
          "model's tests. Rank: 1 = the largest Δ among PEAR and the controls evaluated, ties counted against "
          "PEAR, with its empirical p. Controls' Δ: median and 10–90 % quantiles, or the extremes where fewer than "
          f"{SPREAD_MIN_CONTROLS} controls exist. PEAR − controls' mean resamples items with the control draws held fixed: it says "
          "how PEAR's answers differ from these draws' answers, not where PEAR stands among head draws (the rank "
          "does).")


def _spread_cell(d: dict, kind: str) -> str:
    """The controls' median Δ with their 10–90 % quantiles, or with their extremes when there are few."""
    n = d.get(f"{kind}_done", 0)
    if not n:
        return "–"
    med = _pct(d[f"{kind}_median"], True)
    lo, hi = d.get(f"{kind}_min"), d.get(f"{kind}_max")
    if n >= SPREAD_MIN_CONTROLS or lo is None or hi is None or pd.isna(lo) or pd.isna(hi):  # older records: quantiles
        return f"{med} [{_pct(d[f'{kind}_q10'], True)}, {_pct(d[f'{kind}_q90'], True)}]"
    return f"{med} ({int(n)} control{'' if n == 1 else 's'}: {_pct(lo, True)} to {_pct(hi, True)})"


def verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The compact verdict table: one row per model and task (all items), the words from the plan's rule."""
    rows = []
    for r in table[table["subset"] == "all items"].itertuples():
        d = r._asdict()
        n_u, planned = d.get(f"{UNIFORM}_done", 0), d.get(f"{UNIFORM}_planned", 0)
        # primary endpoints: the plan's rank test (Holm over the primary endpoints) and its word, once complete
        held = d.get(f"{UNIFORM}_rank_p_holm")
        word = d.get("beyond_random_heads") or ""
        if not n_u:
            rank = "–"
        elif r.kind == "safety":  # higher Δ is still better (less knowledge lost); no rank test is planned here
            rank = f"{1 + int(d[f'{UNIFORM}_n_at_least_pear'])} of {int(n_u) + 1} (1 = kept the most)"
        else:
            rank = (f"{1 + int(d[f'{UNIFORM}_n_at_least_pear'])} of {int(n_u) + 1} (p {_p(d[f'{UNIFORM}_rank_p'])}"
                    + ("" if held is None or pd.isna(held) else f", Holm {_p(held)}") + ")"
                    + (f"; beyond random heads: {word}" if word in ("yes", "no") else "")
                    + (_out_of_reach(d) if word in ("no", "pending") else ""))
        if n_u and n_u != planned:
            rank += f", {_so_far(n_u, planned, 'controls')}"
        rows.append({"model": r.model, "task": f"{r.task} ({r.role})", "baseline %": _pct(r.baseline),
                     "PEAR Δ pts [95 % CI]": f"{_pct(r.delta, True)} [{_pct(r.ci_low, True)}, {_pct(r.ci_high, True)}]",
                     "p raw": _p(r.p_raw), "p Holm": _p(r.p_holm), "verdict": r.verdict,
                     "PEAR's rank among uniform controls": rank,
                     "controls' median Δ [10–90 %] or (extremes)": _spread_cell(d, UNIFORM),
                     "PEAR − controls' mean [95 % CI, draws fixed]": ("–" if not n_u else
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
              "looping": "goldenrod", "other": "firebrick"}
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


def _unclipped_cell(r: dict) -> str:
    """The unclipped controls' deltas, uniform draws first, and how many reach PEAR unclipped's delta."""
    deltas = r.get("unclipped_controls_deltas")
    deltas = deltas if isinstance(deltas, list) else []
    planned = int(r.get("unclipped_controls_planned") or 0)
    if not deltas:
        return _none_yet(planned)
    reach = r.get("unclipped_controls_n_at_least_pear")
    return (", ".join(_pct(d, True) for d in deltas)
            + ("" if reach is None or pd.isna(reach) else f" ({int(reach)} of {len(deltas)})")
            + (f"; {_so_far(len(deltas), planned)}" if len(deltas) < planned else ""))


def _so_far(done: int | float, planned: int | float, noun: str = "") -> str:
    """'3/6 so far' (or '3/6 controls so far'): how many of the planned controls are in."""
    return f"{int(done)}/{int(planned)}{' ' + noun if noun else ''} so far"


def _none_yet(planned: int | float | None) -> str:
    """The cell of a kind with no control in: 'pending (0/6)' where the plan asks for some, '–' where none."""
    return f"pending (0/{int(planned)})" if planned else "–"


def _layer_matched_rank(r: dict) -> str:
    """PEAR's rank among the layer-matched controls in so far, and how many of the planned ones that is."""
    done, planned = int(r.get(f"{LAYER_MATCHED}_done") or 0), int(r.get(f"{LAYER_MATCHED}_planned") or 0)
    if not done:
        return _none_yet(planned)
    return (f"{1 + int(r[f'{LAYER_MATCHED}_n_at_least_pear'])} of {done + 1}"
            + (f", {_so_far(done, planned)}" if done < planned else ""))


def _retrained_line(run: ConfirmRun) -> str:
    """Whether PEAR's published τ come out again when trained on this run's device (where the controls were)."""
    got = pear_retrained(run)
    if got is None:
        return "PEAR's τ are not yet retrained on this run's device (the controls' device); pending."
    limits = step_limit_table(run).set_index("condition")
    moving = limits.loc[PEAR_RETRAINED].get("last_steps_move_share")
    published = limits.loc["pear (published)"]
    return (f"PEAR's τ retrained on {got['device']} with the published recipe: {got['tau']}; largest difference from "
            f"the published τ {got['gap']:.2g} ({'within' if got['within_tolerance'] else 'more than'} "
            f"{got['tolerance']:g}: " + ("trained where the controls were, PEAR gets its published τ back up to "
                                         "that gap" if got['within_tolerance'] else
                                         "PEAR's τ depend on where they were trained, and the controls were "
                                         "trained here") +
            f"; {published['at_step_limit']} of {published['n_tau']} published τ sit at the step limit, where any "
            "device lands; the retrained τ were not evaluated on the test items)"
            + ("" if moving is None or pd.isna(moving) else
               f"; in its last {SETTLE_STEPS} steps a τ still moved {moving:.0%} of the most it could") + ".")


def _arms_rows(table: pd.DataFrame, run: ConfirmRun) -> pd.DataFrame:
    rows = []
    limits = step_limit_table(run).set_index("condition")
    for r in table[table["subset"] == "all items"].to_dict("records"):
        rows.append({"model": r["model"], "task": r["task"], "PEAR Δ": _pct(r["delta"], True),
                     "fixed damping Δ": _pct(r.get("fixed_damping_delta"), True),
                     "PEAR − fixed damping [95 % CI], p raw": (
                         "–" if pd.isna(r.get("pear_minus_fixed_damping", np.nan)) else
                         f"{_pct(r['pear_minus_fixed_damping'], True)} [{_pct(r['pear_minus_fixed_damping_low'], True)}, "
                         f"{_pct(r['pear_minus_fixed_damping_high'], True)}], {_p(r['pear_minus_fixed_damping_p'])}"),
                     "PEAR unclipped Δ": _pct(r.get("pear_unclipped_delta"), True),
                     "unclipped controls' Δ (≥ PEAR unclipped)": _unclipped_cell(r),
                     "layer-matched median Δ": _spread_cell(r, LAYER_MATCHED),
                     "PEAR's rank among layer-matched (1 = largest Δ)": _layer_matched_rank(r),
                     "PEAR − layer-matched mean [95 % CI, draws fixed]": (
                         "–" if not r.get(f"{LAYER_MATCHED}_done") else
                         f"{_pct(r[f'pear_minus_{LAYER_MATCHED}'], True)} [{_pct(r[f'pear_minus_{LAYER_MATCHED}_low'], True)}, "
                         f"{_pct(r[f'pear_minus_{LAYER_MATCHED}_high'], True)}]")})
    out = pd.DataFrame(rows)
    if "pear_unclipped" in limits.index:
        u = limits.loc["pear_unclipped"]
        moving = u.get("last_steps_move_share")
        out.attrs["unclipped"] = (f"PEAR unclipped τ: {u['tau']} ({u['at_step_limit']} of {u['n_tau']} at the step "
                                  f"limit {u['step_limit']:.2f}; the largest |τ − 1| is {u['largest_move_share']:.0%} "
                                  "of it" + ("" if moving is None or pd.isna(moving) else
                                             f"; in the last {SETTLE_STEPS} steps a τ still moved {moving:.0%} of the "
                                             "most it could") + "); "
                                  f"published PEAR τ: {limits.loc['pear (published)', 'tau']} "
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
    if not rows:  # only controls of other kinds evaluated so far: nothing this table shows
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    kinds = [k.value for k in AnswerKind if k.value in table.columns]  # the kinds' own order, not the alphabet's
    return table[["task", "condition", *kinds]].fillna("–")


def write_report(root: str | Path, out: str | Path, *, run_json: str | Path | None = None, png: bool = False,
                 registry: str | Path | None = None) -> Path:
    """Recompute every table of the runs under ``root`` (one folder per model) into ``out/README.md`` and CSVs,
    draw the position figures, and put each model's record under ``confirmatory`` in ``run_json``
    (``registry``: the seed registry, which says when each plan's study drew its first items)."""
    import json

    from pear_lens.io import atomic_path, atomic_write_json, atomic_write_text, save_figure

    root, out = Path(root), Path(out)
    runs = [load_run(p.parent) for p in sorted(root.glob(f"*/{PLAN_JSON}"))]
    order = {m: i for i, m in enumerate(("smollm2-135m-instruct", "gemma-3-270m"))}
    runs.sort(key=lambda r: order.get(r.plan.model, len(order)))
    tables = [endpoint_table(r) for r in runs]
    summaries = {r.plan.model: summarise(r, study_closed_at(registry, r), t) for r, t in zip(runs, tables)}
    lines = ["# Confirmatory results (generated by `scripts/confirm.py --report-only`; do not edit)", "",
             "Every number below is recomputed from the per-item outputs under `figures/results/confirm/MODEL/` "
             "(items, outputs and τ of every condition), under the plan each model fixed before its test items "
             "existed. The exploratory run that came before the plans (test seed 0) is in "
             "[`summary.md`](summary.md).", ""]
    all_verdicts = [verdict_rows(t) for t in tables if not t.empty]
    lines += ["## Verdicts", "", markdown(pd.concat(all_verdicts) if all_verdicts else pd.DataFrame()), LEGEND, ""]
    for run, table in zip(runs, tables):
        name = run.plan.model
        lines += [f"## {name}", "", f"**Plan** (SHA-256 `{run.sha256}`): {run.plan.text()}", ""]
        devs = summaries[name]["deviations"]
        lines += ["**Deviations from the plan, and what is still pending:** "
                  + ("none." if not devs else "; ".join(devs) + "."), ""]
        if table.empty:
            lines += ["Nothing evaluated yet.", ""]
            continue
        sens = table[table["subset"] != "all items"]
        if not sens.empty:
            s = sens.iloc[0]
            whole = table[(table["subset"] == "all items") & (table["task"] == s["task"])].iloc[0]
            lines += [f"Counterfactual on one item per fact ({int(s['n_items'])} items): PEAR Δ "
                      f"{_pct(s['delta'], True)} points [{_pct(s['ci_low'], True)}, {_pct(s['ci_high'], True)}], "
                      f"McNemar p {_p(s['p_mcnemar'])} (a sensitivity check, outside the Holm family). All "
                      f"{int(whole['n_items'])} items: the planned clustered bootstrap p {_p(whole['p_raw'])}, exact "
                      f"McNemar beside it p {_p(whole['p_mcnemar'])}.", ""]
        arms = _arms_rows(table, run)
        lines += ["### Arms and layer-matched controls", "",
                  "Unclipped controls: the first uniform, then the first layer-matched draws, trained at the unclipped "
                  "arm's learning rate; in brackets how many reach PEAR unclipped's Δ (too few for a rank test).", "",
                  markdown(arms)]
        if "unclipped" in arms.attrs:
            lines += [arms.attrs["unclipped"] + ".", ""]
        lines += [_retrained_line(run), ""]
        overlap = head_overlap(run)
        if overlap:
            shared = controls_sharing_pear_heads(run)
            lines += ["Mean share of heads two control draws have in common: "
                      + ", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in overlap.items()) + ". Controls "
                      "with one of PEAR's heads among theirs (read off the saved τ records): "
                      + (", ".join(shared) if shared else "none") + ".", ""]
        rates = memorised_rates(run)
        if rates:
            ctrl = [v for k, v in rates.items() if k.startswith(f"{UNIFORM}_s")]
            lines += ["Counterfactual answered with the memorised fact instead of the context's: "
                      + ", ".join(f"{k} {_pct(v)} %" for k, v in rates.items() if not k.startswith(("uniform", "layer")))
                      + (f", uniform controls' mean {_pct(float(np.mean(ctrl)))} %" if ctrl else "") + ".", ""]
        errors = _errors_rows(run)
        if not errors.empty:
            lines += ["### Answer kinds (% of items)", "",
                      f"Each output gets the first kind that applies: correct, empty, other_item (another key's or "
                      f"document's answer: a retrieval error), memorised (counterfactual: the real-world fact), "
                      f"looping ({LOOP_RULE}: the loops no earlier kind claimed), other.", "", markdown(errors)]
            loop = looping_rates(run)
            lines += ["Answers that loop, whatever their kind (a lower bound: answers are cut at the task's token "
                      "budget), with the share that loops yet scores correct: " + "; ".join(
                          f"{task}: " + ", ".join(f"{cid} {_pct(r['share'])} % ({_pct(r['correct_share'])} % correct)"
                                                  for cid, r in rates_.items() if not cid.startswith(("uniform", "layer")))
                          for task, rates_ in loop.items()) + ".", ""]
            fig = errors_figure(error_table(run), f"{name}: answer kinds per condition")
            stem = f"confirm_answer_kinds_{name}"
            save_figure(fig, out / "figures" / f"{stem}.html", formats=["html"] + (["png"] if png else []))
            lines += [f"![{name} answer kinds](figures/{stem}.png) ([interactive](figures/{stem}.html))", ""]
        conds = condition_table(run)
        show = conds[["task", "condition", "label", "n", "accuracy", "delta", "tau_mean", "tau_at_step_limit",
                      "device", "dtype", "batch_size"]].copy()
        for col in ("accuracy", "delta", "tau_mean"):
            show[col] = show[col].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
        show["tau_at_step_limit"] = [f"{int(a)} of {int(n)}" if pd.notna(n) else "–"
                                     for a, n in zip(conds["tau_at_step_limit"], conds["n_tau"])]
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
        record["confirmatory"] = summaries
        atomic_write_json(path, record)
    return out / "README.md"
