"""studies/evaluate_all.py end to end on a tiny model: the protocol's record, resuming, reports."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from pear_lens.artifact import load_artifact
from studies.exploratory.design import SELECTION_RULE

from .conftest import load_script


def _script():
    return load_script("evaluate_all")


def _args(tmp_path, *extra):
    return ["--models", "tiny-llama", "--n", "4", "--dev-n", "3", "--dev-steps", "1", "--steps", "2",
            "--control-seeds", "0", "1", "--batch-size", "4", "--allow-weak-copy-task", "--no-png", "--quiet",
            "--runs", str(tmp_path / "runs"), "--report", str(tmp_path / "report"), "--figures",
            str(tmp_path / "figures"), "--publish", str(tmp_path / "artifacts"), *extra]


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory):
    """One full tiny protocol run (dev sweep, PEAR, both control kinds, a longer budget), shared by the tests."""
    tmp = tmp_path_factory.mktemp("evaluate_all")
    args = _args(tmp, "--tasks", "kv", "closed-book", "--budget-steps", "3", "--budget-models", "tiny-llama",
                 "--budget-tasks", "kv")
    assert _script().main(args) == 0
    return tmp, args


def test_the_record_states_the_protocol(protocol_run):
    tmp, _ = protocol_run
    record = json.loads((tmp / "report" / "run.json").read_text())["models"]["tiny-llama"]
    protocol = record["protocol"]
    pear, controls, sel = protocol["pear"], protocol["controls"], protocol["k_selection"]
    assert pear["steps"] == 2 and pear["train_seed"] == 0
    assert sorted((c["kind"], c["seed"]) for c in controls) == [("layer_matched", 0), ("layer_matched", 1),
                                                              ("uniform", 0), ("uniform", 1)]
    assert all((c["steps"], c["train_seed"]) == (pear["steps"], pear["train_seed"]) for c in controls)
    assert all(len(c["heads"]) == record["k"] for c in controls)
    assert sel["split"] == "dev" and sel["rule"] == SELECTION_RULE and sel["dev_seed"] != sel["test_seed"]
    assert sel["grid"] == [1, 2] and sel["chosen"] == record["k"] in sel["grid"]  # 12 heads: 1 % ... 20 % → 1, 2
    dev = pd.DataFrame(sel["dev_accuracy"])
    assert set(dev["selection"]) == {"baseline", "top", "layer_matched"} and set(dev["task"]) == {"kv", "mdqa"}
    copy = record["copy_task"]
    assert isinstance(copy["prepend_bos"], bool) and 0 <= copy["clean_copy_accuracy"] <= 1
    assert set(copy["measured"]) == {"no_bos", "bos"}
    assert protocol["budget"]["steps"] == 3 and protocol["budget"]["tasks"] == ["kv"]
    assert all(c["steps"] == 3 and c["train_seed"] == 0 for c in protocol["budget"]["controls"])
    assert record["tasks"] == ["kv", "closed-book"]
    assert {"copy_task", "train_pear", "eval/kv", "eval/closed-book"} <= set(record["seconds"])
    assert any(s.startswith("dev_train/") for s in record["seconds"])
    assert any(s.startswith("train_budget/") for s in record["seconds"])
    # the artifact is PEAR at the chosen K; the dev figure is written
    assert len(load_artifact(tmp / "artifacts" / "tiny-llama").heads) == record["k"]
    assert (tmp / "figures" / "dev_k_tiny-llama.html").exists()
    # every condition on identical items; the longer budget only on the budget task
    kv = pd.read_csv(tmp / "runs" / "tiny-llama" / "kv" / "items.csv")
    assert items_per_condition_identical(kv)
    assert {"PEAR", "PEAR (3 steps)", "uniform random-K seed 0", "layer-matched random-K seed 1 (3 steps)"} <= set(kv["condition"])
    closed = pd.read_csv(tmp / "runs" / "tiny-llama" / "closed-book" / "items.csv")
    assert not any("(3 steps)" in c for c in set(closed["condition"]))
    assert "| tiny-llama | kv |" in (tmp / "report" / "summary.md").read_text()


def items_per_condition_identical(items: pd.DataFrame) -> bool:
    return items.groupby("condition")["item_id"].apply(list).map(tuple).nunique() == 1


def test_a_second_run_trains_and_generates_nothing(protocol_run, monkeypatch, capsys):
    tmp, args = protocol_run
    record = json.loads((tmp / "runs" / "tiny-llama" / "evaluate_all.json").read_text())
    import pear_lens.evaluation.runner
    import pear_lens.reweight

    def fail(*a, **k):
        raise AssertionError("a cached stage ran again")

    monkeypatch.setattr(pear_lens.reweight, "train_coefficients", fail)
    monkeypatch.setattr(pear_lens.evaluation.runner, "generate_outputs", fail)
    assert _script().main(args) == 0
    again = json.loads((tmp / "runs" / "tiny-llama" / "evaluate_all.json").read_text())
    assert again["seconds"] == record["seconds"] and again["protocol"] == record["protocol"]
    assert again["devices"] == record["devices"] and len(record["devices"]) == 1  # the same device: listed once
    assert record["devices"][0].startswith("cpu (")
    # --report-only redraws the report and the dev figures from the runs alone
    (tmp / "figures" / "dev_k_tiny-llama.html").unlink()
    assert _script().main([*args, "--report-only"]) == 0
    redrawn = (tmp / "figures" / "dev_k_tiny-llama.html").read_text()
    assert "1 draw pooled" in redrawn and "3 draws" not in redrawn  # the seed list read back from the CSV


def test_tasks_are_added_and_a_new_recipe_retrains(tmp_path, monkeypatch):
    script = _script()
    args = _args(tmp_path, "--k", "2", "--control-seeds", "0", "--control-kinds", "uniform")
    assert script.main([*args, "--tasks", "kv"]) == 0
    first = json.loads((tmp_path / "runs" / "tiny-llama" / "evaluate_all.json").read_text())
    assert first["protocol"]["k_selection"]["split"] == "given"
    import pear_lens.reweight

    def no_training(*a, **k):
        raise AssertionError("trained again although the cached τ matches")

    monkeypatch.setattr(pear_lens.reweight, "train_coefficients", no_training)
    assert script.main([*args, "--tasks", "closed-book"]) == 0
    record = json.loads((tmp_path / "report" / "run.json").read_text())["models"]["tiny-llama"]
    assert record["tasks"] == ["kv", "closed-book"]  # the earlier task is kept, with its measured minutes
    assert record["seconds"]["eval/kv"] == first["seconds"]["eval/kv"] and "eval/closed-book" in record["seconds"]
    assert record["total_seconds"] > first["total_seconds"]
    # another recipe (more steps) trains PEAR and the control again, and the earlier task no longer matches
    monkeypatch.undo()
    args[args.index("--steps") + 1] = "3"
    assert script.main([*args, "--tasks", "closed-book"]) == 0
    record = json.loads((tmp_path / "runs" / "tiny-llama" / "evaluate_all.json").read_text())
    assert record["tasks"] == ["closed-book"] and record["protocol"]["controls"][0]["steps"] == 3
    (tmp_path / "report" / "summary.md").unlink()
    assert script.main([*args, "--report-only"]) == 0 and (tmp_path / "report" / "summary.md").exists()


def test_dev_and_test_seeds_must_differ(tmp_path):
    with pytest.raises(SystemExit):
        _script().main(_args(tmp_path, "--dev-seed", "0", "--test-seed", "0"))


def test_the_readme_reads_the_protocol_record(protocol_run):
    from studies.reading import protocol_sentence

    tmp, _ = protocol_run
    models = json.loads((tmp / "report" / "run.json").read_text())["models"]
    record = models["tiny-llama"]
    text = protocol_sentence("tiny-llama", record)
    assert f"K = {record['k']}, chosen on dev items" in text and "2 uniform" in text and "2 layer-matched" in text
    assert "all trained like PEAR (2 steps" in text and "Budget sensitivity" in text
    # the run shrank the protocol: the README says by how much, from the record
    assert "**Differs from the default protocol**" in text and "`--steps 2` (default 60)" in text
    assert "`--control-seeds 0 1` (default 0 1 2)" in text and "`--n 4` (default 300)" in text
    for stage in ("copy-task check", "dev training", "dev evaluation", "PEAR training", "control training",
                  "longer-budget training", "kv evaluation", "closed-book evaluation"):
        assert stage in text
    from studies.reading import exploratory_table

    table = exploratory_table(tmp / "report" / "summary.csv", models).set_index("task")
    assert set(table.index) == {"kv", "closed-book"}  # the reference budget only: one row per task
    assert table.loc["kv", "n_controls"] == 4 and 1 / 5 <= table.loc["kv", "rank_p"] <= 1
    assert table.loc["closed-book", "verdict"] in ("knowledge kept", "knowledge lost")


def test_dev_tasks_choose_k_on_kv_alone_and_the_plan_says_so(tmp_path):
    args = _args(tmp_path, "--tasks", "closed-book", "--dev-tasks", "kv", "--control-seeds", "0",
                 "--control-kinds", "uniform")
    assert _script().main(args) == 0
    plan = json.loads((tmp_path / "runs" / "tiny-llama" / "dev" / "plan.json").read_text())
    assert plan["tasks"] == ["kv"] and plan["rule"].endswith("over KV; ties go to the smaller K")
    dev = pd.read_csv(tmp_path / "runs" / "tiny-llama" / "dev" / "dev_table.csv")
    assert set(dev["task"]) == {"kv"}
    sel = json.loads((tmp_path / "report" / "run.json").read_text())["models"]["tiny-llama"]["protocol"]["k_selection"]
    assert sel["rule"] == plan["rule"] and sel["chosen"] in plan["grid"]
    record = json.loads((tmp_path / "report" / "run.json").read_text())["models"]["tiny-llama"]
    changed = {d["option"]: (d["value"], d["default"]) for d in record["protocol"]["differs_from_default"]}
    assert changed["--dev-tasks"] == (["kv"], ["kv", "mdqa"]) and changed["--control-kinds"] == (["uniform"],
                                                                                             ["uniform", "layer_matched"])
    assert "--k-percents" not in changed and "--batch-size" not in changed  # default, and not a protocol option
    from studies.reading import protocol_sentence

    text = protocol_sentence("tiny-llama", record)
    assert "`--dev-tasks kv` (default kv mdqa)" in text


def test_the_options_are_the_protocol_config_and_the_models_are_the_readmes(capsys):
    import dataclasses
    import re
    from pathlib import Path

    from studies.exploratory.config import PROTOCOL_MODELS, ProtocolConfig

    with pytest.raises(SystemExit):
        _script().main(["--help"])
    flags = set(re.findall(r"^  (--[\w-]+)", capsys.readouterr().out, re.M))  # the option lines, one per option
    assert flags == {"--" + f.name.replace("_", "-") for f in dataclasses.fields(ProtocolConfig)}
    # one model list: the protocol's default, the README's (and what the committed record holds)
    assert ProtocolConfig().models == PROTOCOL_MODELS and load_script("update_readme").PROTOCOL_MODELS is PROTOCOL_MODELS
    run_json = Path(__file__).resolve().parents[2] / "figures" / "results" / "run.json"
    assert list(json.loads(run_json.read_text())["models"]) == list(PROTOCOL_MODELS)


def test_the_estimate_counts_the_protocols_work_and_prints_minutes_per_stage(tmp_path, capsys):
    """studies.exploratory.estimate states the protocol's work; studies.estimate prices and prints it."""
    from pear_lens.evaluation.tasks.facts import load_facts
    from studies.estimate import Estimate, grand_total
    from studies.exploratory.config import ProtocolConfig
    from studies.exploratory.estimate import stages

    config = ProtocolConfig(models=("m",), tasks=("kv", "counterfactual"), n=10, dev_n=5, dev_steps=3, steps=4,
                            control_seeds=(0, 1))
    work = {s.name.split(" (")[0]: s for s in stages(config, "m", total_heads=270)}  # K in (3, 5, 14, 27, 54)
    runs = 5 * (1 + len(config.dev_seeds))  # top-K and each layer-matched draw at every K
    assert work["dev training"].steps == runs * 3 and work["dev evaluation"].items == {"kv": (1 + runs) * 5,
                                                                                       "mdqa": (1 + runs) * 5}
    assert work["PEAR training"].steps == 4 and work["control training"].steps == 4 * 4  # 2 kinds × 2 seeds
    assert work["kv evaluation"].items == {"kv": 6 * 10}  # baseline, PEAR and 4 controls
    assert work["counterfactual evaluation"].items == {"counterfactual": 6 * 10 + len(load_facts())}
    est = Estimate("m", 2.0, "timed now on cpu: 2 steps", {"counterfactual": 1.0, "kv": 0.5, "mdqa": 0.25},
                   list(work.values()), left_out=", and model loading")
    seconds = sum(s.steps for s in work.values()) * 2.0 + sum(
        n * {"counterfactual": 1.0, "kv": 0.5, "mdqa": 0.25}[t] for s in work.values() for t, n in s.items.items())
    assert est.total_minutes == pytest.approx(seconds / 60)
    lines = est.lines()
    assert lines[0] == "m: 2.0 s per training step (timed now on cpu: 2 steps); s/item counterfactual 1.00, kv 0.50, mdqa 0.25"
    assert lines[1] == f"  {stages(config, 'm', 270)[0].name}: {runs * 3 * 2.0 / 60:.0f} min"
    assert lines[-1] == f"  total: {seconds / 60:.0f} min ({seconds / 3600:.1f} h), and model loading"
    assert grand_total([est, est]) == f"estimated for m, m: {2 * seconds / 60:.0f} min ({2 * seconds / 3600:.1f} h)"

    # the command line: timed now on the tiny model, nothing run
    assert _script().main(_args(tmp_path, "--tasks", "kv", "--estimate", "--estimate-items", "2")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tiny-llama: ") and "(timed now on cpu: 2 steps); s/item kv " in out[0]
    assert out[-2].startswith("  total: ") and out[-1].startswith("estimated for tiny-llama: ")
    assert not (tmp_path / "runs").exists()
