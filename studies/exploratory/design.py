"""The design of the exploratory PEAR protocol: the grid of K, the rule that chooses K on dev items, the dev table.

K is chosen on *dev* items (another seed than the test items, checked to share no prompt:
:mod:`pear_lens.evaluation.splits`) by a rule stated before the sweep (:data:`SELECTION_RULE`) over a grid of K
relative to the model's head count (:func:`k_grid`). Controls differ from PEAR only in their heads
(:func:`pear_lens.controls.draw_control`); every stage is cached with the inputs it depends on
(:mod:`pear_lens.stage_cache`, :func:`pear_lens.training_cache.cached_tau`).
"""
from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.evaluation.stats import bootstrap_ci
from pear_lens.evaluation.tasks import TaskName

if TYPE_CHECKING:
    import plotly.graph_objects as go


K_PERCENTS: tuple[int | float, ...] = (1, 2, 5, 10, 20)
"""Default grid of K, in percent of the model's heads (the paper's K is 0.5-4 % of Llama-2-7B's heads)."""
DEV_TASKS: tuple[TaskName, ...] = (TaskName.KV, TaskName.MDQA)
"""Tasks whose dev items choose K (the default; a model too slow for MDQA's long prompts may use KV alone)."""
_TASK_NAMES = {TaskName.KV: "KV", TaskName.MDQA: "MDQA", TaskName.COUNTERFACTUAL: "counterfactual",
               TaskName.CLOSED_BOOK: "closed-book"}


def selection_rule(tasks: Sequence[TaskName] = DEV_TASKS) -> str:
    """How K is chosen on the dev items of ``tasks``, stated before the sweep and recorded with it
    (:func:`select_k` applies it)."""
    names = [_TASK_NAMES[TaskName(t)] for t in tasks]
    over = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"the K with the highest mean dev accuracy of top-K over {over}; ties go to the smaller K"


SELECTION_RULE = selection_rule()
"""The rule with the default dev tasks."""
TOP, LAYER_MATCHED, BASELINE = "top", "layer_matched", "baseline"
"""Values of the ``selection`` column of a dev table."""


# --------------------------------------------------------------------------- K


def k_grid(n_total_heads: int, percents: Sequence[int | float] = K_PERCENTS) -> tuple[int, ...]:
    """K for each percentage of ``n_total_heads`` (rounded half up, at least 1, at most all), sorted, each once.

    >>> k_grid(270), k_grid(72), k_grid(12)
    ((3, 5, 14, 27, 54), (1, 4, 7, 14), (1, 2))
    """
    if n_total_heads < 1 or not percents or any(p <= 0 for p in percents):
        raise PearLensError(f"need a positive head count and positive percentages, got {n_total_heads}, {percents}")
    return tuple(sorted({min(n_total_heads, max(1, int(p * n_total_heads / 100 + 0.5))) for p in percents}))


def select_k(dev: pd.DataFrame, tasks: Sequence[TaskName] = DEV_TASKS) -> int:
    """Apply :func:`selection_rule` of ``tasks`` to a dev table (columns ``k``, ``selection``, ``task``,
    ``accuracy``)."""
    values = [TaskName(t).value for t in tasks]
    top = dev[(dev["selection"] == TOP) & dev["task"].isin(values)]
    if top.empty:
        raise PearLensError(f"the dev table has no top-K rows on {', '.join(values)}; run the dev sweep first")
    per_k = top.groupby("k")["accuracy"].mean().round(12)  # rounding: equal accuracies tie exactly
    return int(per_k[per_k == per_k.max()].index.min())


