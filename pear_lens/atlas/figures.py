"""Figures of a head atlas, drawn from its tables (they know no result type).

:class:`pear_lens.atlas.HeadAtlas` calls these with its own data frames; a researcher can call them
with a CSV read back from ``head_atlas.csv``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pear_lens.drawing import template

DELTA = "delta_pi"
MARK = dict(symbol="square-open", size=14, color="black", line=dict(width=2))


def _grid(df: pd.DataFrame, column: str) -> np.ndarray:
    n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    grid = np.full((n_layers, n_heads), np.nan)
    grid[df["layer"].to_numpy(), df["head"].to_numpy()] = df[column].to_numpy(dtype=float)
    return grid


def _top(df: pd.DataFrame, column: str, k: int, largest: bool = True) -> pd.DataFrame:
    """The top ``k`` rows by ``column`` (ties: :data:`pear_lens.uncertainty.TIE_RULE`); none where the tie rule
    alone would pick them (a constant column, or a tie across the k-th place): no head is outlined then."""
    from pear_lens.uncertainty import why_top_k_undefined

    if why_top_k_undefined(df[column].to_numpy(dtype=float), k, column, descending=largest):
        return df.head(0)
    return df.sort_values(column, ascending=not largest, kind="stable").head(k)


def atlas_heatmaps(df: pd.DataFrame, columns: dict[str, str], top_k: int = 10, title: str | None = None,
                   higher_is_role: dict[str, bool] | None = None) -> go.Figure:
    """Δπ and each score as layers × heads heatmaps side by side, each with its own colour scale.

    ``columns`` maps a column of ``df`` to its panel title. The ``top_k`` heads by Δπ are outlined
    with the same black square in every panel, so a reader sees where the suppression heads fall on
    each score's map.
    """
    higher_is_role = higher_is_role or {}
    panels = {DELTA: "Δπ (suppression > 0)", **columns}
    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(panels.values()), horizontal_spacing=0.12,
                        vertical_spacing=0.12)
    top = _top(df, DELTA, top_k)
    for i, column in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        grid = _grid(df, column)
        diverging = column == DELTA or not higher_is_role.get(column, True) or np.nanmin(grid) < 0
        bound = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
        scale = dict(colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound) if diverging else dict(colorscale="Viridis")
        x_dom = fig.layout[f"xaxis{i + 1 if i else ''}"].domain
        y_dom = fig.layout[f"yaxis{i + 1 if i else ''}"].domain
        bar = dict(x=x_dom[1] + 0.01, xanchor="left", y=(y_dom[0] + y_dom[1]) / 2, len=y_dom[1] - y_dom[0],
                   thickness=10, tickfont=dict(size=9))
        fig.add_trace(go.Heatmap(z=grid, **scale, colorbar=bar,
                                 hovertemplate="L%{y}.H%{x}: %{z:.3g}<extra>" + panels[column] + "</extra>"),
                      row=r, col=c)
        fig.add_trace(go.Scatter(x=top["head"], y=top["layer"], mode="markers", marker=MARK, showlegend=(i == 0),
                                 name=f"top {top_k} Δπ", hoverinfo="skip"), row=r, col=c)
        fig.update_xaxes(title_text="head", row=r, col=c)
        fig.update_yaxes(title_text="layer", row=r, col=c)
    fig.update_layout(template=template(), title=title or "Head atlas", height=330 * rows + 80,
                      width=380 * cols + 120, legend=dict(orientation="h", y=-0.08))
    return fig


def atlas_scatter(df: pd.DataFrame, columns: dict[str, str], stats: pd.DataFrame, top_k: int = 10,
                  title: str | None = None) -> go.Figure:
    """Δπ against each score, one panel per score, with Spearman ρ (its printable ``interval``) and the top-K
    overlap; the title states the intervals' level, B and what they resample."""
    n = len(columns)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    by = stats.set_index("detector")
    titles = []
    for column, label in columns.items():
        s = by.loc[column]
        overlap = "undefined" if pd.isna(s["top_k_overlap"]) else int(s["top_k_overlap"])
        titles.append(f"{label}: ρ = {s['interval']}, top-{top_k} overlap {overlap}")
    parts = [by.loc[c] for c in columns]
    how = "; ".join(sorted({f"{100 * s['level']:.10g} % bootstrap interval (B = {int(s['n_boot'])}, "
                            f"resampled: {s['resampled']})" for s in parts}))
    title = f"{title or 'Δπ against each head score'}<br><sup>ρ: Spearman over heads, {how}</sup>"
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.14)
    top = set(map(tuple, _top(df, DELTA, top_k)[["layer", "head"]].to_numpy()))
    is_top = np.array([(l, h) in top for l, h in zip(df["layer"], df["head"])])
    for i, (column, label) in enumerate(columns.items()):
        r, c = i // cols + 1, i % cols + 1
        for mask, name, colour in ((~is_top, "other heads", "#9e9e9e"), (is_top, f"top {top_k} Δπ", "#d62728")):
            part = df[mask]
            fig.add_trace(go.Scatter(x=part[column], y=part[DELTA], mode="markers", name=name, showlegend=(i == 0),
                                     marker=dict(color=colour, size=6, opacity=0.8),
                                     text=[f"L{l}.H{h}" for l, h in zip(part["layer"], part["head"])],
                                     hovertemplate="%{text}: score %{x:.3g}, Δπ %{y:.3g}<extra></extra>"),
                          row=r, col=c)
        fig.update_xaxes(title_text=label, row=r, col=c)
        fig.update_yaxes(title_text="Δπ", row=r, col=c)
    fig.update_layout(template=template(), title=title, height=340 * rows + 80, margin=dict(t=100),
                      width=420 * cols + 80, legend=dict(orientation="h", y=-0.08))  # t: room for the subtitle
    fig.update_annotations(font_size=11)
    return fig


