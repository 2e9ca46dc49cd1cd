"""The figures study (``studies/make_figures.py``) on tiny models: scans cached, plots drawn by name."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from pear_lens import plots
from pear_lens.compare import run_summary

from tests.test_compare import A

from .conftest import load_script


def load_make_figures():
    return load_script("make_figures")


def test_make_figures_scores_caches_and_plots_tiny_models(tmp_path, capsys):
    make_figures = load_make_figures()
    cache, out = tmp_path / "cache", tmp_path / "figures"
    argv = ["--fast", "--models", "tiny-llama", "tiny-gpt2", "--agreement-model", "tiny-llama",
            "--cache", str(cache), "--out", str(out), "--no-png", "--artifacts", str(tmp_path / "no-artifacts"),
            "--allow-weak-copy-task"]
    assert make_figures.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "heatmap_tiny-llama.html", "heatmap_tiny-gpt2.html", "relative_depth.html", "score_distributions.html",
        "method_agreement_tiny-llama_path_vs_activation.html", "method_agreement_tiny-llama_path_vs_attribution.html",
        "method_agreement_tiny-llama_activation_vs_attribution.html", "compare.csv", "compare_summary.csv",
        "concentration.html"])
    compared = pd.read_csv(out / "compare.csv")
    assert len(compared) == 6  # 4 runs: tiny-gpt2 path; tiny-llama path (shared with the agreement task), activation, attribution
    stamps = {p: p.stat().st_mtime_ns for p in cache.rglob("discovery.json")}
    capsys.readouterr()
    assert make_figures.main(argv) == 0  # the second run reuses every cached scan
    assert stamps == {p: p.stat().st_mtime_ns for p in cache.rglob("discovery.json")}
    assert "scoring" not in capsys.readouterr().out


def test_make_figures_calls_other_plots_by_name_only_when_present(tmp_path, monkeypatch, capsys):
    make_figures = load_make_figures()
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"k": [5, 10], "selection": ["top", "top"], "seed": 0, "steps": 60, "copy_accuracy": [0.5, 0.6],
                  "copy_loss": [1.0, 0.9], "n_eval": 100}).to_csv(run / "ablation.csv", index=False)
    # a `pear-lens compare` summary.csv is not an evaluation summary, despite the name
    run_summary({"A": A}).to_csv(run / "summary.csv", index=False)
    write = make_figures.Writer(tmp_path / "out", ["html"])
    monkeypatch.delattr(plots, "k_sweep_curve", raising=False)
    make_figures.other_branch_figures([tmp_path], write)
    assert write.written == [] and "plots.k_sweep_curve is not in this installation" in capsys.readouterr().out
    seen = []
    monkeypatch.setattr(plots, "k_sweep_curve", lambda df: seen.append(df) or go.Figure(), raising=False)
    monkeypatch.setattr(plots, "accuracy_by_position", lambda df: pytest.fail("not an eval summary"), raising=False)
    make_figures.other_branch_figures([tmp_path], write)
    assert len(seen) == 1 and seen[0]["copy_accuracy"].tolist() == [0.5, 0.6]
    assert [p.name for p in write.written] == ["ablation_curve_run.html"]