def dev_table(outcomes: Sequence[dict[str, Any]], seed: int = 0) -> pd.DataFrame:
    """Pool per-item dev outcomes into one row per (selection, K, task): accuracy and 95 % bootstrap CI.

    ``outcomes`` rows hold ``selection``, ``k``, ``seed``, ``task``, ``steps`` and ``correct`` (a list of
    bools); draws of several seeds are pooled (their items, stacked).
    """
    df = pd.DataFrame(outcomes)
    rows = []
    for (selection, k, task), g in df.groupby(["selection", "k", "task"], sort=True):
        correct = np.concatenate([np.asarray(c, dtype=bool) for c in g["correct"]])
        low, high = bootstrap_ci(correct, seed=seed)
        rows.append({"selection": selection, "k": int(k), "task": task, "seeds": sorted(int(s) for s in g["seed"]),
                     "steps": int(g["steps"].iloc[0]), "n": int(correct.size), "accuracy": float(correct.mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["selection", "k", "task", "seeds", "steps", "n", "accuracy", "ci_low",
                                       "ci_high"])


def dev_accuracy_curve(df: pd.DataFrame, title: str | None = None, chosen: int | None = None) -> "go.Figure":
    """Dev accuracy against K, one panel per task: top-K heads beside layer-matched random K heads (95 % CIs).

    ``df`` is :func:`dev_table` (columns ``selection`` in ``top``,
    ``layer_matched``, ``baseline``; ``k``, ``task``, ``accuracy``, ``ci_low``, ``ci_high``, ``n``, ``steps``,
    ``seeds``); the baseline (the unmodified model, K = 0) is a dotted line with its CI as a grey band.
    ``chosen`` (the K :func:`select_k` picked for the test table) is marked by a vertical line in every panel.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from pear_lens.drawing import GREY, PALETTE, SMALL_FONT, finish, require_columns, wrap

    require_columns(df, ["selection", "k", "task", "accuracy", "ci_low", "ci_high", "n", "steps"], "dev_accuracy_curve")
    tasks = list(dict.fromkeys(df["task"]))
    ks = sorted(int(k) for k in df.loc[df["k"] > 0, "k"].unique())
    fig = make_subplots(rows=1, cols=len(tasks), shared_yaxes=True, subplot_titles=tasks, horizontal_spacing=0.04)
    styles = {"top": ("top-K by Δπ", PALETTE[1], "solid"), "layer_matched": ("layer-matched random K", GREY, "dash")}
    for col, task in enumerate(tasks, start=1):
        sub = df[df["task"] == task]
        base = sub[sub["selection"] == "baseline"]
        if not base.empty and ks:
            b = base.iloc[0]
            fig.add_trace(go.Scatter(x=[ks[0], ks[-1], ks[-1], ks[0]], y=[b["ci_high"]] * 2 + [b["ci_low"]] * 2,
                                     fill="toself", mode="lines", fillcolor="rgba(0,0,0,0.10)", line=dict(width=0),
                                     hoverinfo="skip", name="original model's 95 % CI", showlegend=col == 1),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=[ks[0], ks[-1]], y=[b["accuracy"]] * 2, mode="lines",
                                     line=dict(color="black", dash="dot"), name=f"original model (n = {b['n']})",
                                     showlegend=col == 1), row=1, col=col)
        for selection, (name, colour, dash) in styles.items():
            part = sub[sub["selection"] == selection].sort_values("k")
            if part.empty:
                continue
            seeds = part["seeds"].iloc[0] if "seeds" in part.columns else [0]
            if isinstance(seeds, str):  # the table read back from dev_table.csv holds the list as text, "[0, 1]"
                seeds = [v for v in seeds.strip("[]").split(",") if v.strip()]
            draws = f", {len(seeds)} draw{'s' if len(seeds) != 1 else ''} pooled" if selection != "top" else ""
            fig.add_trace(go.Scatter(
                x=part["k"], y=part["accuracy"], mode="lines+markers", line=dict(color=colour, dash=dash),
                error_y=dict(type="data", symmetric=False, array=part["ci_high"] - part["accuracy"],
                             arrayminus=part["accuracy"] - part["ci_low"], thickness=1),
                name=f"{name} ({int(part['steps'].iloc[0])} steps{draws})", showlegend=col == 1,
                customdata=part[["ci_low", "ci_high", "n"]].to_numpy(),
                hovertemplate="K = %{x}: %{y:.1%} [%{customdata[0]:.1%}, %{customdata[1]:.1%}], "
                              "n = %{customdata[2]}<extra></extra>"), row=1, col=col)
        if chosen is not None:
            axis = "" if col == 1 else str(col)
            fig.add_shape(type="line", x0=chosen, x1=chosen, xref=f"x{axis}", y0=0, y1=1, yref=f"y{axis} domain",
                          line=dict(color="black", width=1.5, dash="longdash"), layer="above")
            fig.add_annotation(x=math.log10(chosen), xref=f"x{axis}", y=1, yref=f"y{axis} domain",
                               text=f" chosen K = {chosen}", showarrow=False, xanchor="left", yanchor="top",
                               font=dict(size=SMALL_FONT, color="black"))
    fig.update_xaxes(title_text="K (heads re-weighted)", type="log", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_yaxes(title_text="dev accuracy", tickformat=".0%", col=1)
    rule = "; long dashes: the K chosen for the test table (best mean top-K dev accuracy)" if chosen else ""
    return finish(fig, title or "Dev accuracy against K",
                  wrap(f"error bars: 95 % bootstrap CIs (items resampled); grey band: the original model's 95 % CI{rule}", 110),
                  width="full", height=420, legend_rows=2)
