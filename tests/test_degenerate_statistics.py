"""Degenerate statistics are named, not ranked (issue 37, item 3): a score map that is constant or non-finite
gives "undefined" and why, never a NaN interval, ranks 1..N or a top-k overlap drawn from ties; ties are
ranked by one stated rule (``pear_lens.uncertainty.TIE_RULE``). Synthetic scores only: no model is loaded."""
from __future__ import annotations

import doctest
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from pear_lens import uncertainty
from pear_lens.agreement import spearman
from pear_lens.atlas import HeadAtlas
from pear_lens.atlas.correlation import head_score_correlation
from pear_lens.compare import compare
from pear_lens.errors import PearLensError
from pear_lens.proxy_task import ProxyTask
from pear_lens.results import HeadScores
from pear_lens.uncertainty import stability, why_top_k_undefined, why_unranked

DELTA = torch.tensor([[0.5, -0.1, 0.3], [0.9, 0.0, -0.4]])


def scores(values: torch.Tensor, n_prompts: int = 6, seed: int = 0) -> HeadScores:
    """A HeadScores of ``values`` ``[n_layers, n_heads]`` with per-prompt values whose means are ``values``."""
    gen = torch.Generator().manual_seed(seed)
    noise = 0.01 * torch.randn(n_prompts, *values.shape, generator=gen)
    noise -= noise.mean(0)
    per_prompt = values + noise + 1.0  # π̃ = π + effect with π = 1: an absolute difference gives ``values``
    return HeadScores(scores=values, per_setting=values[None], clean_metric=[1.0], model="made-up", method="path",
                      metric="logit_minus_mean", difference="absolute", task=ProxyTask(settings=((4, 8),)).to_dict(),
                      per_prompt=per_prompt, clean_per_prompt=torch.ones(n_prompts),
                      prompt_setting=torch.zeros(n_prompts, dtype=torch.long))


def atlas(delta: torch.Tensor, detector: torch.Tensor) -> HeadAtlas:
    """Δπ ``delta`` beside one detector ``x`` whose score on every one of four prompts is ``detector``."""
    detectors = {"x": {"short": "X", "definition": "made up", "source": "this test", "prompts": "proxy",
                       "options": {}, "higher_is_role": True, "seconds": 0.0, "diagnostics": {}}}
    return HeadAtlas(delta_pi=scores(delta), per_prompt={"x": detector.expand(4, *detector.shape).clone()},
                     detectors=detectors, prompts={"proxy": {"n_prompts": 4}}, extra={"seconds": 0.0})


def test_the_rules_are_documented_and_their_examples_run():
    assert "lower layer" in uncertainty.TIE_RULE and "undefined" in uncertainty.TIE_RULE
    assert doctest.testmod(uncertainty).failed == 0


def test_constant_or_non_finite_values_cannot_rank_heads():
    assert why_unranked([0.2, 0.2, 0.2, 0.2], "Δπ") == "Δπ is the same (0.2) for all 4 heads"
    assert "NaN or infinite for 1 of 3 heads" in why_unranked([0.1, float("nan"), 0.3])
    assert "NaN or infinite" in why_unranked([0.1, float("inf"), 0.3])
    assert why_unranked([]) == "the score has no heads"
    assert why_unranked([0.1, 0.3, 0.2]) == ""
    # a tie inside the top k (or outside it) decides nothing; a tie across the k-th place does
    assert why_top_k_undefined([3.0, 3.0, 2.0, 1.0], 2) == ""
    assert why_top_k_undefined([3.0, 2.0, 1.0, 1.0], 2) == ""
    assert "ties across the 2nd place" in why_top_k_undefined([3.0, 2.0, 2.0, 1.0], 2)
    assert "ties across the 1st place" in why_top_k_undefined([-1.0, -1.0, 5.0], 1, descending=False)
    assert math.isnan(spearman([1.0, 2.0, float("inf")], [1.0, 2.0, 3.0]))


def test_ties_rank_by_the_lower_layer_then_the_lower_head():
    tied = scores(torch.tensor([[0.1, 0.5], [0.5, 0.2]]))
    assert tied.top_k(2) == [(0, 1), (1, 0)]
    assert tied.ranks().tolist() == [[4, 1], [2, 3]]
    assert tied.to_dataframe()["rank"].tolist() == [4, 1, 2, 3]  # the scores do rank heads: ties by the rule


def test_a_constant_score_map_has_no_ranks_and_no_top_k_marks():
    flat = scores(torch.full((2, 3), 0.25))
    assert flat.why_unranked() == "Δπ is the same (0.25) for all 6 heads"
    df = flat.to_dataframe()
    assert df["rank"].isna().all()  # never ranks 1..6 drawn from ties
    fig = flat.heatmap(top_k=3)
    marked = [t for t in fig.data if getattr(t, "mode", None) == "markers"]
    assert all(len(t.x or ()) == 0 for t in marked)  # no head outlined as a "top" head
    csv = df.to_csv(index=False)
    assert pd.read_csv(pd.io.common.StringIO(csv))["rank"].isna().all()


def test_an_empty_map_says_it_is_empty():
    empty = HeadScores(scores=torch.zeros(0, 2), per_setting=torch.zeros(1, 0, 2), clean_metric=[1.0],
                       model="made-up", method="path", metric="logit_minus_mean", difference="absolute", task={})
    for draw in (empty.heatmap, empty.caterpillar, lambda: empty.top_k(1)):
        with pytest.raises(PearLensError, match="is empty") as e:
            draw()
        assert "k must" not in str(e.value)


