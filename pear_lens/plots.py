"""Named figures for papers, drawn from result objects and the tables built from them; never shown.

Every function returns a ``go.Figure``; :func:`pear_lens.figure_files.save_figure` writes it. They draw with the
primitives of :mod:`pear_lens.drawing` (the ``pear`` template, the layout every figure shares, the figures
result types draw of themselves), which know no result type: this module sits above the results it draws
and imports them downward, and a result type never imports it. Importing it changes no global plotly
default.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd
import plotly.graph_objects as go

from pear_lens.agreement import same_model, spearman
from pear_lens.drawing import DIVERGING, PALETTE, TEMPLATE_NAME, template  # noqa: F401  (users read them here too)
from pear_lens.drawing import GREY, SMALL_FONT, WIDTHS, Width, finish, nth_colour, require_columns, width_px, wrap
from pear_lens.errors import PearLensError

if TYPE_CHECKING:
    from pear_lens.results import HeadScores


AT_LIMIT_SHARE = 0.9
"""A τ this share of the way to the step limit or further sits at it: :data:`pear_lens.reweight.AT_LIMIT_SHARE`,
which sits above this module (a test holds the two equal)."""


def wrap_lines(lines: list[str], chars: int) -> str:
    """Each line wrapped at ``chars`` characters, joined as one subtitle."""
    return "\n".join(wrap(line, chars) for line in lines)


def head_heatmap(scores: "HeadScores", top_k: int | None = 10, title: str | None = None) -> go.Figure:
    """Layers (rows) × heads (columns) of Δπ, diverging colours centred at 0, top-k outlined and ranked
    (the figure of :meth:`HeadScores.heatmap <pear_lens.results.HeadScores.heatmap>`)."""
    return scores.heatmap(top_k=top_k, title=title)


def coefficient_step_limit(coefficients: Any) -> float | None:
    """How far the optimiser's steps could move τ from 1 (:func:`pear_lens.reweight.step_limit`) for an artifact
    (the ``tau_step_limit`` its training recorded) or a training log (the sum of its ``lr`` column, one value per
    step); None where neither says (give ``step_limit`` to :func:`coefficient_bars`)."""
    training = getattr(coefficients, "training", None)
    if isinstance(training, Mapping) and training.get("tau_step_limit") is not None:
        return float(training["tau_step_limit"])
    if isinstance(coefficients, pd.DataFrame) and {"step", "lr"} <= set(coefficients.columns):
        return float(coefficients.groupby("step")["lr"].first().dropna().sum())
    return None


def coefficient_bars(coefficients: pd.DataFrame | Any, title: str | None = None, *,
                     step_limit: float | None = None, width: Width | int | None = None) -> go.Figure:
    """Learned τ per head as bars with a line at τ = 1 (the unmodified model) and the optimiser's step limit.

    ``coefficients`` is a table with columns ``layer, head, tau`` (and optionally
    ``score``, then heads are ordered by it, strongest first), or any object with
    a ``.to_dataframe()`` returning one (a re-weighting artifact). A training log
    with a ``step`` column shows τ after the last step. ``step_limit`` (read from an artifact or a training log
    when not given: :func:`coefficient_step_limit`) draws dashed lines at τ = 1 ± it, the furthest the
    optimiser's steps could move τ: a bar that ends there was held by the step budget, not chosen by the loss.
    """
    limit = step_limit if step_limit is not None else coefficient_step_limit(coefficients)
    df = coefficients.to_dataframe() if hasattr(coefficients, "to_dataframe") else coefficients
    if not isinstance(df, pd.DataFrame):
        raise PearLensError(f"coefficient_bars needs a DataFrame or an artifact, got {type(coefficients).__name__}")
    require_columns(df, ["layer", "head", "tau"], "coefficient_bars")
    if "step" in df.columns:  # a training log: τ after the last step
        df = df[df["step"] == df["step"].max()]
    df = df.sort_values("score", ascending=False) if "score" in df.columns else df.sort_values(["layer", "head"])
    labels = [f"L{int(l)}.H{int(h)}" for l, h in zip(df["layer"], df["head"])]
    df = df.assign(label=labels)
    hover = "%{x}<br>τ = %{y:.3f}" + ("<br>Δπ = %{customdata:.4g}" if "score" in df.columns else "")
    fig = go.Figure()
    for i, (name, part) in enumerate((("τ < 1: head damped", df[df["tau"] < 1]),
                                      ("τ ≥ 1: head kept or amplified", df[df["tau"] >= 1]))):
        fig.add_trace(go.Bar(
            x=part["label"], y=part["tau"], name=name, marker_color=nth_colour(i),
            customdata=part["score"] if "score" in df.columns else None, hovertemplate=hover + "<extra></extra>",
        ))
    fig.add_hline(y=1.0, line=dict(color="black", width=1.2))
    order = "heads by Δπ, strongest first" if "score" in df.columns else "heads by layer"
    lines = [f"{order}; solid line: τ = 1 (the unmodified model)"]
    top = max(1.05, float(df["tau"].max()) * 1.05)
    if limit is not None:
        held = int(((df["tau"] - 1.0).abs() >= AT_LIMIT_SHARE * limit).sum())
        for y in (1.0 - limit, 1.0 + limit):
            fig.add_hline(y=y, line=dict(color="black", dash="dash", width=1.2))
        fig.add_annotation(x=1, xref="paper", xanchor="right", y=1.0 + limit, yanchor="bottom", showarrow=False,
                           text=f"step limit: τ = 1 ± {limit:.3f}", font=dict(size=SMALL_FONT))
        lines.append(f"dashed: the furthest the optimiser's steps could move τ; {held} of {len(df)} τ at it "
                     f"(≥ {AT_LIMIT_SHARE:.0%} of the way: held by the step budget, not chosen by the loss)")
        top = max(top, 1.0 + limit * 1.25)
    px = width_px(width or ("column" if len(df) <= 8 else "full"))
    return finish(fig, title or "Learned coefficient τ per head", wrap_lines(lines, max(40, (px - 40) // 6)),
                  xaxis=dict(title="head", tickangle=-45 if len(df) > 8 else 0, categoryorder="array",
                             categoryarray=labels),
                  yaxis=dict(title="τ", range=[0, top]), width=px, height=380 if px < 500 else 420)


def relative_depth(df: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Heads of several runs by relative depth ``layer / (n_layers - 1)`` against Δπ, one colour per run.

    ``df`` is :func:`pear_lens.compare.heads_by_depth` (columns ``run, layer,
    head, relative_depth, score, top``); each run's top-K heads are drawn large
    and outlined, the other heads small and faint.
    """
    require_columns(df, ["run", "layer", "head", "relative_depth", "score", "top"], "relative_depth")
    fig = go.Figure()
    for i, (run, g) in enumerate(df.groupby("run", sort=False)):
        for top in (False, True):
            part = g[g["top"] == top]
            fig.add_trace(go.Scatter(
                x=part["relative_depth"], y=part["score"], mode="markers", legendgroup=str(run),
                name=str(run), showlegend=not top,  # one legend entry per run, its top-K included
                marker=dict(color=nth_colour(i), size=11 if top else 5, opacity=1.0 if top else 0.35,
                            line=dict(color="black", width=1.2) if top else dict(width=0)),
                customdata=part[["layer", "head"]].to_numpy(),
                hovertemplate=f"{run}<br>L%{{customdata[0]}}.H%{{customdata[1]}}<br>depth %{{x:.2f}}<br>"
                              "Δπ = %{y:.4g}<extra></extra>",
            ))
    fig.add_hline(y=0.0, line=dict(color="grey", width=1))
    return finish(fig, title or "Heads by relative depth", "large, outlined: each run's top-K heads",
                  xaxis=dict(title="relative depth  layer / (n_layers − 1)", range=[-0.03, 1.03]),
                  yaxis=dict(title="Δπ"), height=440, legend_rows=2)


