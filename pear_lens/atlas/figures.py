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

from pear_lens.drawing import GREY, PALETTE, SMALL_FONT, finish, heavy_tailed, nth_colour, symlog, template, wrap

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


LABELLED = (3, 2)
"""How many heads each scatter panel names: the largest Δπ and the most negative (its outliers)."""


def _delta_axis(values: np.ndarray) -> tuple[np.ndarray, dict, str]:
    """Δπ for a y axis: on a symmetric-log scale where a few heads dwarf the rest (they would pile every other
    head onto y = 0), with ticks that name real values; the axis settings and a note for the subtitle."""
    if not heavy_tailed(values):
        return values, dict(title_text="Δπ"), ""
    y, linear, tickvals, ticks = symlog(values)
    text = ["0" if v == 0 else f"{v:+.2g}" for v in ticks]
    note = f"Δπ on a symmetric-log axis (linear within ±{linear:.2g}, the median |Δπ|)"
    return y, dict(title_text="Δπ (symmetric-log)", tickmode="array", tickvals=tickvals, ticktext=text), note


def atlas_scatter(df: pd.DataFrame, columns: dict[str, str], stats: pd.DataFrame, top_k: int = 10,
                  title: str | None = None) -> go.Figure:
    """Δπ against each score, one panel per score, with Spearman ρ (its printable ``interval``) and the top-K
    overlap in the panel's title; the title states the intervals' level, B and what they resample.

    Where a few heads dwarf the rest, Δπ is drawn on a symmetric-log axis (:func:`pear_lens.drawing.symlog`)
    so the other heads do not pile up on y = 0; the largest and most negative Δπ (:data:`LABELLED`) are
    named beside their points in every panel."""
    n = len(columns)
    cols = min(n, 2 if n > 3 else 3)
    rows = math.ceil(n / cols)
    by = stats.set_index("detector")
    titles = []
    for column, label in columns.items():
        s = by.loc[column]
        overlap = "undefined" if pd.isna(s["top_k_overlap"]) else int(s["top_k_overlap"])
        titles.append(f"{label}: ρ = {s['interval']}<br>top-{top_k} overlap {overlap}")
    parts = [by.loc[c] for c in columns]
    how = "; ".join(sorted({f"{100 * s['level']:.10g} % bootstrap interval (B = {int(s['n_boot'])}, "
                            f"resampled: {s['resampled']})" for s in parts}))
    y, yaxis, note = _delta_axis(df[DELTA].to_numpy(dtype=float))
    df = df.assign(_y=y)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.12,
                        vertical_spacing=0.5 / rows)
    top = set(map(tuple, _top(df, DELTA, top_k)[["layer", "head"]].to_numpy()))
    is_top = np.array([(l, h) in top for l, h in zip(df["layer"], df["head"])])
    named = pd.concat([df.sort_values(DELTA, ascending=False, kind="stable").head(LABELLED[0]),
                       df[df[DELTA] < 0].sort_values(DELTA, kind="stable").head(LABELLED[1])])
    for i, (column, label) in enumerate(columns.items()):
        r, c = i // cols + 1, i % cols + 1
        for mask, name, colour, size in ((~is_top, "other heads", GREY, 5), (is_top, f"top {top_k} Δπ", PALETTE[1], 7)):
            part = df[mask]
            fig.add_trace(go.Scatter(x=part[column], y=part["_y"], mode="markers", name=name, showlegend=(i == 0),
                                     marker=dict(color=colour, size=size, opacity=0.75 if size == 5 else 0.95),
                                     customdata=part[DELTA],
                                     text=[f"L{l}.H{h}" for l, h in zip(part["layer"], part["head"])],
                                     hovertemplate="%{text}: score %{x:.3g}, Δπ %{customdata:.3g}<extra></extra>"),
                          row=r, col=c)
        fig.add_trace(go.Scatter(x=named[column], y=named["_y"], mode="text", showlegend=False, cliponaxis=False,
                                 text=[f" L{l}.H{h}" for l, h in zip(named["layer"], named["head"])],
                                 textposition="middle right", textfont=dict(size=SMALL_FONT), hoverinfo="skip"),
                      row=r, col=c)
        fig.update_xaxes(title_text=f"{label} score", row=r, col=c)
        fig.update_yaxes(**(yaxis if c == 1 else {k: v for k, v in yaxis.items() if k != "title_text"}), row=r, col=c)
    lines = [f"ρ: Spearman over heads, {how}",
             f"{note}; named: the largest and most negative Δπ" if note
             else "named: the heads with the largest and most negative Δπ"]
    finish(fig, title or "Δπ against each head score", "\n".join(wrap(line, 110) for line in lines),
           height=250 * rows + 170)
    fig.update_annotations(font_size=SMALL_FONT + 1)
    return fig


