"""The confirmatory report as a reader sees it: ``figures/results/README.md``, its CSVs and figures, and each
model's record in ``run.json`` (every number from :mod:`studies.confirmatory.report`).

The fixed prose is the template ``studies/templates/confirmatory.md``; this module builds only what depends
on numbers (the cells, the clauses with numbers in them) and picks the blocks a model's results call for.
Every table is declared once as a column spec (:class:`Column`: header, and how a row's cell is written),
rendered with :func:`pear_lens.tables.markdown_table`; the conditions' spec also names the CSV's columns.
:func:`write_report` writes them all; :func:`verdict_rows` and :data:`LEGEND` also give the README's compact
verdict table (:mod:`studies.reading`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from studies.confirmatory.run import PEAR_RETRAINED, PLAN_JSON
from studies.confirmatory.report import (LAYER_MATCHED, SETTLE_STEPS, UNIFORM, ConfirmRun, condition_table,
                                         controls_sharing_pear_heads, endpoint_table, error_table, head_overlap,
                                         load_run, looping_rates, memorised_rates, pear_retrained, position_table,
                                         step_limit_table, study_closed_at, summarise)
from studies.templates import Prose, join
from pear_lens.evaluation.outcomes import LOOP_RULE, AnswerKind
from pear_lens.evaluation.stats import LEVEL
from pear_lens.evaluation.tasks import TaskName
from pear_lens.tables import markdown_table

PROSE = Prose("confirmatory")
"""The report's fixed prose, block by block (``studies/templates/confirmatory.md``)."""


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
LEGEND = PROSE("legend", level=f"{100 * LEVEL:g}", spread_min=SPREAD_MIN_CONTROLS)


@dataclass(frozen=True)
class Column:
    """One column of a report table, declared once for the CSV and the Markdown: its name (the CSV's column and
    the Markdown header) and how the Markdown writes a row's cell."""

    name: str
    cell: Callable[[dict[str, Any]], str] | None = None
    """The Markdown cell from the row (None: a column of the CSV only)."""
    csv: bool = True
    """False: a Markdown column built from several of the row's values (no CSV column of its own)."""


def shown(name: str, cell: Callable[[dict[str, Any]], str] | None = None) -> Column:
    """A column the Markdown shows, as ``cell`` writes it (default: the value as it is, "–" where missing)."""
    return Column(name, cell or (lambda r: _text(r.get(name))))


def composed(header: str, cell: Callable[[dict[str, Any]], str]) -> Column:
    """A Markdown column built from several values of the row."""
    return Column(header, cell, csv=False)