def score_distributions(runs: "Mapping[str, HeadScores] | pd.DataFrame",
                        title: str | None = None) -> go.Figure:
    """Distribution of Δπ over all heads, one box (with every head as a point) per run.

    ``runs`` is a ``{label: HeadScores}`` mapping or a tidy table with columns
    ``run, score``. Label a list of scores or run folders first with
    :func:`pear_lens.compare.load_runs` (plots draw results; they do not load them).
    """
    if isinstance(runs, pd.DataFrame):
        require_columns(runs, ["run", "score"], "score_distributions")
        groups = [(str(r), g["score"]) for r, g in runs.groupby("run", sort=False)]
    elif isinstance(runs, Mapping):
        groups = [(str(label), s.to_dataframe()["score"]) for label, s in runs.items()]
    else:
        raise PearLensError(f"score_distributions takes {{label: HeadScores}} or a table, got {type(runs).__name__}; "
                            "label a list of runs with pear_lens.compare.load_runs(runs)")
    fig = go.Figure()
    for i, (label, values) in enumerate(groups):
        fig.add_trace(go.Box(
            y=values, name=label, boxpoints="all", jitter=0.45, pointpos=0, marker=dict(size=3, opacity=0.5),
            line=dict(width=1.5), marker_color=nth_colour(i), showlegend=False,
        ))
    fig.add_hline(y=0.0, line=dict(color="grey", width=1))
    return finish(fig, title or "Δπ of every head, per run", yaxis=dict(title="Δπ"),
                  xaxis=dict(tickangle=-20 if len(groups) > 3 else 0),
                  width="column" if len(groups) <= 3 else "full", height=400)


