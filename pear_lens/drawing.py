"""Plotly primitives: the ``pear`` template, the shared layout, and the figures result types draw of themselves.

Everything here takes plain values (arrays, lists, tables, strings) and returns a ``go.Figure``; it knows
no pear_lens result type, so it sits below them: :meth:`pear_lens.results.HeadScores.heatmap` and
:meth:`pear_lens.reweight.TrainResult.figure` call it with their own data (a data type never imports the
figures drawn from it). The named figures that take result objects or the tables built from them are in
:mod:`pear_lens.plots`, which draws with these primitives too. The ``pear`` template is registered under
its own name and applied per figure, so importing this module changes no global plotly default.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from pear_lens.errors import PearLensError
from pear_lens.heads import Head

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TEMPLATE_NAME = "pear"
DIVERGING = "RdBu_r"


def template() -> str:
    """Register (once) and return the name of the pear_lens plotly template."""
    if TEMPLATE_NAME not in pio.templates:
        t = go.layout.Template(pio.templates["simple_white"])
        t.layout.font = dict(family="Helvetica, Arial, sans-serif", size=13)
        t.layout.margin = dict(l=60, r=20, t=60, b=50)
        pio.templates[TEMPLATE_NAME] = t
    return TEMPLATE_NAME


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22"]
"""One colour per run/model, in the order runs are given (matplotlib's tab10 order)."""


def nth_colour(i: int) -> str:
    """The ``i``-th colour of :data:`PALETTE`, cycling."""
    return PALETTE[i % len(PALETTE)]


def finish(fig: go.Figure, title: str, subtitle: str | None = None, **layout) -> go.Figure:
    """Apply the template and the layout every figure shares (title left, legend below the plot area)."""
    lines = subtitle.split("\n") if subtitle else []  # one <sup> line each: narrow figures must not clip
    text = "".join([title, *(f"<br><sup>{line}</sup>" for line in lines)])
    layout = {"legend": dict(orientation="h", yanchor="top", y=-0.15, x=0, xanchor="left"), **layout}
    fig.update_layout(template=template(), title=dict(text=text, x=0.02, xanchor="left"), **layout)
    if lines:
        fig.update_layout(margin=dict(t=70 + 20 * len(lines)))
    return fig


def require_columns(df: "pd.DataFrame", columns: Iterable[str], what: str) -> None:
    """Refuse a table that lacks a column a figure draws, naming the missing and the present columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PearLensError(f"{what} needs the columns {', '.join(missing)}; got {', '.join(map(str, df.columns))}")


def delta_pi_heatmap(z: "np.ndarray", top: Sequence[Head] | None, *, model: str, method: str,
                     metric: str, difference: str, title: str | None = None,
                     significant: Sequence[Head] | None = None, level: float | None = None,
                     n_boot: int | None = None, proxy_task: bool = True) -> go.Figure:
    """Layers (rows) × heads (columns) of Δπ ``z``, diverging colours centred at 0, the ``top`` heads (strongest
    first) outlined and ranked; ``model``, ``method``, ``metric`` and ``difference`` say how Δπ was made.

    With ``significant`` (a list, possibly empty: the heads whose ``level`` bootstrap interval from ``n_boot``
    resamples excludes 0), a small black dot marks each of them, named in the legend and the subtitle."""
    n_layers, n_heads = z.shape
    bound = float(abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(n_heads)), y=list(range(n_layers)),
        colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound,
        colorbar=dict(title="Δπ"),
        hovertemplate="layer %{y}, head %{x}<br>Δπ = %{z:.4g}<extra></extra>",
    ))
    if top:
        fig.add_trace(go.Scatter(
            x=[h for _, h in top], y=[l for l, _ in top], mode="markers+text",
            marker=dict(symbol="square-open", size=14, color="black", line=dict(width=2)),
            text=[str(i + 1) for i in range(len(top))], textposition="middle right",
            textfont=dict(size=10), name=f"top {len(top)} (rank beside the box)", hoverinfo="skip",
        ))
    reading = ("removing the head helps copying" if proxy_task
               else "patching the head raises the metric, blue: lowers it")
    subtitle = f"{method} patching, {metric}, {difference} Δπ\nred (Δπ > 0): {reading}"
    if significant is not None:
        rule = f"{interval_text(level, n_boot)} excludes 0"
        fig.add_trace(go.Scatter(
            x=[h for _, h in significant], y=[l for l, _ in significant], mode="markers",
            marker=dict(symbol="circle", size=5, color="black"), name=f"dot: {rule}", hoverinfo="skip",
        ))
        subtitle += f"\ndot: {rule} ({len(significant)} of {n_layers * n_heads} heads)"
    return finish(
        fig, title or f"{model}: Δπ per head", subtitle,
        xaxis=dict(title="head", dtick=1, range=[-0.5, n_heads - 0.5]),
        yaxis=dict(title="layer", range=[n_layers - 0.5, -0.5],
                   dtick=1 if n_layers <= 12 else 2 if n_layers <= 24 else 5),
        showlegend=bool(top) or significant is not None, width=max(520, 60 * n_heads + 220),
        height=max(380, 18 * n_layers + 180),
    )


def interval_text(level: float, n_boot: int) -> str:
    """How an interval was made, for a caption: ``95 % bootstrap CI (B = 2000, prompts resampled within settings)``."""
    return f"{100 * level:.10g} % bootstrap CI (B = {n_boot}, prompts resampled within settings)"


def caterpillar(labels: Sequence[str], scores: Sequence[float], lo: Sequence[float], hi: Sequence[float],
                filled: Sequence[bool], *, level: float, n_boot: int, alpha: float, n_tested: int, model: str,
                method: str, metric: str, difference: str, title: str | None = None) -> go.Figure:
    """Heads ranked by score (``labels`` such as ``L3.H1``, strongest at the top), each a point at its score with
    its interval ``[lo, hi]`` as a horizontal error bar and a line at 0; a point is filled where ``filled``
    (its FDR-adjusted q < ``alpha`` over ``n_tested`` heads) and hollow otherwise. ``level`` and ``n_boot`` say
    how the intervals were made, ``model`` … ``difference`` how the scores were."""
    if not len(labels) == len(scores) == len(lo) == len(hi) == len(filled):
        raise PearLensError("caterpillar needs one label, score, interval and filled flag per head")
    groups = [(True, "circle", f"q < {alpha:g} (t-test per head, Benjamini–Hochberg over {n_tested} heads)"),
              (False, "circle-open", f"q ≥ {alpha:g}")]
    fig = go.Figure()
    for want, symbol, name in groups:
        rows = [i for i, f in enumerate(filled) if bool(f) is want]
        fig.add_trace(go.Scatter(
            x=[scores[i] for i in rows], y=[labels[i] for i in rows], mode="markers", name=name,
            marker=dict(symbol=symbol, size=9, color="black", line=dict(width=1.5, color="black")),
            error_x=dict(type="data", symmetric=False, array=[hi[i] - scores[i] for i in rows],
                         arrayminus=[scores[i] - lo[i] for i in rows], color="black", thickness=1.2, width=3),
            customdata=[[lo[i], hi[i]] for i in rows],
            hovertemplate="%{y}: Δπ = %{x:.4g} [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra></extra>",
        ))
    fig.add_vline(x=0.0, line=dict(color="grey", dash="dot"))
    return finish(
        fig, title or f"{model}: the top {len(labels)} heads by Δπ",
        f"{method} patching, {metric}, {difference} Δπ; error bars: {interval_text(level, n_boot)}",
        xaxis=dict(title=f"Δπ with {interval_text(level, n_boot)}", zeroline=False),
        yaxis=dict(title="head", type="category", categoryorder="array", categoryarray=list(labels),
                   autorange="reversed"),
        width=720, height=max(360, 22 * len(labels) + 200),
    )


def training_curves(loss_curve: Sequence[float], tau_trajectory: Sequence[Sequence[float]],
                    heads: Sequence[Head], model: str) -> go.Figure:
    """Loss per optimizer step beside τ of every head per step (``tau_trajectory``: one row per step, one
    column per head of ``heads``), with a dotted line at τ = 1 (the unmodified model)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("copy-half loss", "τ per head"))
    fig.add_trace(go.Scatter(x=list(range(len(loss_curve))), y=list(loss_curve), mode="lines",
                             name="loss", line=dict(color="black")), row=1, col=1)
    steps = list(range(len(tau_trajectory)))
    for i, (layer, head) in enumerate(heads):
        fig.add_trace(go.Scatter(x=steps, y=[row[i] for row in tau_trajectory], mode="lines",
                                 name=f"L{layer}.H{head}"), row=1, col=2)
    fig.add_hline(y=1.0, line=dict(color="grey", dash="dot"), row=1, col=2)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_layout(template=template(), title=f"{model}: learning τ for {len(heads)} heads",
                      width=900, height=380)
    return fig
