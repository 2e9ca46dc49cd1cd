"""scripts/evaluate_all.py end to end on a tiny model: K from the ablation, artifact published, report."""
from __future__ import annotations

import json

import pandas as pd

from pear_lens.artifact import load_artifact

from .conftest import load_script


def _script():
    return load_script("evaluate_all")


def test_evaluate_all_on_a_tiny_model(tmp_path):
    runs, report, published = tmp_path / "runs", tmp_path / "report", tmp_path / "artifacts"
    args = ["--models", "tiny-llama", "--tasks", "kv", "--n", "4", "--control-seeds", "0", "1",
            "--control-steps", "1", "--ablation-steps", "6", "--batch-size", "4", "--runs", str(runs),
            "--report", str(report), "--publish", str(published), "--quiet"]
    assert _script().main(args) == 0
    record = json.loads((report / "run.json").read_text())["models"]["tiny-llama"]
    ablation = pd.read_csv(published / "tiny-llama" / "ablation.csv")
    assert record["k"] in set(ablation["k"]) and "ablation" in record["k_chosen"]
    artifact = load_artifact(published / "tiny-llama")
    assert len(artifact.heads) == record["k"] and record["tasks"] == ["kv"]
    items = pd.read_csv(runs / "tiny-llama" / "kv" / "items.csv")
    assert set(items["condition"]) == {"baseline", "PEAR", "random-K seed 0 (1 steps)", "random-K seed 1 (1 steps)"}
    assert items.groupby("condition")["item_id"].apply(list).map(tuple).nunique() == 1  # identical items
    assert "| tiny-llama | kv |" in (report / "summary.md").read_text()
    (report / "summary.md").unlink()
    assert _script().main([*args, "--report-only"]) == 0 and (report / "summary.md").exists()


def test_evaluate_all_adds_tasks_and_reuses_controls(tmp_path, monkeypatch):
    runs, report = tmp_path / "runs", tmp_path / "report"
    args = ["--models", "tiny-llama", "--n", "4", "--control-seeds", "0", "--control-steps", "1", "--k", "2",
            "--batch-size", "4", "--runs", str(runs), "--report", str(report), "--publish", str(tmp_path / "artifacts"), "--quiet"]
    script = _script()
    assert script.main([*args, "--tasks", "kv"]) == 0
    first = json.loads((runs / "tiny-llama" / "evaluate_all.json").read_text())
    assert (runs / "tiny-llama" / "controls" / "seed0.json").exists()

    import pear_lens.reweight

    def no_training(*a, **k):
        raise AssertionError("the control was trained again although its cached τ matches")

    monkeypatch.setattr(pear_lens.reweight, "train_coefficients", no_training)
    assert script.main([*args, "--tasks", "closed-book"]) == 0
    record = json.loads((report / "run.json").read_text())["models"]["tiny-llama"]
    assert record["tasks"] == ["kv", "closed-book"]  # the earlier task is kept, not dropped
    assert record["seconds"]["eval_kv"] == first["seconds"]["eval_kv"] and "eval_closed-book" in record["seconds"]
    assert record["total_seconds"] > first["total_seconds"]
    assert "| tiny-llama | kv |" in (report / "summary.md").read_text()
    # another recipe (more control steps) starts a new record
    monkeypatch.undo()
    args[args.index("--control-steps") + 1] = "2"
    assert script.main([*args, "--tasks", "closed-book"]) == 0
    assert json.loads((runs / "tiny-llama" / "evaluate_all.json").read_text())["tasks"] == ["closed-book"]