def test_an_atlas_detector_constant_over_the_heads_is_undefined_not_ranked():
    made = atlas(DELTA, torch.full((2, 3), 0.7))
    row = made.statistics(top_k=2, n_boot=1000).iloc[0]
    assert math.isnan(row["spearman"]) and math.isnan(row["ci_low"]) and math.isnan(row["ci_high"])
    assert row["interval"] == "undefined (the X score is the same for every head)"
    assert math.isnan(row["top_k_overlap"]) and row["overlap_heads"] == ""
    assert row["overlap"].startswith("top-2 overlap undefined (the X score is the same (0.7) for all 6 heads")
    assert "nan" not in row["interval"].lower() and "nan" not in row["overlap"].lower()
    df = made.to_dataframe()
    assert df["x_rank"].isna().all() and df["delta_pi_rank"].notna().all()
    roles = made.roles(top_k=2)
    assert (roles["roles"] == "none").all()  # a tie-broken top 2 gives no head a role
    made.scatter(top_k=2, n_boot=1000)  # the panel title reads "overlap undefined", not int(NaN)
    made.heatmaps(top_k=2)


def test_an_atlas_tie_across_the_kth_place_makes_only_the_overlap_undefined():
    detector = torch.tensor([[0.9, 0.5, 0.5], [0.1, 0.0, 0.2]])  # 2nd and 3rd place tie
    row = atlas(DELTA, detector).statistics(top_k=2, n_boot=1000).iloc[0]
    assert np.isfinite(row["spearman"]) and not row["interval"].startswith("undefined")
    assert "ties across the 2nd place" in row["overlap"] and math.isnan(row["top_k_overlap"])
    row = atlas(DELTA, detector).statistics(top_k=3, n_boot=1000).iloc[0]
    assert row["top_k_overlap"] == 2 and row["overlap"] == "2 of the top 3 Δπ heads in its top 3"


def test_a_constant_delta_pi_leaves_the_roles_table_empty():
    made = atlas(torch.full((2, 3), -0.2), torch.tensor([[0.9, 0.5, 0.4], [0.1, 0.0, 0.2]]))
    assert made.roles(top_k=2).empty
    assert made.to_dataframe()["delta_pi_rank"].isna().all()
    assert "Δπ is the same" in made.statistics(top_k=2, n_boot=1000).iloc[0]["interval"]


def test_the_atlas_command_prints_undefined_never_nan(monkeypatch, capsys):
    from pear_lens.commands import cli

    made = atlas(DELTA, torch.full((2, 3), 0.7))
    monkeypatch.setattr("pear_lens.commands.atlas.atlas", lambda config: made)
    config = SimpleNamespace(report_k=2, top_k=2, n_boot=1000, run_dir="RUN")
    cli._atlas(config)
    out = capsys.readouterr().out
    assert "undefined (the X score is the same for every head)" in out
    assert "top-2 overlap undefined" in out
    assert "nan" not in out.lower() and "of the top 2 Δπ heads" not in out


def test_a_rank_correlation_of_a_constant_map_is_undefined():
    delta = scores(DELTA)
    flat = scores(torch.full((2, 3), 0.3), seed=1)
    corr = head_score_correlation(delta, flat, n_boot=1000, label="RAG")
    assert math.isnan(corr.rho) and corr.text == "undefined (the RAG score is the same for every head)"


def test_stability_of_tie_broken_top_k_sets_is_undefined():
    flat = np.zeros((2, 3))
    got = stability([flat, flat.copy()], k=2)
    assert got.undefined.startswith("map 1: the score is the same (0) for all 6 heads")
    assert math.isnan(got.mean_overlap) and np.isnan(got.top_k_probability).all()
    assert got.stable_heads(1.0) == []
    ok = stability([DELTA.numpy(), DELTA.numpy()], k=2)
    assert ok.undefined == "" and ok.mean_overlap == 1.0


def test_compare_names_a_run_whose_top_k_is_tie_broken():
    a, b = scores(DELTA), scores(torch.full((2, 3), 0.1), seed=1)
    row = compare({"a": a, "b": b}, k=2).iloc[0]
    assert math.isnan(row["top_k_overlap"]) and math.isnan(row["top_k_jaccard"])
    assert math.isnan(row["spearman_heads"]) and math.isnan(row["top_depth_bins_overlap"])
    assert row["note"].startswith("b: Δπ is the same (0.1) for all 6 heads")
    row = compare({"a": a, "b": scores(DELTA, seed=2)}, k=2).iloc[0]
    assert row["top_k_overlap"] == 2 and row["note"] == ""


def test_training_refuses_heads_the_scores_cannot_rank():
    import warnings

    from pear_lens.recipe import HeadSelection, select_heads

    flat = scores(torch.full((2, 3), 0.25))
    with pytest.raises(PearLensError, match="cannot be ranked .*same .*for all 6 heads.*--heads"):
        select_heads(flat, HeadSelection(top_k=2))
    assert select_heads(flat, HeadSelection(heads=((1, 2),))) == [(1, 2)]  # named heads need no ranking
    tied = scores(torch.tensor([[0.3, 0.2, 0.2], [0.1, 0.0, -0.1]]))
    with pytest.warns(UserWarning, match="partly the tie rule's"):
        assert select_heads(tied, HeadSelection(top_k=2)) == [(0, 0), (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_heads(tied, HeadSelection(top_k=3)) == [(0, 0), (0, 1), (0, 2)]
