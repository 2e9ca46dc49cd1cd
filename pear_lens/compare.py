"""Compare head scores across runs: models, methods, seeds and proxy settings.

Heads of different models cannot be matched one to one, so every head is placed
at its *relative depth* ``layer / (n_layers - 1)`` (0 = first block, 1 = last).
Runs of the same model are compared head by head (top-K overlap, Spearman over
all heads); runs of different models are compared through relative-depth bins
(overlap of the bins holding each run's top-K heads, Spearman of the per-bin
maximum Δπ). Column names say which of the two a number is.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Union

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from pear_lens.agreement import depth_bin, jaccard, layer_depth, pair_bins, same_model, spearman
from pear_lens.errors import PearLensError
from pear_lens.heads import head_label
from pear_lens.results import Head, HeadScores

Run = Union[HeadScores, str, os.PathLike]
Runs = Union[Sequence[Run], Mapping[str, Run]]

# --------------------------------------------------------------------------- small pieces


def bin_maxima(scores: HeadScores, n_bins: int) -> Float[Tensor, " n_bins"]:
    """The largest Δπ among the heads of each relative-depth bin (NaN for an empty bin)."""
    out = torch.full((n_bins,), -math.inf)
    layer_max = scores.scores.max(dim=1).values
    for layer in range(scores.n_layers):
        b = depth_bin(layer_depth(layer, scores.n_layers), n_bins)
        out[b] = torch.maximum(out[b], layer_max[layer])
    out[out == -math.inf] = math.nan
    return out


def _k(scores: HeadScores, k: int) -> int:
    if k < 1:
        raise PearLensError(f"k must be at least 1, got {k}")
    return min(k, scores.scores.numel())


def top_depth_bins(scores: HeadScores, k: int, n_bins: int) -> set[int]:
    """The relative-depth bins that hold at least one of the top-``k`` heads."""
    return {depth_bin(layer_depth(l, scores.n_layers), n_bins) for l, _ in scores.top_k(_k(scores, k))}


CONCENTRATION_FRACTIONS = (0.01, 0.05)
"""The shares of heads whose part of the total |Δπ| ``run_summary`` reports (top 1 % and 5 %)."""


def cumulative_share(scores: HeadScores, ranked_by: Literal["score", "magnitude"] = "score") -> Float[Tensor, " n"]:
    """Entry ``i``: the share of the total |Δπ| of all heads held by the top ``i + 1`` heads, ranked by Δπ.

    Ranked by Δπ (``ranked_by="score"``), not |Δπ|: the top heads are the ones PEAR would pick (the strongest
    suppressors), so the curve says how much of a model's whole head-level effect they carry; the heads with
    the most negative Δπ come last, so such a curve jumps at its end. ``ranked_by="magnitude"`` ranks by the
    quantity the curve accumulates, |Δπ| (a concave curve: the figure's). Evenly spread effects give the
    diagonal ``(i + 1) / n``; one dominant head gives a curve that jumps at once.
    """
    flat = scores.scores.flatten().double()
    flat = flat[torch.isfinite(flat)]
    total = flat.abs().sum()
    if flat.numel() == 0 or total == 0:
        raise PearLensError(f"{scores.model}: no finite, non-zero Δπ to measure concentration on")
    ranked = flat.sort(descending=True).values.abs() if ranked_by == "score" else \
        flat.abs().sort(descending=True).values
    return (ranked.cumsum(0) / total).float()


def top_share(scores: HeadScores, fraction: float) -> tuple[int, float]:
    """(number of heads, their share of the total |Δπ|) for the top ``ceil(fraction · n_heads)`` heads by Δπ."""
    if not 0 < fraction <= 1:
        raise PearLensError(f"fraction must be in (0, 1], got {fraction}")
    curve = cumulative_share(scores)
    n = max(1, math.ceil(fraction * curve.numel()))
    return n, float(curve[n - 1])


def suppression_share(scores: HeadScores, fraction: float) -> float:
    """The share of all positive Δπ (the suppression mass) held by the top ``ceil(fraction · n_heads)`` heads.

    Unlike :func:`top_share` it leaves out the heads that help copying (negative Δπ), which in small models
    often carry most of the absolute effect; NaN when no head has a positive Δπ.
    """
    if not 0 < fraction <= 1:
        raise PearLensError(f"fraction must be in (0, 1], got {fraction}")
    flat = scores.scores.flatten().double()
    flat = flat[torch.isfinite(flat)]
    positive = flat.clamp(min=0).sort(descending=True).values
    total = positive.sum()
    if total == 0:
        return math.nan
    n = max(1, math.ceil(fraction * flat.numel()))
    return float(positive[:n].sum() / total)


# --------------------------------------------------------------------------- loading runs


def load_runs(runs: Runs) -> dict[str, HeadScores]:
    """Labelled :class:`HeadScores` from scores, discovery run folders, or a ``{label: run}`` mapping.

    A folder is labelled by its name; scores by ``model:method``, with the seed
    and then a counter appended where two labels would collide.
    """
    if isinstance(runs, (str, os.PathLike, HeadScores)):
        raise PearLensError("pass the runs as a list (or a {label: run} mapping), not a single run")
    items = list(runs.items()) if isinstance(runs, Mapping) else [(None, r) for r in runs]
    if not items:
        raise PearLensError("compare needs at least one run (HeadScores or a `pear-lens discover` folder)")
    loaded: list[tuple[str | None, HeadScores, str]] = []
    for label, run in items:
        if isinstance(run, HeadScores):
            loaded.append((label, run, f"{run.model}:{run.method}"))
        elif isinstance(run, (str, os.PathLike)):
            loaded.append((label, HeadScores.load(run), Path(run).resolve().name))
        else:
            raise PearLensError(
                f"a run must be HeadScores or a discovery run folder, got {type(run).__name__}"
            )
    out: dict[str, HeadScores] = {}
    for label, scores, default in loaded:
        if label is None:
            label = default
            if sum(d == default for _, _, d in loaded) > 1:
                label = f"{default}:seed{scores.task.get('seed', '?')}"
            base, i = label, 2
            while label in out:
                label, i = f"{base}#{i}", i + 1
        elif label in out:
            raise PearLensError(f"two runs are labelled {label!r}; give each a unique label")
        out[str(label)] = scores
    return out


def by_setting(scores: HeadScores) -> dict[str, HeadScores]:
    """One :class:`HeadScores` per proxy (batch, n) setting of a run, from its stored per-setting scores.

    Comparing them shows how much the head ranking depends on the setting,
    without scoring anything again.
    """
    settings = scores.task.get("settings") or [None] * scores.per_setting.shape[0]
    out = {}
    for i, setting in enumerate(settings):
        name = f"{scores.model}:{scores.method}:" + (f"{setting[0]}x{setting[1]}" if setting else f"setting{i}")
        task = dict(scores.task, settings=[list(setting)] if setting else [])
        out[name] = HeadScores(
            scores=scores.per_setting[i], per_setting=scores.per_setting[i:i + 1],
            clean_metric=[scores.clean_metric[i]], model=scores.model, method=scores.method,
            metric=scores.metric, difference=scores.difference, task=task, options=scores.options,
            fingerprint=scores.fingerprint,
        )
    return out


# --------------------------------------------------------------------------- tables


def heads_by_depth(runs: Runs, k: int = 10) -> pd.DataFrame:
    """Tidy table of every head of every run at its relative depth (input of :func:`pear_lens.plots.relative_depth`).

    Columns: ``run, model, method, layer, head, n_layers, relative_depth, score, rank, top``
    (``top`` marks the run's top-``k`` heads).
    """
    frames = []
    for label, scores in load_runs(runs).items():
        df = scores.to_dataframe()[["layer", "head", "score", "rank"]]
        df.insert(0, "run", label)
        df.insert(1, "model", scores.model)
        df.insert(2, "method", scores.method)
        df["n_layers"] = scores.n_layers
        df["relative_depth"] = [layer_depth(int(l), scores.n_layers) for l in df["layer"]]
        df["top"] = df["rank"] <= _k(scores, k)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def run_summary(runs: Runs, k: int = 10) -> pd.DataFrame:
    """One row per run: what produced it, its top-``k`` heads with their relative depths, and how concentrated
    its effects are (``top1%_heads``, ``top1%_share``, ``top5%_heads``, ``top5%_share``: the top 1 % / 5 % of
    heads by Δπ and their share of the total |Δπ|, see :func:`top_share`; ``top1%_suppression_share`` and
    ``top5%_suppression_share``: their share of the positive Δπ alone, see :func:`suppression_share`)."""
    rows = []
    for label, s in load_runs(runs).items():
        top = s.top_k(_k(s, k))
        rows.append({
            "run": label, "model": s.model, "method": s.method, "metric": s.metric,
            "difference": s.difference, "seed": s.task.get("seed"), "prepend_bos": bool(s.task.get("prepend_bos")),
            "settings": ",".join(f"{b}x{n}" for b, n in s.task.get("settings", [])),
            "n_layers": s.n_layers, "n_heads": s.n_heads, "k": len(top),
            "top_heads": " ".join(head_label(h) for h in top),
            "top_relative_depths": " ".join(f"{layer_depth(l, s.n_layers):.2f}" for l, _ in top),
            "top_scores": " ".join(f"{float(s.scores[h]):.4g}" for h in top),
            "max_score": float(s.scores.max()), "clean_metric": sum(s.clean_metric) / len(s.clean_metric),
            **{key: value for f in CONCENTRATION_FRACTIONS
               for key, value in zip((f"top{f:.0%}_heads", f"top{f:.0%}_share"), top_share(s, f))},
            **{f"top{f:.0%}_suppression_share": suppression_share(s, f) for f in CONCENTRATION_FRACTIONS},
        })
    return pd.DataFrame(rows)


def concentration_curves(runs: Runs) -> pd.DataFrame:
    """Tidy :func:`cumulative_share` of every run, heads ranked by |Δπ|, the quantity the curve accumulates
    (input of :func:`pear_lens.plots.concentration`).

    Columns: ``run, model, heads, fraction_of_heads, share``.
    """
    frames = []
    for label, scores in load_runs(runs).items():
        curve = cumulative_share(scores, ranked_by="magnitude").numpy()
        n = len(curve)
        frames.append(pd.DataFrame({"run": label, "model": scores.model, "heads": np.arange(1, n + 1),
                                    "fraction_of_heads": np.arange(1, n + 1) / n, "share": curve}))
    return pd.concat(frames, ignore_index=True)


def compare(runs: Runs, k: int = 10, bins: int = 10) -> pd.DataFrame:
    """Pairwise agreement of runs (one row per unordered pair).

    Head-level columns (``top_k_overlap``, ``top_k_jaccard``, ``spearman_heads``)
    are filled only when both runs score the same model (NaN otherwise): head
    identities do not carry across models. Depth-bin columns compare any two
    runs: ``n_bins`` equal-width relative-depth bins (at most ``bins``, fewer when
    a model has too few layers to fill them), the overlap of the bins holding
    each run's top-``k`` heads, and Spearman of the per-bin maximum Δπ (NaN
    below 3 bins).

    Overlaps are NaN where a run's top ``k`` would be picked by the tie rule rather than
    by its scores (Δπ constant over the heads, or tied across the k-th place), and Spearman
    is NaN where a run's Δπ is constant; ``note`` then says why (empty otherwise).
    """
    loaded = load_runs(runs)
    if bins < 1:
        raise PearLensError(f"bins must be at least 1, got {bins}")
    rows = []
    for (la, a), (lb, b) in itertools.combinations(loaded.items(), 2):
        row = {"run_a": la, "run_b": lb, "model_a": a.model, "model_b": b.model,
               "method_a": a.method, "method_b": b.method, "same_model": same_model(a, b), "k": k}
        tied = "; ".join(f"{label}: {why}" for label, s in ((la, a), (lb, b)) if (why := s.why_top_k_undefined(_k(s, k))))
        if row["same_model"] and not tied:
            ta, tb = set(a.top_k(_k(a, k))), set(b.top_k(_k(b, k)))
            row.update(top_k_overlap=len(ta & tb), top_k_jaccard=jaccard(ta, tb),
                       spearman_heads=spearman(a.scores, b.scores))
        else:
            row.update(top_k_overlap=math.nan, top_k_jaccard=math.nan,
                       spearman_heads=spearman(a.scores, b.scores) if row["same_model"] else math.nan)
        n_bins = pair_bins(a.n_layers, b.n_layers, bins)
        if tied:
            row.update(n_bins=n_bins, top_depth_bins_overlap=math.nan, top_depth_bins_jaccard=math.nan)
        else:
            ba, bb = top_depth_bins(a, k, n_bins), top_depth_bins(b, k, n_bins)
            row.update(n_bins=n_bins, top_depth_bins_overlap=len(ba & bb), top_depth_bins_jaccard=jaccard(ba, bb))
        row.update(spearman_depth_bin_max=spearman(bin_maxima(a, n_bins), bin_maxima(b, n_bins)), note=tied)
        rows.append(row)
    columns = ["run_a", "run_b", "model_a", "model_b", "method_a", "method_b", "same_model", "k",
               "top_k_overlap", "top_k_jaccard", "spearman_heads", "n_bins", "top_depth_bins_overlap",
               "top_depth_bins_jaccard", "spearman_depth_bin_max", "note"]
    return pd.DataFrame(rows, columns=columns)
