"""`pear-lens eval` and `eval-report` end to end on a tiny model: outputs, columns, refusals, bad input."""
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pear_lens.commands import cli
from pear_lens.evaluation.runner import ITEM_COLUMNS, SUMMARY_COLUMNS

DATA = Path(__file__).parent / "data"
FAST = ["--model", "tiny-llama", "--quiet", "--batch-size", "8"]


def run(*args):
    return cli.main([str(a) for a in args])


def test_eval_writes_tidy_items_summary_and_settings(tmp_path):
    out = tmp_path / "kv"
    assert run("eval", "--task", "kv", "--n", 6, "--n-context", 3, "--uniform", 0.0, "--out", out, *FAST) == 0
    assert sorted(p.name for p in out.iterdir()) == [".pear_lens.json", "eval.json", "items.csv", "items.jsonl",
                                                     "manifest.json", "summary.csv"]
    items, summary = pd.read_csv(out / "items.csv"), pd.read_csv(out / "summary.csv", dtype={"gold_position": str})
    assert list(items.columns) == ITEM_COLUMNS and list(summary.columns) == SUMMARY_COLUMNS
    assert len(items) == 12 and set(items["condition"]) == {"baseline", "uniform τ=0"}
    # the same items, in the same order, for every condition
    by = items.groupby("condition")["item_id"].apply(list)
    assert by["baseline"] == by["uniform τ=0"]
    overall = summary[summary["gold_position"] == "all"].set_index("condition")
    assert overall.loc["baseline", "n"] == 6 and pd.isna(overall.loc["baseline", "p_vs_baseline"])
    assert 0.0 <= overall.loc["uniform τ=0", "p_vs_baseline"] <= 1.0
    assert sorted(summary.loc[summary["gold_position"] != "all", "gold_position"].unique()) == ["0", "1", "2"]
    meta = json.loads((out / "eval.json").read_text())
    assert meta["settings"]["n_context"] == 3 and meta["model"]["name"] == "tiny-llama"
    assert meta["items"] == {} and len(meta["conditions"]) == 2


def test_eval_refuses_a_non_empty_folder_without_overwrite(tmp_path, capsys):
    out = tmp_path / "e"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    for extra in ((), ("--overwrite",)):  # not written by pear-lens: never replaced
        assert run("eval", "--task", "kv", "--n", 2, "--out", out, *extra, *FAST) == 2
        assert "was not written by pear-lens" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    out = tmp_path / "e2"
    assert run("eval", "--task", "kv", "--n", 2, "--n-context", 2, "--out", out, *FAST) == 0
    assert run("eval", "--task", "kv", "--n", 2, "--n-context", 2, "--out", out, *FAST) == 2
    assert "--overwrite" in capsys.readouterr().err
    (out / "keep.txt").write_text("x")
    assert run("eval", "--task", "kv", "--n", 2, "--n-context", 2, "--out", out, "--overwrite", *FAST) == 0
    assert (out / "summary.csv").exists() and not (out / "keep.txt").exists()


@pytest.mark.parametrize("task, name", [("mdqa", "mdqa_handmade.jsonl"), ("kv", "kv_handmade.jsonl")])
def test_eval_accepts_handmade_lost_in_the_middle_files(tmp_path, task, name):
    out = tmp_path / task
    assert run("eval", "--task", task, "--data", DATA / name, "--out", out, *FAST) == 0
    items = pd.read_csv(out / "items.csv")
    assert len(items) == len((DATA / name).read_text().splitlines())
    assert items["answers"].notna().all()


def _assert_nothing_written(out: Path):
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}") for p in out.parent.iterdir())  # no staged leftovers


def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": true}]}\n'
                   '{"question": "q?", "answers": [], "ctxs": [{"title": "t", "text": "x"}]}\n')
    out = tmp_path / "out"
    assert run("eval", "--task", "mdqa", "--data", bad, "--out", out, *FAST) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    _assert_nothing_written(out)
    # an item without a gold document (none marked, no gold_position) cannot be scored by position
    bad.write_text('{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": true}]}\n'
                   '{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}]}\n')
    assert run("eval", "--task", "mdqa", "--data", bad, "--out", out, *FAST) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2: no document is the gold one" in err and len(err.strip().splitlines()) == 1
    _assert_nothing_written(out)
    # a gold position beyond the documents
    assert run("eval", "--task", "mdqa", "--data", DATA / "mdqa_handmade.jsonl", "--positions", 5,
               "--out", out, *FAST) == 2
    assert "gold position 5 is beyond" in capsys.readouterr().err
    _assert_nothing_written(out)
    # a prompt longer than the model's context (tiny models have 256 positions)
    assert run("eval", "--task", "kv", "--n-context", 200, "--n", 2, "--out", out, *FAST) == 2
    err = capsys.readouterr().err
    assert "item kv-0-" in err and "context of 256" in err
    _assert_nothing_written(out)


