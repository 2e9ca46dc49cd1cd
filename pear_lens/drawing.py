"""Plotly primitives: the ``pear`` print style, the shared layout, and the figures result types draw of themselves.

Everything here takes plain values (arrays, lists, tables, strings) and returns a ``go.Figure``; it knows
no pear_lens result type, so it sits below them: :meth:`pear_lens.results.HeadScores.heatmap` and
:meth:`pear_lens.reweight.TrainResult.figure` call it with their own data (a data type never imports the
figures drawn from it). The named figures that take result objects or the tables built from them are in
:mod:`pear_lens.plots`, which draws with these primitives too.

The print style: a figure is laid out at a paper's :data:`WIDTHS` (one column or the full text width, in CSS
pixels at 96 per inch) with fonts of :data:`FONT_SIZE` px (9 pt printed at that width), in the colour-blind-safe
:data:`PALETTE`. The ``pear`` template is registered under its own name and applied per figure (:func:`style`,
:func:`finish`), so importing this module changes no global plotly default.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import plotly.graph_objects as go
import plotly.io as pio

from pear_lens.errors import PearLensError
from pear_lens.heads import Head

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

TEMPLATE_NAME = "pear"
DIVERGING = "RdBu_r"
"""Red (positive) to blue (negative) through white: readable under the common colour-vision deficiencies."""

WIDTHS = {"column": 340, "full": 700}
"""A paper's column (3.5 in) and full text width (7.3 in) in CSS pixels (96 per inch): a figure laid out at
one of them prints at 100 %, so its :data:`FONT_SIZE` is the printed size."""
Width = Literal["column", "full"]
FONT_SIZE = 12
"""Body text in px: 9 pt printed at :data:`WIDTHS`; titles are larger, nothing is smaller than 10 px (7.5 pt)."""
SMALL_FONT = 10
PNG_SCALE = 3
"""PNG pixels per layout pixel: 288 dpi at the printed width."""

PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
"""One colour per run/model/condition, in the order given: Okabe & Ito's colour-blind-safe palette (yellow last:
it is faint on white)."""
GREY = "#7f7f7f"


def template() -> str:
    """Register (once) and return the name of the pear_lens print template."""
    if TEMPLATE_NAME not in pio.templates:
        t = go.layout.Template(pio.templates["simple_white"])
        t.layout.font = dict(family="Arial, Helvetica, sans-serif", size=FONT_SIZE, color="black")
        t.layout.title = dict(font=dict(size=FONT_SIZE + 2), x=0.0, xanchor="left", xref="container", pad=dict(l=8))
        t.layout.colorway = PALETTE
        t.layout.margin = dict(l=60, r=16, t=50, b=50)
        t.layout.legend = dict(font=dict(size=SMALL_FONT + 1))
        axis = dict(ticks="outside", ticklen=3, linewidth=1, tickfont=dict(size=SMALL_FONT + 1),
                    title=dict(font=dict(size=FONT_SIZE)))
        t.layout.xaxis, t.layout.yaxis = axis, axis
        t.layout.annotationdefaults = dict(font=dict(size=SMALL_FONT + 1))
        t.layout.shapedefaults = dict(opacity=1.0)  # simple_white's 0.3 left reference and guide lines near invisible
        pio.templates[TEMPLATE_NAME] = t
    return TEMPLATE_NAME


def width_px(width: Width | int) -> int:
    """``"column"`` or ``"full"`` (:data:`WIDTHS`) in px; a number is taken as px."""
    if isinstance(width, str):
        if width not in WIDTHS:
            raise PearLensError(f"a figure width is one of {', '.join(WIDTHS)} or a number of px, got {width!r}")
        return WIDTHS[width]
    return int(width)


def style(fig: go.Figure, width: Width | int = "full", height: int | None = None) -> go.Figure:
    """Apply the pear_lens print style to any plotly figure, in place: the template (fonts, palette) and a
    print width (:data:`WIDTHS`). Nothing global changes; call it on a figure of your own to match ours."""
    px = width_px(width)
    fig.update_layout(template=template(), width=px, height=height or fig.layout.height or round(px * 0.7))
    return fig


def nth_colour(i: int) -> str:
    """The ``i``-th colour of :data:`PALETTE`, cycling."""
    return PALETTE[i % len(PALETTE)]


def finish(fig: go.Figure, title: str, subtitle: str | None = None, *, width: Width | int = "full",
           height: int | None = None, legend_rows: int = 1, **layout) -> go.Figure:
    """Apply the print style and the layout every figure shares: the title and its subtitle (one line per
    ``\\n``) at the top left, the legend below the plot area in ``legend_rows`` rows (clear of the x axis
    title), the figure ``width`` (:data:`WIDTHS`) wide."""
    lines = subtitle.split("\n") if subtitle else []
    # the subtitle's lines in the title's text (not plotly's title.subtitle): every reader of the title gets them
    title_dict: dict = dict(text="".join([title, *(f"<br><span style='font-size:{SMALL_FONT + 1}px;color:#333333'>"
                                                   f"{line}</span>" for line in lines)]),
                            y=1, yanchor="top", pad=dict(t=12))
    showlegend = layout.get("showlegend", True)
    bottom = 50 + (22 * legend_rows + 10 if showlegend else 0)
    layout = {"legend": dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
              **layout}
    margin = dict(t=52 + 16 * len(lines), b=bottom)
    margin.update(layout.pop("margin", {}) or {})
    px = width_px(width)
    fig.update_layout(template=template(), title=title_dict, width=px, height=height or round(px * 0.7),
                      margin=margin, **layout)
    return fig


def wrap(text: str, chars: int) -> str:
    """``text`` broken into lines of about ``chars`` characters at spaces (a subtitle that fits its figure)."""
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > chars:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    return "\n".join([*lines, line] if line else lines)


def require_columns(df: "pd.DataFrame", columns: Iterable[str], what: str) -> None:
    """Refuse a table that lacks a column a figure draws, naming the missing and the present columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PearLensError(f"{what} needs the columns {', '.join(missing)}; got {', '.join(map(str, df.columns))}")