def atlas_across_models(df: pd.DataFrame, columns: dict[str, str], top_k: int = 10,
                        title: str | None = None) -> go.Figure:
    """Each score against relative depth, one panel per score, one colour per model; each model's
    top-K Δπ heads drawn as large markers, the rest as faint dots.

    ``df`` stacks several models' atlas tables with a ``model`` column and ``relative_depth``. The legend has one
    entry per model, naming where its top-K heads sit (median relative depth); each panel's title says in how
    many models the top-K heads score higher than the rest (medians compared), and the default title states the
    depth range: the figure's message.
    """
    n = len(columns)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    models = list(dict.fromkeys(df["model"]))
    tops = {}
    for model, part in df.groupby("model", sort=False):
        chosen = set(map(tuple, _top(part, DELTA, top_k)[["layer", "head"]].to_numpy()))
        tops[model] = np.array([(l, h) in chosen for l, h in zip(part["layer"], part["head"])])
    higher = {}
    for column in columns:
        count = 0
        for model, part in df.groupby("model", sort=False):
            t = tops[model]
            if t.any() and (~t).any() and part[column][t].median() > part[column][~t].median():
                count += 1
        higher[column] = count
    titles = [f"{label}<br>top-{top_k} higher in {higher[c]} of {len(models)}" for c, label in columns.items()]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.08,
                        vertical_spacing=0.3 / rows)
    depths = {}
    for m, (model, part) in enumerate(df.groupby("model", sort=False)):
        colour = nth_colour(m)
        is_top = tops[model]
        depths[model] = float(part["relative_depth"][is_top].median()) if is_top.any() else float("nan")
        for i, column in enumerate(columns):
            r, c = i // cols + 1, i % cols + 1
            for mask, size, opacity, legend in ((~is_top, 4, 0.2, False), (is_top, 9, 0.95, i == 0)):
                sub = part[mask]
                fig.add_trace(go.Scatter(x=sub["relative_depth"], y=sub[column], mode="markers",
                                         name=f"{model} (top-{top_k} median depth {depths[model]:.2f})",
                                         legendgroup=model, showlegend=legend,
                                         marker=dict(color=colour, size=size, opacity=opacity,
                                                     line=dict(color="black", width=0.8 if size > 4 else 0)),
                                         text=[f"L{l}.H{h}" for l, h in zip(sub["layer"], sub["head"])],
                                         hovertemplate=model + " %{text}: %{y:.3g}<extra></extra>"),
                              row=r, col=c)
            fig.update_xaxes(title_text="relative depth" if r == rows else None, range=[-0.03, 1.03], row=r, col=c)
    known = [d for d in depths.values() if math.isfinite(d)]
    message = (f"Each family's top-{top_k} Δπ heads sit at relative depth {min(known):.2f}–{max(known):.2f}"
               if known else "Head scores by relative depth across model families")
    finish(fig, title or message,
           wrap(f"large dots: each model's top-{top_k} heads by Δπ; faint dots: every other head; panel titles: in "
                f"how many models those heads' median score exceeds the other heads'", 110),
           height=250 * rows + 150, legend_rows=len(models),
           legend=dict(orientation="v", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"))
    fig.update_annotations(font_size=SMALL_FONT + 1)
    return fig
