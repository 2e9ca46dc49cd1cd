"""Cross-run comparison: hand-checked overlaps and rank correlations on synthetic scores,
then the whole path (run folders, `pear-lens compare`) on tiny models."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from pear_lens import constants
from pear_lens.agreement import pair_bins, spearman
from pear_lens.commands.cli import main
from pear_lens.compare import (
    bin_maxima,
    by_setting,
    compare,
    concentration_curves,
    cumulative_share,
    heads_by_depth,
    load_runs,
    run_summary,
    suppression_share,
    top_share,
)
from pear_lens.errors import PearLensError
from pear_lens.mediation import score_heads
from pear_lens.proxy_task import ProxyTask
from pear_lens.results import HeadScores

from .conftest import tiny


def fake(model: str, scores, method: str = "path", seed: int = 0, per_setting=None) -> HeadScores:
    scores = torch.tensor(scores, dtype=torch.float32)
    per = scores[None] if per_setting is None else torch.tensor(per_setting, dtype=torch.float32)
    return HeadScores(scores=scores, per_setting=per, clean_metric=[1.0] * per.shape[0], model=model,
                      method=method, metric="logit_minus_mean", difference="relative",
                      task={"settings": [[4, 8]] * per.shape[0], "seed": seed})


# 3 layers x 2 heads. Ranks of A: L0.H0 0.5, L2.H1 0.4, L1.H0 0.3, L0.H1 0.1, L2.H0 0.0, L1.H1 -0.2.
A = fake("m", [[0.5, 0.1], [0.3, -0.2], [0.0, 0.4]], method="path")
# B swaps the values of L0.H1 and L1.H0: top-3 {L0.H0, L2.H1, L0.H1}.
B = fake("m", [[0.5, 0.3], [0.1, -0.2], [0.0, 0.4]], method="activation")
# Two different models, 5 and 9 layers: with 4 depth bins their per-bin maxima are
# D: [0.1, 0.4, 0.2, 0.9] and E: [0.2, 0.5, 0.6, 0.7] (E's layer depths k/8 fall in bins 0,0,1,1,2,2,3,3,3).
D = fake("d", [[0.1, -0.1], [0.4, 0.0], [0.2, 0.05], [0.3, 0.0], [0.9, 0.1]])
E = fake("e", [[0.0], [0.2], [0.5], [0.1], [0.6], [0.1], [0.7], [0.0], [0.2]])


def test_spearman_matches_the_textbook_formula():
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); A and B differ by one swapped pair of ranks
    assert spearman(A.scores, B.scores) == pytest.approx(1 - 6 * 2 / (6 * 35))
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)  # ties get average ranks
    assert math.isnan(spearman([1, 2], [2, 1]))  # two points always give +-1: not reported
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # a constant input has no ranking
    with pytest.raises(PearLensError, match="equally long"):
        spearman([1, 2, 3], [1, 2])


def test_same_model_pairs_are_compared_head_by_head():
    row = compare([A, B], k=3).iloc[0]
    assert row["run_a"] == "m:path" and row["run_b"] == "m:activation"
    assert bool(row["same_model"])
    assert row["top_k_overlap"] == 2 and row["top_k_jaccard"] == pytest.approx(2 / 4)
    assert row["spearman_heads"] == pytest.approx(1 - 12 / 210)
    # 3 layers leave room for 2 depth bins; the top heads of both sit in bins {0, 1}
    assert row["n_bins"] == 2 and row["top_depth_bins_jaccard"] == 1.0
    assert math.isnan(row["spearman_depth_bin_max"])  # 2 bins are too few for a rank correlation


def test_different_models_are_compared_by_relative_depth_bins():
    assert pair_bins(5, 9, bins=10) == 4
    torch.testing.assert_close(bin_maxima(D, 4), torch.tensor([0.1, 0.4, 0.2, 0.9]))
    torch.testing.assert_close(bin_maxima(E, 4), torch.tensor([0.2, 0.5, 0.6, 0.7]))
    row = compare({"D": D, "E": E}, k=2).iloc[0]
    assert not row["same_model"]
    assert all(math.isnan(row[c]) for c in ("top_k_overlap", "top_k_jaccard", "spearman_heads"))
    # top-2 of D: L4 (bin 3) and L1 (bin 1); of E: L6 (bin 3) and L4 (bin 2)
    assert row["top_depth_bins_overlap"] == 1 and row["top_depth_bins_jaccard"] == pytest.approx(1 / 3)
    # bin ranks D [1, 3, 2, 4] vs E [1, 2, 3, 4]: sum d^2 = 2
    assert row["spearman_depth_bin_max"] == pytest.approx(1 - 6 * 2 / (4 * 15))


def test_every_pair_once_and_identical_runs_agree_perfectly():
    pairs = compare({"a": A, "a again": A, "b": B, "d": D}, k=3)
    assert len(pairs) == 6
    same = pairs[(pairs.run_a == "a") & (pairs.run_b == "a again")].iloc[0]
    assert same["top_k_jaccard"] == 1.0 and same["spearman_heads"] == pytest.approx(1.0)
    cross = pairs[pairs.run_b == "d"]
    assert cross["spearman_heads"].isna().all() and (cross["n_bins"] == 2).all()


def test_empty_depth_bins_are_nan_not_zero():
    one_layer_bins = bin_maxima(fake("x", [[0.3], [0.1]]), 4)  # depths 0 and 1 only
    assert one_layer_bins[0] == pytest.approx(0.3) and one_layer_bins[3] == pytest.approx(0.1)
    assert torch.isnan(one_layer_bins[1:3]).all()


def test_labels_are_unique_and_explicit_labels_win():
    seeds = [fake("m", A.scores.tolist(), seed=s) for s in (0, 1)]
    assert list(load_runs(seeds)) == ["m:path:seed0", "m:path:seed1"]
    assert list(load_runs([A, A])) == ["m:path:seed0", "m:path:seed0#2"]
    assert list(load_runs({"first": A, "second": B})) == ["first", "second"]
    with pytest.raises(PearLensError, match="list"):
        load_runs("some/run_dir")
    with pytest.raises(PearLensError, match="at least one run"):
        compare([])


def test_summary_lists_top_heads_with_relative_depths():
    s = run_summary({"A": A, "D": D}, k=2).set_index("run")
    assert s.loc["A", "top_heads"] == "L0.H0 L2.H1"
    assert s.loc["A", "top_relative_depths"] == "0.00 1.00"
    assert s.loc["D", "top_heads"] == "L4.H0 L1.H0" and s.loc["D", "top_relative_depths"] == "1.00 0.25"
    assert (s.loc["D", "n_layers"], s.loc["D", "n_heads"], s.loc["D", "k"]) == (5, 2, 2)


def test_concentration_is_the_top_heads_share_of_all_absolute_effects():
    # A by Δπ: 0.5, 0.4, 0.3, 0.1, 0.0, -0.2 -> |Δπ| total 1.5; the most negative head counts in the total
    curve = cumulative_share(A)
    assert curve.tolist() == pytest.approx([0.5 / 1.5, 0.9 / 1.5, 1.2 / 1.5, 1.3 / 1.5, 1.3 / 1.5, 1.0])
    assert top_share(A, 0.01) == (1, pytest.approx(1 / 3))  # at least one head
    assert top_share(A, 0.5) == (3, pytest.approx(0.8))
    even = fake("even", [[1.0, 1.0], [1.0, 1.0]])
    assert cumulative_share(even).tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the diagonal
    s = run_summary({"A": A}).set_index("run")
    assert (s.loc["A", "top1%_heads"], s.loc["A", "top5%_share"]) == (1, pytest.approx(1 / 3))
    df = concentration_curves({"A": A, "E": E})
    assert df.groupby("run")["fraction_of_heads"].max().tolist() == [1.0, 1.0]
    with pytest.raises(PearLensError, match="non-zero"):
        cumulative_share(fake("zero", [[0.0, 0.0]]))
    with pytest.raises(PearLensError, match="fraction"):
        top_share(A, 0.0)
    # the suppression mass alone: A's positive Δπ 0.5 + 0.4 + 0.3 + 0.1 = 1.3, the top head holds 0.5 of it
    assert suppression_share(A, 0.01) == pytest.approx(0.5 / 1.3)
    assert s.loc["A", "top5%_suppression_share"] == pytest.approx(0.5 / 1.3)
    assert math.isnan(suppression_share(fake("none", [[-0.1, 0.0]]), 0.5))


def test_heads_by_depth_is_tidy_and_marks_top_k():
    df = heads_by_depth({"A": A, "E": E}, k=3)
    assert len(df) == 6 + 9
    assert df.groupby("run")["top"].sum().to_dict() == {"A": 3, "E": 3}
    e = df[df.run == "E"].sort_values("layer")
    assert e["relative_depth"].tolist() == pytest.approx([k / 8 for k in range(9)])


def test_by_setting_splits_a_run_without_rescoring():
    per = [[[0.1, 0.2], [0.3, 0.4]], [[0.4, 0.3], [0.2, 0.1]]]
    run = fake("m", torch.tensor(per).mean(0).tolist(), per_setting=per)
    run.task["settings"] = [[20, 50], [100, 10]]
    parts = by_setting(run)
    assert list(parts) == ["m:path:20x50", "m:path:100x10"]
    torch.testing.assert_close(parts["m:path:100x10"].scores, torch.tensor(per[1]))
    assert parts["m:path:20x50"].task["settings"] == [[20, 50]]
    assert compare(parts, k=1).iloc[0]["spearman_heads"] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- real (tiny) runs


def discover_tiny(tmp_path, name: str, model: str, seed: int) -> str:
    out = tmp_path / name
    assert main(["discover", "--model", model, "--out", str(out), "--settings", "4x6,3x5", "--seed", str(seed),
                 "--no-png", "--quiet", "--allow-weak-copy-task"]) == 0
    return str(out)


def test_compare_command_writes_tables_and_figure(tmp_path):
    runs = [discover_tiny(tmp_path, "llama_s0", "tiny-llama", 0), discover_tiny(tmp_path, "llama_s1", "tiny-llama", 1),
            discover_tiny(tmp_path, "gpt2_s0", "tiny-gpt2", 0)]
    out = tmp_path / "cmp"
    assert main(["compare", *runs, "--out", str(out), "--k", "3"]) == 0
    pairs = pd.read_csv(out / constants.COMPARE_CSV).fillna({"note": ""})  # an empty note reads back as NaN
    expected = compare(runs, k=3)
    pd.testing.assert_frame_equal(pairs, expected, check_dtype=False)
    assert pairs.set_index(["run_a", "run_b"]).loc[("llama_s0", "gpt2_s0"), "same_model"] == False  # noqa: E712
    summary = pd.read_csv(out / constants.COMPARE_SUMMARY_CSV)
    assert summary["run"].tolist() == ["llama_s0", "llama_s1", "gpt2_s0"]
    assert summary["seed"].tolist() == [0, 1, 0]
    for figure in (constants.RELATIVE_DEPTH_HTML, constants.CONCENTRATION_HTML):
        for suffix in (".html", ".png", ".pdf", ".svg"):
            assert (out / figure).with_suffix(suffix).stat().st_size > 1000
    # an existing output folder is refused with the fix named
    assert main(["compare", *runs, "--out", str(out)]) == 2
    # a run given twice (under another spelling) would count twice: refused before anything is written
    again = str(Path(runs[0]).parent / "." / Path(runs[0]).name)
    assert main(["compare", *runs, again, "--out", str(tmp_path / "twice")]) == 2
    assert not (tmp_path / "twice").exists()


def test_compare_reads_real_scores_of_two_methods():
    m, task = tiny("llama"), ProxyTask(settings=((6, 8),), seed=2)
    exact = score_heads(m, task, method="activation", difference="absolute", progress=False)
    approx = score_heads(m, task, method="attribution", difference="absolute", progress=False)
    row = compare([exact, approx], k=4).iloc[0]
    assert row["same_model"] and row["spearman_heads"] == pytest.approx(spearman(exact.scores, approx.scores))
    assert 0 <= row["top_k_overlap"] <= 4


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    with pytest.raises(PearLensError, match="pear-lens discover"):
        compare([tmp_path, tmp_path])