def markdown_rows(spec: Sequence[Column], rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The cells of the Markdown columns of ``spec``, one row per record, under their headers (for
    :func:`~pear_lens.tables.markdown_table`)."""
    return pd.DataFrame([{c.name: c.cell(r) for c in spec if c.cell is not None} for r in rows])


def csv_frame(spec: Sequence[Column], frame: pd.DataFrame) -> pd.DataFrame:
    """The CSV columns of ``spec`` from ``frame``, in the spec's order."""
    return frame[[c.name for c in spec if c.csv]] if not frame.empty else frame


def _text(v: Any) -> str:
    return "–" if v is None or (not isinstance(v, (list, dict, str)) and pd.isna(v)) else str(v)


def _fixed3(name: str) -> Callable[[dict[str, Any]], str]:
    return lambda r: "–" if pd.isna(r[name]) else f"{r[name]:.3f}"


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


def _rank_cell(d: dict[str, Any]) -> str:
    """PEAR's rank among the uniform controls, its p (and Holm's), and the plan's word once it is said."""
    n_u, planned = d.get(f"{UNIFORM}_done", 0), d.get(f"{UNIFORM}_planned", 0)
    # primary endpoints: the plan's rank test (Holm over the primary endpoints) and its word, once complete
    held = d.get(f"{UNIFORM}_rank_p_holm")
    word = d.get("beyond_random_heads") or ""
    if not n_u:
        rank = "–"
    elif d["kind"] == "safety":  # higher Δ is still better (less knowledge lost); no rank test is planned here
        rank = f"{1 + int(d[f'{UNIFORM}_n_at_least_pear'])} of {int(n_u) + 1} (1 = kept the most)"
    else:
        rank = (f"{1 + int(d[f'{UNIFORM}_n_at_least_pear'])} of {int(n_u) + 1} (p {_p(d[f'{UNIFORM}_rank_p'])}"
                + ("" if held is None or pd.isna(held) else f", Holm {_p(held)}") + ")"
                + (f"; beyond random heads: {word}" if word in ("yes", "no") else "")
                + (_out_of_reach(d) if word in ("no", "pending") else ""))
    if n_u and n_u != planned:
        rank += f", {_so_far(n_u, planned, 'controls')}"
    return rank


def _ci(d: dict[str, Any], value: str, low: str, high: str) -> str:
    """``+1.0 [-0.7, +2.7]``: a difference in points with its interval."""
    return f"{_pct(d[value], True)} [{_pct(d[low], True)}, {_pct(d[high], True)}]"


def _minus_controls(kind: str) -> Callable[[dict[str, Any]], str]:
    """PEAR minus the mean of ``kind``'s controls with its interval (draws fixed); "–" with none in."""
    key = f"pear_minus_{kind}"
    return lambda d: "–" if not d.get(f"{kind}_done") else _ci(d, key, f"{key}_low", f"{key}_high")


VERDICT_COLUMNS = (
    shown("model"),
    composed("task", lambda d: f"{d['task']} ({d['role']})"),
    composed("baseline %", lambda d: _pct(d["baseline"])),
    composed("PEAR Δ pts [95 % CI]", lambda d: _ci(d, "delta", "ci_low", "ci_high")),
    composed("p raw", lambda d: _p(d["p_raw"])),
    composed("p Holm", lambda d: _p(d["p_holm"])),
    shown("verdict"),
    composed("PEAR's rank among uniform controls", _rank_cell),
    composed("controls' median Δ [10–90 %] or (extremes)", lambda d: _spread_cell(d, UNIFORM)),
    composed("PEAR − controls' mean [95 % CI, draws fixed]", _minus_controls(UNIFORM)),
)
"""The compact verdict table (here and in the README, :mod:`studies.reading`): one row per model and task."""


def verdict_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The compact verdict table: one row per model and task (all items), the words from the plan's rule."""
    return markdown_rows(VERDICT_COLUMNS, (r._asdict() for r in table[table["subset"] == "all items"].itertuples()))


MIN_BAND_CONTROLS = 10
"""Fewer uniform controls than this are drawn one by one: a 10–90 % band needs at least ten to have a 10th and a
90th percentile that are not simply the extremes."""


def position_figure(pos: pd.DataFrame, title: str):
    """Accuracy by gold position: baseline and PEAR with 95 % bootstrap intervals (side by side at each position),
    the uniform controls as a 10–90 % band around their median where there are at least
    :data:`MIN_BAND_CONTROLS` of them, else one grey dot each; integer positions on the x axis, and a y range
    fitted to the data (not 0–1), so a few points' difference is visible."""
    import plotly.graph_objects as go

    from pear_lens.drawing import GREY, PALETTE, finish

    x = [int(v) for v in pos["gold_position"]]
    fig = go.Figure()
    n_ctrl = int(pos["controls_n"].iloc[0]) if "controls_n" in pos and pos["controls_n"].notna().all() else 0
    lo, hi = int(pos["n"].min()), int(pos["n"].max())
    lines = [f"points: accuracy of the items with the gold evidence at that position (n = {lo if lo == hi else f'{lo}–{hi}'}"
             f" each); bars: {100 * LEVEL:.0f} % bootstrap CI (items resampled)"]
    if n_ctrl >= MIN_BAND_CONTROLS:
        fig.add_trace(go.Scatter(x=x + x[::-1], y=(pos["controls_q90"].tolist() + pos["controls_q10"].tolist()[::-1]),
                                 fill="toself", mode="lines", line=dict(width=0), fillcolor="rgba(127,127,127,0.25)",
                                 hoverinfo="skip", name=f"uniform controls: 10–90 % of {n_ctrl}"))
        fig.add_trace(go.Scatter(x=x, y=pos["controls_median"], mode="lines", line=dict(color=GREY, dash="dash"),
                                 name="uniform controls: median"))
        lines.append(f"grey: {n_ctrl} uniform controls (random heads, same training), median and 10–90 % band")
    elif n_ctrl:
        cx = [p for p, values in zip(x, pos["controls"]) for _ in values]
        cy = [v for values in pos["controls"] for v in values]
        fig.add_trace(go.Scatter(x=cx, y=cy, mode="markers", marker=dict(color=GREY, size=6, symbol="circle-open"),
                                 name=f"uniform controls, each (n = {n_ctrl})"))
        lines.append(f"grey circles: each of {n_ctrl} uniform controls (random heads, same training); "
                     f"too few for a band (under {MIN_BAND_CONTROLS})")
    for shift, arm, name, colour in ((-0.08, "baseline", "baseline (the unmodified model)", "black"),
                                     (0.08, "pear", "PEAR", PALETTE[1])):
        y = pos[arm]
        fig.add_trace(go.Scatter(
            x=[p + shift for p in x], y=y, mode="lines+markers", line=dict(color=colour, width=1.5), name=name,
            marker=dict(size=7, color=colour),
            error_y=dict(type="data", symmetric=False, array=pos[f"{arm}_ci_high"] - y,
                         arrayminus=y - pos[f"{arm}_ci_low"], color=colour, thickness=1.2, width=3),
            customdata=pos[[f"{arm}_ci_low", f"{arm}_ci_high", "n"]].to_numpy(),
            hovertemplate=f"{name}<br>position %{{x:.0f}}: %{{y:.1%}} [%{{customdata[0]:.1%}}, "
                          "%{customdata[1]:.1%}], n = %{customdata[2]}<extra></extra>"))
    from pear_lens.drawing import wrap

    return finish(fig, title, "\n".join(wrap(line, 110) for line in lines),
                  xaxis=dict(title="position of the gold evidence (0 = first)", tickmode="array", tickvals=x,
                             ticktext=[str(p) for p in x], range=[min(x) - 0.4, max(x) + 0.4], zeroline=False),
                  yaxis=dict(title="accuracy", tickformat=".0%", rangemode="normal"),
                  legend_rows=2, height=420)


SHOWN_ARMS = ("baseline", "pear", "fixed_damping", "pear_unclipped")
"""The conditions the answer-kinds table shows one by one (the uniform controls as their mean)."""


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
        keep = [c for c in SHOWN_ARMS if c in share.index]
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


def _still_moving(row: "pd.Series", whose: str) -> str:
    """'; in the last 10 steps a τ still moved 36% of the most it could', where the τ path was saved."""
    moving = row.get("last_steps_move_share")
    return "" if moving is None or pd.isna(moving) else PROSE("still_moving", whose=whose, steps=SETTLE_STEPS,
                                                              share=f"{moving:.0%}")


def _retrained_line(run: ConfirmRun) -> str:
    """Whether PEAR's published τ come out again when trained on this run's device (where the controls were)."""
    got = pear_retrained(run)
    if got is None:
        return PROSE("retrained_pending")
    limits = step_limit_table(run).set_index("condition")
    published = limits.loc["pear (published)"]
    meaning = PROSE("retrained_within" if got["within_tolerance"] else "retrained_beyond",
                    tolerance=f"{got['tolerance']:g}")
    return PROSE("retrained", device=got["device"], tau=got["tau"], gap=f"{got['gap']:.2g}", gap_meaning=meaning,
                 at_limit=published["at_step_limit"], n_tau=published["n_tau"],
                 still_moving=_still_moving(limits.loc[PEAR_RETRAINED], "its"))


def _fixed_damping_cell(r: dict[str, Any]) -> str:
    """PEAR minus fixed damping with its interval and raw p."""
    if pd.isna(r.get("pear_minus_fixed_damping", np.nan)):
        return "–"
    key = "pear_minus_fixed_damping"
    return f"{_ci(r, key, f'{key}_low', f'{key}_high')}, {_p(r[f'{key}_p'])}"


ARMS_COLUMNS = (
    shown("model"),
    shown("task"),
    composed("PEAR Δ", lambda r: _pct(r["delta"], True)),
    composed("fixed damping Δ", lambda r: _pct(r.get("fixed_damping_delta"), True)),
    composed("PEAR − fixed damping [95 % CI], p raw", _fixed_damping_cell),
    composed("PEAR unclipped Δ", lambda r: _pct(r.get("pear_unclipped_delta"), True)),
    composed("unclipped controls' Δ (≥ PEAR unclipped)", _unclipped_cell),
    composed("layer-matched median Δ", lambda r: _spread_cell(r, LAYER_MATCHED)),
    composed("PEAR's rank among layer-matched (1 = largest Δ)", _layer_matched_rank),
    composed("PEAR − layer-matched mean [95 % CI, draws fixed]", _minus_controls(LAYER_MATCHED)),
)
"""The arms (fixed damping, unclipped) and the layer-matched controls: one row per task (all items)."""


def arms_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The arms and layer-matched table: one row per model and task (all items)."""
    return markdown_rows(ARMS_COLUMNS, table[table["subset"] == "all items"].to_dict("records"))


def _unclipped_line(run: ConfirmRun) -> str | None:
    """PEAR unclipped's τ against the step limit, beside the published τ (None: not trained yet)."""
    limits = step_limit_table(run).set_index("condition")
    if "pear_unclipped" not in limits.index:
        return None
    u, pub = limits.loc["pear_unclipped"], limits.loc["pear (published)"]
    return PROSE("unclipped_tau", tau=u["tau"], at_limit=u["at_step_limit"], n_tau=u["n_tau"],
                 step_limit=f"{u['step_limit']:.2f}", largest_share=f"{u['largest_move_share']:.0%}",
                 still_moving=_still_moving(u, "the"), published_tau=pub["tau"],
                 published_at_limit=pub["at_step_limit"], published_n_tau=pub["n_tau"],
                 published_step_limit=f"{pub['step_limit']:.2f}")


def _errors_rows(run: ConfirmRun) -> pd.DataFrame:
    """Answer kinds in % for baseline, PEAR, the arms and the uniform controls' mean, per task."""
    err = error_table(run)
    if err.empty:
        return err
    rows = []
    for task, sub in err.groupby("task", sort=False):
        share = sub.pivot(index="condition", columns="kind", values="share")
        for cid in [c for c in SHOWN_ARMS if c in share.index]:
            rows.append({"task": task, "condition": cid, **share.loc[cid].to_dict()})
        ctrl = [c for c in share.index if c.startswith(f"{UNIFORM}_s")]
        if ctrl:
            rows.append({"task": task, "condition": f"uniform controls, mean of {len(ctrl)}",
                         **share.loc[ctrl].mean().to_dict()})
    # the kinds' own order, not the alphabet's; a kind no task here can get is left out
    kinds = [k.value for k in AnswerKind if any(k.value in r for r in rows)]
    spec = (shown("task"), shown("condition"), *(shown(k, lambda r, k=k: _pct(r.get(k))) for k in kinds))
    return markdown_rows(spec, rows)  # none: only controls of other kinds evaluated so far


def _conditions_limit_cell(r: dict[str, Any]) -> str:
    return f"{int(r['tau_at_step_limit'])} of {int(r['n_tau'])}" if pd.notna(r["n_tau"]) else "–"


CONDITION_COLUMNS = (
    Column("model"),
    shown("task"),
    shown("condition"),
    shown("label"),
    shown("n"),
    shown("accuracy", _fixed3("accuracy")),
    shown("delta", _fixed3("delta")),
    shown("tau_mean", _fixed3("tau_mean")),
    Column("n_tau"),
    shown("tau_at_step_limit", _conditions_limit_cell),
    Column("train_steps"),
    Column("train_seed"),
    Column("train_lr"),
    shown("device"),
    shown("dtype"),
    shown("batch_size"),
    Column("seconds"),
)
"""Every condition on every task: all columns in ``confirm_conditions.csv``, those with a cell in the README."""


def _figure(fig: Any, out: Path, stem: str, alt: str, png: bool) -> str:
    """Save ``fig`` as ``out/figures/STEM.html`` (and ``.png``, ``.pdf``, ``.svg``); the report's line that shows it."""
    from pear_lens.figure_files import figure_formats, save_figure

    save_figure(fig, out / "figures" / f"{stem}.html", formats=figure_formats(static=png))
    return PROSE("figure", alt=alt, stem=stem)


def _model_section(run: ConfirmRun, table: pd.DataFrame, conds: pd.DataFrame, deviations: list[str], out: Path,
                   png: bool) -> list[str]:
    """The blocks of one model's section, in the report's order."""
    name = run.plan.model
    parts = [PROSE("model", model=name, sha256=run.sha256, plan=run.plan.text(),
                   deviations="; ".join(deviations) if deviations else PROSE("no_deviations"))]
    if table.empty:
        return parts + [PROSE("nothing_yet")]
    sens = table[table["subset"] != "all items"]
    if not sens.empty:
        s = sens.iloc[0]
        whole = table[(table["subset"] == "all items") & (table["task"] == s["task"])].iloc[0]
        parts.append(PROSE("one_item_per_fact", n_items=int(s["n_items"]), delta=_pct(s["delta"], True),
                           ci_low=_pct(s["ci_low"], True), ci_high=_pct(s["ci_high"], True),
                           p_mcnemar=_p(s["p_mcnemar"]), n_all=int(whole["n_items"]), p_raw=_p(whole["p_raw"]),
                           p_mcnemar_all=_p(whole["p_mcnemar"])))
    parts.append(PROSE("arms", table=markdown_table(arms_rows(table))))
    unclipped = _unclipped_line(run)
    if unclipped is not None:
        parts.append(unclipped)
    parts.append(_retrained_line(run))
    overlap = head_overlap(run)
    if overlap:
        shared = controls_sharing_pear_heads(run)
        parts.append(PROSE("overlap", shares=", ".join(f"{k.replace('_', '-')} {v:.2f}" for k, v in overlap.items()),
                           sharing=", ".join(shared) if shared else "none"))
    rates = memorised_rates(run)
    if rates:
        ctrl = [v for k, v in rates.items() if k.startswith(f"{UNIFORM}_s")]
        parts.append(PROSE("memorised", rates=", ".join(f"{k} {_pct(v)} %" for k, v in rates.items()
                                                        if not k.startswith(("uniform", "layer"))),
                           controls=PROSE("memorised_controls", rate=_pct(float(np.mean(ctrl)))) if ctrl else ""))
    errors = _errors_rows(run)
    if not errors.empty:
        parts.append(PROSE("answer_kinds", loop_rule=LOOP_RULE, table=markdown_table(errors)))
        parts.append(PROSE("looping", rates="; ".join(
            f"{task}: " + ", ".join(f"{cid} {_pct(r['share'])} % ({_pct(r['correct_share'])} % correct)"
                                    for cid, r in rates_.items() if not cid.startswith(("uniform", "layer")))
            for task, rates_ in looping_rates(run).items())))
        parts.append(_figure(errors_figure(error_table(run), f"{name}: answer kinds per condition"), out,
                             f"confirm_answer_kinds_{name}", f"{name} answer kinds", png))
    parts.append(PROSE("conditions", table=markdown_table(markdown_rows(CONDITION_COLUMNS,
                                                                        conds.to_dict("records")))))
    for task in run.outputs:
        if task == TaskName.CLOSED_BOOK.value or not {"baseline", "pear"} <= set(run.outputs[task]):
            continue
        fig = position_figure(position_table(run, task), f"{name} · {task}: accuracy by gold position")
        parts.append(_figure(fig, out, f"confirm_positions_{name}_{task}", f"{name} {task}", png))
    return parts


def _stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Every model's rows of one table (an empty table when no model has any)."""
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames) if frames else pd.DataFrame()


