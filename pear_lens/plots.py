"""Figures for papers: plotly figures in one named template, never shown.

Every function returns a ``go.Figure``; :func:`save_figure` writes it. The
``pear`` template is registered under its own name and applied per figure,
so importing this module changes no global plotly default.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import plotly.graph_objects as go
import plotly.io as pio

from pear_lens.errors import PearLensError
from pear_lens.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from pear_lens.results import HeadScores

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


def head_heatmap(scores: "HeadScores", top_k: int | None = 10, title: str | None = None) -> go.Figure:
    """Layers (rows) × heads (columns) of Δπ, diverging colours centred at 0, top-k outlined."""
    z = scores.scores.numpy()
    bound = float(abs(z).max()) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(scores.n_heads)), y=list(range(scores.n_layers)),
        colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound,
        colorbar=dict(title="Δπ"),
        hovertemplate="layer %{y}, head %{x}<br>Δπ = %{z:.4g}<extra></extra>",
    ))
    if top_k:
        top = scores.top_k(min(top_k, scores.scores.numel()))
        fig.add_trace(go.Scatter(
            x=[h for _, h in top], y=[l for l, _ in top], mode="markers+text",
            marker=dict(symbol="square-open", size=14, color="black", line=dict(width=2)),
            text=[str(i + 1) for i in range(len(top))], textposition="middle right",
            textfont=dict(size=9), name=f"top {len(top)}", hoverinfo="skip",
        ))
    fig.update_layout(
        template=template(),
        title=title or f"{scores.model}: Δπ per head ({scores.method}, {scores.metric}, {scores.difference})",
        xaxis=dict(title="head", dtick=1), yaxis=dict(title="layer", autorange="reversed"),
        showlegend=bool(top_k), legend=dict(orientation="h", yanchor="top", y=-0.12, x=0), width=max(420, 60 * scores.n_heads + 200), height=max(360, 18 * scores.n_layers + 160),
    )
    return fig


def _chrome_path() -> str | None:
    for candidate in (os.environ.get("BROWSER_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      "/usr/bin/google-chrome"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def save_figure(fig: go.Figure, path: str | os.PathLike, formats: Iterable[str] | None = None) -> list[Path]:
    """Write ``fig`` atomically; the suffix of ``path`` picks the format, or give ``formats``.

    Static formats (png, svg, pdf) use kaleido, which needs a Chrome: Debian's
    ``chromium`` package provides one (``apt-get install chromium``).
    """
    path = Path(path)
    formats = list(formats) if formats else [path.suffix.lstrip(".") or "html"]
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target) as tmp:
            if fmt == "html":
                fig.write_html(str(tmp), include_plotlyjs="cdn")
            elif fmt in ("png", "svg", "pdf"):
                chrome = _chrome_path()
                if chrome is None:
                    raise PearLensError(
                        f"writing {target.name} needs a Chrome for kaleido; install Debian's `chromium` "
                        "(apt-get install chromium) or set BROWSER_PATH"
                    )
                os.environ.setdefault("BROWSER_PATH", chrome)
                fig.write_image(str(tmp), format=fmt, scale=2 if fmt == "png" else 1)
            else:
                raise PearLensError(f"unknown figure format {fmt!r}; use html, png, svg or pdf")
        written.append(target)
    return written


def accuracy_by_position(summary: "pd.DataFrame", title: str | None = None) -> go.Figure:
    """Accuracy against the gold evidence's position, one line per condition with its 95% CI band.

    ``summary`` is an evaluation summary (``summary.csv``): rows with a numeric
    ``gold_position`` are drawn; several models or tasks become a grid of panels
    (rows: models, columns: tasks).
    """
    import pandas as pd
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    df = summary[summary["gold_position"].astype(str) != "all"].copy()
    if df.empty:
        raise PearLensError("the summary has no per-position rows (closed-book has no gold position to plot)")
    df["gold_position"] = pd.to_numeric(df["gold_position"])
    models, tasks = list(dict.fromkeys(df["model"])), list(dict.fromkeys(df["task"]))
    conditions = list(dict.fromkeys(df["condition"]))
    colours = {c: qualitative.D3[i % len(qualitative.D3)] for i, c in enumerate(conditions)}
    fig = make_subplots(rows=len(models), cols=len(tasks), shared_yaxes=True,
                        subplot_titles=([f"{m} · {t}" for m in models for t in tasks]
                                        if len(models) * len(tasks) > 1 else None))
    for r, model in enumerate(models, start=1):
        for c, task in enumerate(tasks, start=1):
            for cond in conditions:
                sub = df[(df["model"] == model) & (df["task"] == task) & (df["condition"] == cond)]
                if sub.empty:
                    continue
                sub = sub.sort_values("gold_position")
                x = sub["gold_position"].tolist()
                colour = colours[cond]
                fig.add_trace(go.Scatter(  # CI band: upper edge forward, lower edge back, filled
                    x=x + x[::-1], y=sub["ci_high"].tolist() + sub["ci_low"].tolist()[::-1], fill="toself",
                    fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False,
                    legendgroup=cond), row=r, col=c)
                fig.add_trace(go.Scatter(
                    x=x, y=sub["accuracy"], mode="lines+markers", name=cond, legendgroup=cond,
                    line=dict(color=colour), showlegend=(r == 1 and c == 1),
                    customdata=sub[["ci_low", "ci_high", "n"]].to_numpy(),
                    hovertemplate=(f"{cond}<br>gold at %{{x}}: %{{y:.1%}} "
                                   "[%{customdata[0]:.1%}, %{customdata[1]:.1%}], n=%{customdata[2]}<extra></extra>"),
                ), row=r, col=c)
    fig.update_xaxes(title_text="position of the gold evidence (0 = first)", dtick=1)
    fig.update_yaxes(title_text="accuracy", range=[0, 1], tickformat=".0%", col=1)
    fig.update_layout(template=template(), title=title or "Accuracy by gold position (95% bootstrap CI)",
                      width=max(700, 420 * len(tasks) + 260), height=max(400, 320 * len(models)),
                      legend=dict(x=1.02, xanchor="left", y=1, yanchor="top"))
    return fig