def test_eval_with_an_artifact_and_the_report(tmp_path):
    from pear_lens.artifact import Artifact
    from pear_lens.models import load_model

    run_dir = tmp_path / "run"
    Artifact(heads=[(0, 0), (1, 2)], tau=torch.tensor([0.0, 0.0]), base_model=load_model("tiny-llama").describe()
             ).save(run_dir)
    e1, e2, rep = tmp_path / "e1", tmp_path / "e2", tmp_path / "report"
    assert run("eval", "--task", "mdqa", "--n", 4, "--n-context", 2, "--artifact", run_dir, "--out", e1, *FAST) == 0
    assert set(pd.read_csv(e1 / "items.csv")["condition"]) == {"baseline", "PEAR"}
    assert run("eval", "--task", "kv", "--n", 4, "--n-context", 2, "--artifact", run_dir, "--out", e2, *FAST) == 0
    assert run("eval-report", e1, e2, "--out", rep, "--no-png") == 0
    md = (rep / "summary.md").read_text()
    assert md.count("\n") == 2 + 4 and "| tiny-llama | mdqa | 2 documents, plain prompt | PEAR | 4 |" in md
    assert (rep / "summary.html").exists()
    assert sorted(p.name for p in (rep / "figures").iterdir()) == ["accuracy_tiny-llama_kv.html",
                                                                   "accuracy_tiny-llama_mdqa.html"]


def test_accuracy_by_position_draws_one_line_and_band_per_condition():
    from pear_lens.plots import accuracy_by_position

    rows = [{"model": "m", "task": "kv", "condition": c, "gold_position": str(p), "n": 10, "accuracy": a,
             "ci_low": a - 0.1, "ci_high": a + 0.1} for c, a in (("baseline", 0.5), ("PEAR", 0.6)) for p in range(3)]
    rows.append({"model": "m", "task": "kv", "condition": "baseline", "gold_position": "all", "n": 30,
                 "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6})
    fig = accuracy_by_position(pd.DataFrame(rows))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["baseline", "PEAR"]
    assert list(lines[1].y) == [0.6, 0.6, 0.6] and list(lines[0].x) == [0, 1, 2]
    assert sum(t.fill == "toself" for t in fig.data) == 2


def test_eval_with_likelihood_pruning_cad_and_the_no_empty_arm(tmp_path):
    from pear_lens.evaluation.runner import LIKELIHOOD_COLUMNS, LIKELIHOOD_SUMMARY_COLUMNS

    from pear_lens.artifact import Artifact
    from pear_lens.models import load_model

    art = tmp_path / "run"
    Artifact(heads=[(0, 0), (1, 2)], tau=torch.tensor([0.5, 1.5]), base_model=load_model("tiny-llama").describe()
             ).save(art)
    out = tmp_path / "kv"
    assert run("eval", "--task", "kv", "--n", 6, "--n-context", 3, "--artifact", art, "--prune", "--cad", 0.5,
               "--likelihood", "--no-empty", "--out", out, *FAST) == 0
    items = pd.read_csv(out / "items.csv")
    assert set(items["condition"]) == {"baseline", "PEAR", "PEAR heads pruned", "CAD α=0.5"}
    assert not (items["output"].fillna("").str.strip() == "").any()  # the no-empty arm: no empty answer
    lik = pd.read_csv(out / "likelihood.csv")
    summary = pd.read_csv(out / "likelihood_summary.csv")
    assert list(lik.columns) == LIKELIHOOD_COLUMNS and list(summary.columns) == LIKELIHOOD_SUMMARY_COLUMNS
    assert len(lik) == 4 * 6 and lik["logp_gold"].lt(0).all() and lik["n_alternatives"].eq(2).all()
    meta = json.loads((out / "eval.json").read_text())
    assert meta["no_empty"] is True and set(meta["likelihood"]["seconds_per_condition"]) == set(items["condition"])
    assert [c["cad_alpha"] for c in meta["conditions"] if c["kind"] == "cad"] == [0.5]


def test_eval_refuses_prune_without_an_artifact_and_cad_closed_book(tmp_path, capsys):
    assert run("eval", "--task", "kv", "--n", 2, "--prune", "--out", tmp_path / "a", *FAST) == 2
    assert "--prune" in capsys.readouterr().err
    assert run("eval", "--task", "closed-book", "--n", 2, "--cad", 0.5, "--out", tmp_path / "b", *FAST) == 2
    assert "closed-book has none" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