def write_report(root: str | Path, out: str | Path, *, run_json: str | Path | None = None, png: bool = False,
                 registry: str | Path | None = None) -> Path:
    """Recompute every table of the runs under ``root`` (one folder per model) into ``out/README.md`` and CSVs,
    draw the position figures, and put each model's record under ``confirmatory`` in ``run_json``
    (``registry``: the seed registry, which says when each plan's study drew its first items)."""
    import json

    from pear_lens.io import atomic_path, atomic_write_json, atomic_write_text

    root, out = Path(root), Path(out)
    runs = [load_run(p.parent) for p in sorted(root.glob(f"*/{PLAN_JSON}"))]
    order = {m: i for i, m in enumerate(("smollm2-135m-instruct", "gemma-3-270m"))}
    runs.sort(key=lambda r: order.get(r.plan.model, len(order)))
    tables = [endpoint_table(r) for r in runs]
    conditions = [condition_table(r) for r in runs]
    summaries = {r.plan.model: summarise(r, study_closed_at(registry, r), t) for r, t in zip(runs, tables)}
    all_verdicts = [verdict_rows(t) for t in tables if not t.empty]
    parts = [PROSE("title", verdicts=markdown_table(pd.concat(all_verdicts) if all_verdicts else pd.DataFrame()),
                   legend=LEGEND)]
    for run, table, conds in zip(runs, tables, conditions):
        parts += _model_section(run, table, conds, summaries[run.plan.model]["deviations"], out, png)
    csvs = {"confirm_endpoints": _stacked(tables), "confirm_errors": _stacked([error_table(r) for r in runs]),
            "confirm_conditions": csv_frame(CONDITION_COLUMNS, _stacked(conditions))}
    for stem in ("confirm_endpoints", "confirm_conditions", "confirm_errors"):
        with atomic_path(out / f"{stem}.csv") as tmp:
            csvs[stem].to_csv(tmp, index=False)
    atomic_write_text(out / "README.md", join(parts))
    if run_json is not None:
        path = Path(run_json)
        record = json.loads(path.read_text()) if path.exists() else {}
        record["confirmatory"] = summaries
        atomic_write_json(path, record)
    return out / "README.md"
