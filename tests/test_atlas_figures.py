"""The atlas figures in the print style (issue 35): no pile-up on y = 0, outliers named, one legend entry a model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pear_lens.atlas.figures import atlas_across_models, atlas_scatter


def _table(model: str = "m", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"model": model, "layer": l, "head": h, "relative_depth": l / 9} for l in range(10) for h in range(6)]
    df = pd.DataFrame(rows)
    df["delta_pi"] = rng.normal(0, 0.0005, len(df))
    df.loc[5, "delta_pi"], df.loc[17, "delta_pi"], df.loc[40, "delta_pi"] = 0.11, 0.04, -0.09  # the outliers
    df["a"], df["b"] = rng.random(len(df)), rng.random(len(df))
    return df


def _stats() -> pd.DataFrame:
    return pd.DataFrame([{"detector": d, "interval": "0.10 [0.01, 0.20]", "top_k_overlap": 1, "level": 0.95,
                          "n_boot": 1000, "resampled": "heads"} for d in ("a", "b")])


def test_scatter_spreads_the_small_effects_and_names_the_outliers():
    df = _table()
    fig = atlas_scatter(df, {"a": "A", "b": "B"}, _stats(), top_k=3)
    points = [t for t in fig.data if t.mode == "markers" and t.name == "other heads"][0]
    y = np.asarray(points.y, dtype=float)
    span = np.nanmax(np.abs([v for t in fig.data if t.mode == "markers" for v in t.y]))
    # on a linear axis 57 of 60 heads sat within 1 % of the range around 0; now most are visibly off it
    assert (np.abs(y) > 0.05 * span).mean() > 0.5
    assert "symmetric-log" in fig.layout.yaxis.title.text and "0" in fig.layout.yaxis.ticktext
    labels = [t for t in fig.data if t.mode == "text"][0]
    assert {s.strip() for s in labels.text} >= {"L0.H5", "L2.H5", "L6.H4"}  # the largest and the most negative
    assert fig.layout.annotations[0].text.startswith("A: ρ = ") and fig.layout.annotations[0].font.size >= 11


def test_across_models_has_one_legend_entry_per_model_and_a_message():
    df = pd.concat([_table("m1", 0), _table("m2", 1).assign(relative_depth=lambda d: d["relative_depth"] * 0.5)])
    fig = atlas_across_models(df, {"a": "A", "b": "B"}, top_k=3)
    legend = [t.name for t in fig.data if t.showlegend]
    assert len(legend) == 2 and legend[0].startswith("m1 (top-3 median depth")
    assert fig.layout.title.text.startswith("Each family's top-3 Δπ heads sit at relative depth")
    assert "higher in" in fig.layout.annotations[0].text