def atlas_across_models(df: pd.DataFrame, columns: dict[str, str], top_k: int = 10,
                        title: str | None = None) -> go.Figure:
    """Each score against relative depth, one panel per score, one colour per model; each model's
    top-K Δπ heads drawn as filled markers, the rest as faint dots.

    ``df`` stacks several models' atlas tables with a ``model`` column and ``relative_depth``.
    """
    n = len(columns)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(columns.values()), horizontal_spacing=0.08,
                        vertical_spacing=0.14)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
    for m, (model, part) in enumerate(df.groupby("model", sort=False)):
        colour = palette[m % len(palette)]
        top = set(map(tuple, _top(part, DELTA, top_k)[["layer", "head"]].to_numpy()))
        is_top = np.array([(l, h) in top for l, h in zip(part["layer"], part["head"])])
        for i, column in enumerate(columns):
            r, c = i // cols + 1, i % cols + 1
            for mask, size, opacity, suffix in ((~is_top, 4, 0.25, " (other heads)"), (is_top, 10, 0.95, f" (top {top_k} Δπ)")):
                sub = part[mask]
                fig.add_trace(go.Scatter(x=sub["relative_depth"], y=sub[column], mode="markers", name=model + suffix,
                                         legendgroup=model + suffix, showlegend=(i == 0),
                                         marker=dict(color=colour, size=size, opacity=opacity),
                                         text=[f"L{l}.H{h}" for l, h in zip(sub["layer"], sub["head"])],
                                         hovertemplate=model + " %{text}: %{y:.3g}<extra></extra>"),
                              row=r, col=c)
            fig.update_xaxes(title_text="relative depth", range=[-0.03, 1.03], row=r, col=c)
    fig.update_layout(template=template(), title=title or "Head scores by relative depth across model families",
                      height=340 * rows + 120, width=420 * cols + 80, legend=dict(orientation="h", y=-0.12))
    return fig