METHOD_WORDS = {"path": "path patching", "activation": "activation patching", "attribution": "attribution patching"}
METRIC_WORDS = {"logit_minus_mean": "answer logit − mean logit", "prob": "answer probability",
                "logit_diff": "answer − foil logit", "logprob": "answer log-probability"}
METRIC_UNITS = {"logit_minus_mean": "logits", "prob": "probability", "logit_diff": "logits", "logprob": "nats"}


def delta_pi_units(metric: str, difference: str) -> str:
    """The axis or colour-bar label of Δπ with its unit: ``Δπ (relative change)`` or ``Δπ (logits)``."""
    if difference == "relative":
        return "Δπ (relative change, π̃/π − 1)"
    return f"Δπ ({METRIC_UNITS.get(metric, 'metric units')})"


def how_scored(method: str, metric: str, difference: str) -> str:
    """How Δπ was made, in words (no code names): ``path patching of answer logit − mean logit, relative change``."""
    diff = "relative change" if difference == "relative" else "absolute change" if difference == "absolute" \
        else difference
    return f"{METHOD_WORDS.get(method, f'{method} patching')} of the {METRIC_WORDS.get(metric, metric)}, {diff}"


TAIL_QUANTILE = 0.9
"""A Δπ heatmap's colours switch to a symmetric-log scale (:func:`symlog_colours`) when the largest |Δπ| is more
than :data:`TAIL_RATIO` times this quantile of |Δπ|: on a linear scale a few outliers leave every other head
white (SmolLM2's heads ranked 3–10, Δπ 0.001–0.0035, on a ±0.114 scale)."""
TAIL_RATIO = 5.0


def heavy_tailed(z: "np.ndarray") -> bool:
    """Whether a few values of ``z`` dwarf the rest (see :data:`TAIL_QUANTILE`)."""
    import numpy as np

    a = np.abs(np.asarray(z, dtype=float))
    a = a[np.isfinite(a)]
    if a.size == 0 or a.max() == 0:
        return False
    q = float(np.quantile(a, TAIL_QUANTILE))
    return q == 0 or float(a.max()) > TAIL_RATIO * q


def symlog_colours(z: "np.ndarray") -> tuple["np.ndarray", float, list[float], list[float]]:
    """``z`` on a symmetric-log scale for colours (:func:`symlog`)."""
    return symlog(z)