GUIDES = (0.01, 0.05)
_LOG_TICKS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def concentration(df: pd.DataFrame, title: str | None = None, *, width: Width | int = "full") -> go.Figure:
    """How concentrated each run's head effects are: the share of the total |Δπ| held by its top heads.

    ``df`` is :func:`pear_lens.compare.concentration_curves` (columns ``run, heads, fraction_of_heads,
    share``; heads ranked by |Δπ|, the quantity the curve accumulates). The x axis is the fraction of a model's
    heads (log scale, so the top 1 % is visible), which puts models with different head counts on one scale;
    the dotted line is an even spread, the dashed guide lines mark the top 1 % and 5 % of heads, and each
    run's share at them is printed in its legend entry.
    """
    require_columns(df, ["run", "heads", "fraction_of_heads", "share"], "concentration")
    fig = go.Figure()
    for i, (run, g) in enumerate(df.groupby("run", sort=False)):
        at = [float(g.loc[g["fraction_of_heads"] >= f, "share"].iloc[0]) for f in GUIDES]
        fig.add_trace(go.Scatter(
            x=g["fraction_of_heads"], y=g["share"], mode="lines", line=dict(color=nth_colour(i), width=2),
            name=f"{run}: top 1 % {at[0]:.0%}, top 5 % {at[1]:.0%}", customdata=g[["heads"]].to_numpy(),
            hovertemplate=f"{run}<br>top %{{customdata[0]}} heads (%{{x:.1%}})<br>share of Σ|Δπ| %{{y:.1%}}"
                          "<extra></extra>",
        ))
    grid = sorted(set(df["fraction_of_heads"]))
    fig.add_trace(go.Scatter(x=grid, y=grid, mode="lines", name="even spread",
                             line=dict(color=GREY, width=1.2, dash="dot")))
    for f in GUIDES:
        fig.add_vline(x=f, line=dict(color="#404040", width=1, dash="dash"))
        fig.add_annotation(x=math.log10(f), y=1.02, yref="y", text=f"top {f:.0%}", showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(size=SMALL_FONT))
    n_runs = df["run"].nunique()
    return finish(fig, title or "How concentrated are the head effects?",
                  "share of the total |Δπ| held by the heads with the largest |Δπ|; dashed: top 1 % and 5 % of heads",
                  xaxis=dict(title="fraction of heads (largest |Δπ| first, log scale)", type="log",
                             tickvals=_LOG_TICKS,
                             ticktext=[f"{t:.0%}" if t >= 0.01 else f"{t:.1%}" for t in _LOG_TICKS]),
                  yaxis=dict(title="share of Σ|Δπ|", tickformat=".0%", range=[0, 1.1]),
                  legend=dict(orientation="v", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
                  margin=dict(b=60 + 18 * (n_runs + 1)), width=width, height=360 + 18 * (n_runs + 1))


def method_agreement(scores_a: "HeadScores", scores_b: "HeadScores", top_k: int = 10,
                     labels: tuple[str, str] | None = None, title: str | None = None) -> go.Figure:
    """Per-head scatter of two scorings of the same model, Spearman ρ and top-k overlap in the title.

    Heads in either run's top-k are drawn large; the dashed diagonal is y = x
    (exact agreement, expected for attribution against activation patching).
    """
    if not same_model(scores_a, scores_b):
        raise PearLensError(
            f"method_agreement compares two scorings of one model; got {scores_a.model} "
            f"{tuple(scores_a.scores.shape)} and {scores_b.model} {tuple(scores_b.scores.shape)}. "
            "Use pear_lens.compare.compare for different models."
        )
    la, lb = labels or (scores_a.method, scores_b.method)
    if la == lb:
        la, lb = f"{la} (a)", f"{lb} (b)"
    k = min(top_k, scores_a.scores.numel())
    top_a, top_b = set(scores_a.top_k(k)), set(scores_b.top_k(k))
    a, b = scores_a.scores.flatten().numpy(), scores_b.scores.flatten().numpy()
    heads = [(i // scores_a.n_heads, i % scores_a.n_heads) for i in range(len(a))]
    groups = {f"top {k} of {la} only": top_a - top_b, f"top {k} of {lb} only": top_b - top_a,
              f"top {k} of both": top_a & top_b}
    rest = set(heads) - top_a - top_b
    fig = go.Figure()
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                             line=dict(color="grey", dash="dash", width=1), hoverinfo="skip"))
    styles = [("other heads", rest, "#9e9e9e", 5)] + [
        (name, members, colour, 10) for (name, members), colour in zip(groups.items(), PALETTE[:3])]
    for name, members, colour, size in styles:
        idx = [i for i, h in enumerate(heads) if h in members]
        fig.add_trace(go.Scatter(
            x=a[idx], y=b[idx], mode="markers", name=f"{name} ({len(idx)})",
            marker=dict(color=colour, size=size, opacity=0.5 if size < 10 else 0.95,
                        line=dict(color="black", width=0 if size < 10 else 1)),
            text=[f"L{heads[i][0]}.H{heads[i][1]}" for i in idx],
            hovertemplate="%{text}<br>" + la + " %{x:.4g}<br>" + lb + " %{y:.4g}<extra></extra>",
        ))
    rho = spearman(a, b)
    return finish(
        fig, title or f"{scores_a.model}: {la} vs {lb}",
        f"Spearman ρ = {rho:.2f} over {len(a)} heads; top-{k} overlap {len(top_a & top_b)}/{k}",
        xaxis=dict(title=f"Δπ ({la})"), yaxis=dict(title=f"Δπ ({lb})"), height=520, legend_rows=2,
    )


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
                      width=WIDTHS["full"], height=max(360, 280 * len(models)),
                      legend=dict(x=1.02, xanchor="left", y=1, yanchor="top"))
    return fig


def k_sweep_curve(df, title: str | None = None) -> go.Figure:
    """Copy accuracy and copy loss against K: top-K heads, random K heads (mean ± 1 s.d.), baseline.

    ``df`` is the table of :func:`pear_lens.k_sweep.k_sweep` (columns
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
                x=top["k"], y=top[metric], mode="lines+markers", line=dict(color=nth_colour(1), width=2),
                name=f"top-K by Δπ ({steps(top)} steps)", showlegend=first,
            ), row=1, col=col)
    n_eval = int(df["n_eval"].iloc[0]) if len(df) else 0
    fig.update_xaxes(title_text="K (heads re-weighted)", type="log", tickvals=ks, ticktext=[str(k) for k in ks])
    fig.update_layout(
        template=template(), width=WIDTHS["full"], height=440, margin=dict(t=90, b=110),
        title=f"{title or 'Re-weighting K heads'}<br><sup>held-out copy task, {n_eval} sequences</sup>",
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0),
    )
    return fig
