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


def delta_pi_heatmap(z: "np.ndarray", top: Sequence[tuple[int, int]] | None, *, model: str, method: str,
                     metric: str, difference: str, title: str | None = None) -> go.Figure:
    """Layers (rows) × heads (columns) of Δπ ``z``, diverging colours centred at 0, the ``top`` heads (strongest
    first) outlined and ranked; ``model``, ``method``, ``metric`` and ``difference`` say how Δπ was made."""
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
    return finish(
        fig, title or f"{model}: Δπ per head",
        f"{method} patching, {metric}, {difference} Δπ\n"
        "red (Δπ > 0): removing the head helps copying",
        xaxis=dict(title="head", dtick=1, range=[-0.5, n_heads - 0.5]),
        yaxis=dict(title="layer", range=[n_layers - 0.5, -0.5],
                   dtick=1 if n_layers <= 12 else 2 if n_layers <= 24 else 5),
        showlegend=bool(top), width=max(520, 60 * n_heads + 220),
        height=max(380, 18 * n_layers + 180),
    )


def training_curves(loss_curve: Sequence[float], tau_trajectory: Sequence[Sequence[float]],
                    heads: Sequence[tuple[int, int]], model: str) -> go.Figure:
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