def symlog(z: "np.ndarray", linear: float | None = None) -> tuple["np.ndarray", float, list[float], list[float]]:
    """``z`` on a symmetric-log scale: ``sign(z) · log10(1 + |z| / c)``, linear within ±``c`` (``linear``, else the
    median nonzero |z|), so small effects stay apart while the largest keep the ends. Returns the transformed
    values, ``c``, and tick positions on the transformed scale with the values of ``z`` they stand for."""
    import numpy as np

    z = np.asarray(z, dtype=float)
    a = np.abs(z[np.isfinite(z)])
    c = float(linear) if linear else float(np.median(a[a > 0])) if (a > 0).any() else 1.0
    t = np.sign(z) * np.log10(1.0 + np.abs(z) / c)
    top = float(a.max()) if a.size else 1.0
    values = [v for v in (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
              if 2 * c <= v <= top]
    if len(values) > 4:  # at most four ticks a side, the largest kept
        values = values[::-1][::max(1, round(len(values) / 4))][::-1]
    ticks = [-v for v in values[::-1]] + [0.0] + values
    return t, c, [float(np.sign(v) * np.log10(1 + abs(v) / c)) for v in ticks], ticks


def _fmt(v: float) -> str:
    return f"{v:.2g}" if abs(v) < 0.01 else f"{v:.3f}".rstrip("0").rstrip(".")


def delta_pi_heatmap(z: "np.ndarray", top: Sequence[Head] | None, *, model: str, method: str,
                     metric: str, difference: str, title: str | None = None,
                     significant: Sequence[Head] | None = None, level: float | None = None,
                     n_boot: int | None = None, proxy_task: bool = True,
                     width: Width | int | None = None) -> go.Figure:
    """Layers (rows) × heads (columns) of Δπ ``z``, diverging colours centred at 0, the ``top`` heads (strongest
    first) outlined and ranked; ``model``, ``method``, ``metric`` and ``difference`` say how Δπ was made.

    Where a few heads would leave the rest white (:func:`heavy_tailed`), the colours follow a symmetric-log
    scale (:func:`symlog_colours`): the colour bar's ticks name real Δπ, the subtitle says so, and the hover and
    ``customdata`` hold the real values.
    With ``significant`` (a list, possibly empty: the heads whose ``level`` bootstrap interval from ``n_boot``
    resamples excludes 0), a small black dot marks each of them, named in the legend and the subtitle."""
    import numpy as np

    n_layers, n_heads = z.shape
    relative = difference == "relative"
    tick = (lambda v: "0" if v == 0 else f"{100 * v:+.2g}%") if relative else (lambda v: f"{v:+.2g}")
    colorbar = dict(title=dict(text=delta_pi_units(metric, difference).replace(" (", "<br>("), side="right"),
                    thickness=12, tickformat=".1%" if relative else ".2g")
    symlog = heavy_tailed(z)
    if symlog:  # small suppressors visible beside a few large effects; the colour bar names real values
        colours, linear, tickvals, ticks = symlog_colours(z)
        bound = float(np.nanmax(np.abs(colours)))
        colorbar.update(tickvals=tickvals, ticktext=[tick(v) for v in ticks])
    else:
        colours, bound = np.asarray(z, dtype=float), float(np.nanmax(np.abs(z))) or 1.0
    fig = go.Figure(go.Heatmap(
        z=colours, x=list(range(n_heads)), y=list(range(n_layers)), customdata=np.asarray(z, dtype=float),
        colorscale=DIVERGING, zmid=0.0, zmin=-bound, zmax=bound, colorbar=colorbar,
        hovertemplate="layer %{y}, head %{x}<br>Δπ = %{customdata:.4g}<extra></extra>",
    ))
    if top:
        fig.add_trace(go.Scatter(
            x=[h for _, h in top], y=[l for l, _ in top], mode="markers+text",
            marker=dict(symbol="square-open", size=13, color="black", line=dict(width=2)),
            text=[str(i + 1) for i in range(len(top))], textposition="middle right", cliponaxis=False,
            textfont=dict(size=SMALL_FONT), name=f"top {len(top)} by Δπ, rank beside the box", hoverinfo="skip",
        ))
    reading = ("removing the head helps copying (a suppressor); blue: it hurts" if proxy_task
               else "patching the head raises the metric; blue: lowers it")
    px = width_px(width or ("column" if n_heads <= 10 else "full"))
    chars = max(40, (px - 40) // 6)
    parts = [wrap(f"{how_scored(method, metric, difference)}", chars), wrap(f"red (Δπ > 0): {reading}", chars)]
    if symlog:
        shown = _pct(linear) if relative else _fmt(linear)
        parts.append(wrap(f"colour: symmetric-log scale (linear within ±{shown}, the median |Δπ|)", chars))
    if significant is not None:
        rule = f"{interval_text(level, n_boot)} excludes 0"
        fig.add_trace(go.Scatter(
            x=[h for _, h in significant], y=[l for l, _ in significant], mode="markers",
            marker=dict(symbol="circle", size=5, color="black"), name="dot: its CI excludes 0", hoverinfo="skip",
        ))
        parts.append(wrap(f"dot: {rule} ({len(significant)} of {n_layers * n_heads} heads)", chars))
    subtitle = "\n".join(parts)
    legend_rows = (1 if top else 0) + (1 if significant is not None else 0)
    n_lines = subtitle.count("\n") + 1
    return finish(
        fig, title or f"{model}: Δπ per head", subtitle, width=px, legend_rows=max(1, legend_rows),
        legend=dict(orientation="v", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        margin=dict(b=50 + 20 * legend_rows),
        xaxis=dict(title="head", dtick=1 if n_heads <= 16 else 2, range=[-0.5, n_heads - 0.5], showgrid=False),
        yaxis=dict(title="layer", range=[n_layers - 0.5, -0.5], showgrid=False,
                   dtick=1 if n_layers <= 12 else 2 if n_layers <= 24 else 5),
        showlegend=bool(top) or significant is not None,
        height=max(320, 15 * n_layers + 44 + 16 * n_lines + 50 + 20 * legend_rows + 30),
    )


def _pct(v: float) -> str:
    return f"{100 * v:.2g}\u00a0%" if abs(v) < 0.1 else f"{100 * v:.0f}\u00a0%"


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
            marker=dict(symbol=symbol, size=8, color="black", line=dict(width=1.5, color="black")),
            error_x=dict(type="data", symmetric=False, array=[hi[i] - scores[i] for i in rows],
                         arrayminus=[scores[i] - lo[i] for i in rows], color="black", thickness=1.2, width=3),
            customdata=[[lo[i], hi[i]] for i in rows],
            hovertemplate="%{y}: Δπ = %{x:.4g} [%{customdata[0]:.4g}, %{customdata[1]:.4g}]<extra></extra>",
        ))
    fig.add_vline(x=0.0, line=dict(color=GREY, dash="dot"))
    return finish(
        fig, title or f"{model}: the top {len(labels)} heads by Δπ",
        wrap(f"{how_scored(method, metric, difference)}; error bars: {interval_text(level, n_boot)}", 100),
        xaxis=dict(title=f"{delta_pi_units(metric, difference)}<br>with its {interval_text(level, n_boot)}", zeroline=False),
        yaxis=dict(title="head", type="category", categoryorder="array", categoryarray=list(labels),
                   autorange="reversed"),
        legend_rows=2, height=max(360, 18 * len(labels) + 220),
    )


def training_curves(loss_curve: Sequence[float], tau_trajectory: Sequence[Sequence[float]],
                    heads: Sequence[Head], model: str, step_limit: float | None = None) -> go.Figure:
    """Loss per optimizer step beside τ of every head per step (``tau_trajectory``: one row per step, one
    column per head of ``heads``), with a dotted line at τ = 1 (the unmodified model) and, given the optimiser's
    ``step_limit`` (:func:`pear_lens.reweight.step_limit`), dashed lines at τ = 1 ± it."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("copy-half loss", "τ per head"), horizontal_spacing=0.12)
    fig.add_trace(go.Scatter(x=list(range(len(loss_curve))), y=list(loss_curve), mode="lines",
                             name="loss", line=dict(color="black")), row=1, col=1)
    steps = list(range(len(tau_trajectory)))
    for i, (layer, head) in enumerate(heads):
        fig.add_trace(go.Scatter(x=steps, y=[row[i] for row in tau_trajectory], mode="lines",
                                 line=dict(color=nth_colour(i)), name=f"L{layer}.H{head}"), row=1, col=2)
    fig.add_hline(y=1.0, line=dict(color=GREY, dash="dot"), row=1, col=2)
    subtitle = "dotted: τ = 1 (the unmodified model)"
    if step_limit is not None:
        for y in (1 - step_limit, 1 + step_limit):
            fig.add_hline(y=y, line=dict(color="black", dash="dash", width=1), row=1, col=2)
        subtitle += f"; dashed: 1 ± {step_limit:.3f}, the furthest the optimiser's steps can move τ"
    fig.update_xaxes(title_text="optimizer step")
    return finish(fig, f"{model}: learning τ for {len(heads)} heads", subtitle,
                  legend_rows=math.ceil(len(heads) / 5) + 1, height=380)
