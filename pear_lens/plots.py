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


def ablation_curve(df, title: str | None = None) -> go.Figure:
    """Copy accuracy and copy loss against K: top-K heads, random K heads (mean ± 1 s.d.), baseline.

    ``df`` is the table of :func:`pear_lens.ablation.ablation_curve` (columns
    ``k, selection, seed, steps, copy_accuracy, copy_loss, n_eval``).
    """
    from plotly.subplots import make_subplots

    metrics = [("copy_accuracy", "copy accuracy"), ("copy_loss", "copy loss (nats)")]
    fig = make_subplots(rows=1, cols=2, subplot_titles=[label for _, label in metrics])
    top = df[df["selection"] == "top"].sort_values("k")
    rand = df[df["selection"] == "random"]
    base = df[df["selection"] == "none"]
    ks = sorted(int(k) for k in df.loc[df["k"] > 0, "k"].unique())

    def steps(part) -> str:
        return "/".join(str(s) for s in sorted(part["steps"].unique()))

    for col, (metric, _) in enumerate(metrics, start=1):
        first = col == 1
        if not base.empty and ks:
            fig.add_trace(go.Scatter(
                x=[ks[0], ks[-1]], y=[float(base[metric].iloc[0])] * 2, mode="lines",
                line=dict(color="black", dash="dot"), name="original model", showlegend=first,
            ), row=1, col=col)
        if not rand.empty:
            g = rand.groupby("k")[metric]
            mean, sd = g.mean(), g.std(ddof=1).fillna(0.0)
            rk = list(mean.index)
            fig.add_trace(go.Scatter(
                x=rk + rk[::-1], y=list(mean + sd) + list((mean - sd)[::-1]), mode="lines", fill="toself",
                fillcolor="rgba(120,120,120,0.2)", line=dict(width=0), hoverinfo="skip", showlegend=False,
            ), row=1, col=col)
            fig.add_trace(go.Scatter(
                x=rk, y=list(mean), mode="lines+markers", line=dict(color="grey", dash="dash"),
                name=f"random K heads ({rand['seed'].nunique()} draws, mean ± 1 s.d., {steps(rand)} steps)",
                showlegend=first,
            ), row=1, col=col)
        if not top.empty:
            fig.add_trace(go.Scatter(
                x=top["k"], y=top[metric], mode="lines+markers", line=dict(color="#b2182b", width=2),
                name=f"top-K by Δπ ({steps(top)} steps)", showlegend=first,
            ), row=1, col=col)
    n_eval = int(df["n_eval"].iloc[0]) if len(df) else 0
    fig.update_xaxes(title_text="K (heads re-weighted)", type="log", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_layout(
        template=template(), width=950, height=460, margin=dict(t=110),
        title=f"{title or 'Re-weighting K heads'}<br><sup>held-out copy task, {n_eval} sequences</sup>",
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
    )
    return fig
