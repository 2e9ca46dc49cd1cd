"""Every command that runs a model takes --device and --dtype, records where each stage ran, and loads a run's
model as the run loaded it (issue 35 items 3-4, issue 37 item 2), on tiny models on the CPU.

The same paths on a CUDA GPU are in tests/test_gpu.py (skipped without one).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import pytest

from pear_lens import constants
from pear_lens.commands.cli import build_parser, main
from pear_lens.config import add_arguments, option
from pear_lens.recipe import Recipe
from pear_lens.runs import read_stages

MODEL_COMMANDS = ("discover", "atlas", "train", "ablate", "eval", "apply", "demo")
DISCOVER = ["--model", "tiny-llama", "--settings", "4x8", "--quiet", "--no-png", "--allow-weak-copy-task"]
TRAIN = ["--top-k", "2", "--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_runs_a_model_lists_device_and_dtype(command):
    text = _subparsers()[command].format_help()
    assert "--device" in text and "--dtype" in text


def test_version(capsys):
    from pear_lens import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"pear-lens {__version__}"


def test_discover_in_bfloat16_then_train_is_not_refused(tmp_path, capsys):
    """Issue 37: the run's fingerprint was of the bf16 weights; train loads the run's dtype by default, and in
    float32 compares the fingerprint of the weights loaded as the run loaded them."""
    run = tmp_path / "run"
    assert main(["discover", "--out", str(run), "--dtype", "bfloat16", *DISCOVER]) == 0
    info = json.loads((run / constants.DISCOVERY_JSON).read_text())
    assert info["model"]["dtype"] == "bfloat16" and info["config"]["dtype"] == "bfloat16"
    assert main(["train", str(run), *TRAIN]) == 0, capsys.readouterr().err
    pear = json.loads((run / constants.PEAR_JSON).read_text())
    assert pear["base_model"]["dtype"] == "bfloat16"
    assert pear["base_model"]["fingerprint"] == info["scores"]["fingerprint"]
    assert main(["train", str(run), "--dtype", "float32", "--overwrite", *TRAIN]) == 0, capsys.readouterr().err
    stages = read_stages(run)
    assert stages["discover"]["dtype"] == "bfloat16" and stages["train"]["dtype"] == "float32"
    assert {s["device"] for s in stages.values()} == {"cpu"}
    # the artifact, trained in float32, folds into float32 weights by default
    assert main(["apply", str(run), "--out", str(tmp_path / "hf")]) == 0, capsys.readouterr().err
    note = json.loads((tmp_path / "hf" / constants.PEAR_NOTE_JSON).read_text())
    assert note["ran_on"] == {"device": "cpu", "dtype": "float32"}


def test_train_and_eval_on_cpu_in_bfloat16_record_it(tmp_path, capsys):
    run, out = tmp_path / "run", tmp_path / "eval"
    assert main(["discover", "--out", str(run), *DISCOVER]) == 0
    assert main(["train", str(run), "--device", "cpu", "--dtype", "bfloat16", *TRAIN]) == 0, capsys.readouterr().err
    assert read_stages(run)["discover"]["dtype"] == "float32"
    assert read_stages(run)["train"] == {**read_stages(run)["train"], "device": "cpu", "dtype": "bfloat16"}
    assert json.loads((run / constants.PEAR_JSON).read_text())["base_model"]["dtype"] == "bfloat16"
    # no --model: eval takes the artifact's base model, and its dtype unless told otherwise
    assert main(["eval", "--task", "kv", "--n", "2", "--n-context", "2", "--out", str(out), "--artifact", str(run),
                 "--device", "cpu", "--dtype", "bfloat16", "--quiet", "--batch-size", "8"]) == 0, capsys.readouterr().err
    meta = json.loads((out / constants.EVAL_JSON).read_text())
    assert meta["ran_on"] == {"device": "cpu", "dtype": "bfloat16"}
    assert meta["model"]["name"] == "tiny-llama" and meta["model"]["dtype"] == "bfloat16"
    assert meta["config"]["model"] == "tiny-llama" and meta["config"]["dtype"] == "bfloat16"


def test_on_the_cpu_the_defaults_stay_float32(tmp_path):
    run = tmp_path / "run"
    assert main(["discover", "--out", str(run), *DISCOVER]) == 0
    assert main(["train", str(run), *TRAIN]) == 0
    assert {(s["device"], s["dtype"]) for s in read_stages(run).values()} == {("cpu", "float32")}


def test_contradictory_head_options_are_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["discover", "--out", str(run), *DISCOVER]) == 0
    capsys.readouterr()
    args = TRAIN[2:]  # without its --top-k
    assert main(["train", str(run), "--heads", "2.3", "--top-k", "10", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not both" in err and not (run / constants.PEAR_JSON).exists()


def test_a_section_that_changes_a_shared_default_must_say_why():
    @dataclass
    class Silent:
        train: Recipe = option(default_factory=lambda: Recipe(steps=5), prefix="", help="training")

    with pytest.raises(TypeError, match="without a reason"):
        add_arguments(argparse.ArgumentParser(), Silent)

    @dataclass
    class Said:
        train: Recipe = option(default_factory=lambda: Recipe(steps=5), prefix="", help="training",
                               defaults_reason="a quick look")

    parser = argparse.ArgumentParser()
    add_arguments(parser, Said)
    assert "default here: 5, not 60 as elsewhere: a quick look" in " ".join(parser.format_help().split())


def test_top_k_has_one_meaning_per_command():
    helps = {name: p.format_help() for name, p in _subparsers().items()}
    assert "--report-k" in helps["discover"] and "--report-k" in helps["atlas"]
    for name in ("discover", "atlas"):
        assert not any(a.option_strings == ["--top-k"] for a in _subparsers()[name]._actions)
    assert any(a.option_strings == ["--top-k"] for a in _subparsers()["train"]._actions)


def test_the_shared_options_table_in_the_docs_is_generated_from_the_code():
    from studies.update_readme import ROOT, render

    page = ROOT / "docs" / "options.md"
    assert render(page.read_text(), page) == page.read_text(), "run `python -m studies.update_readme`"


def test_each_shared_option_has_one_default_per_meaning_or_a_stated_reason():
    from studies.update_readme import shared_options

    assert "UNEXPLAINED" not in shared_options()


@pytest.mark.parametrize("command", ["discover", "train", "apply", "demo", "compare", "eval", "atlas", "eval-report"])
def test_overwrite_names_the_option_that_names_the_folder(command):
    parser = _subparsers()[command]
    action = next(a for a in parser._actions if a.option_strings == ["--overwrite"])
    has_out = any(a.option_strings == ["--out"] for a in parser._actions)
    assert ("--out" in action.help) == has_out and ("RUN_DIR" in action.help) == (not has_out), action.help
