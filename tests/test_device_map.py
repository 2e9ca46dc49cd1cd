"""load_model(device_map=..., dtype=...): the path a large model takes on GPUs (docs/gpu.md),
checked here with CPU device maps on tiny models saved to a folder: same weights, same scores, and (issue 36,
item 4) the same τ and the same evaluation outputs, with --device-map on every command that loads a model.

A per-layer map onto the CPU alone moves no tensor between devices; that part runs on a GPU machine
(tests/test_gpu_device_map.py and benchmarks/device_map.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from pear_lens.errors import PearLensError
from pear_lens.mediation import score_heads
from pear_lens.models import build_tiny, load_model
from pear_lens.proxy_task import ProxyTask

TASK = ProxyTask(settings=((6, 8), (4, 5)), seed=3)

# One entry per top-level module, every decoder layer separately: the shape of a
# real multi-GPU map, with every target the CPU.
LAYER_MAPS = {
    "llama": {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "cpu", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu"},
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
             "transformer.h.0": "cpu", "transformer.h.1": "cpu", "transformer.h.2": "cpu",
             "transformer.ln_f": "cpu", "lm_head": "cpu"},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for family in LAYER_MAPS:
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        hf, tok = build_tiny(family)
        hf.save_pretrained(folder)
        tok.save_pretrained(folder)
        out[family] = str(folder)
    return out


@pytest.mark.parametrize("family", list(LAYER_MAPS))
@pytest.mark.parametrize("map_kind", ["whole", "per_layer"])
def test_scores_with_a_device_map_equal_scores_without(folders, family, map_kind):
    device_map = {"": "cpu"} if map_kind == "whole" else LAYER_MAPS[family]
    plain = load_model(folders[family])
    mapped = load_model(folders[family], device_map=device_map)
    # a map onto a single device sets no hf_device_map (transformers treats it as `device`); what
    # matters is that the weights are real and where the map put them
    assert {p.device.type for p in mapped.bridge.original_model.parameters()} == {"cpu"}
    assert mapped.fingerprint == plain.fingerprint
    # the fast path scan runs blocks from the middle of the model: the part a device map could break
    a = score_heads(plain, TASK, difference="absolute", progress=False)
    b = score_heads(mapped, TASK, difference="absolute", progress=False)
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-7)
    assert b.clean_metric == pytest.approx(a.clean_metric, rel=1e-6)


def test_fresh_copy_keeps_the_device_map(folders):
    mapped = load_model(folders["llama"], device_map=LAYER_MAPS["llama"])
    fresh = mapped.fresh_hf()
    tokens = torch.randint(4, mapped.d_vocab, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens).logits, mapped.bridge(tokens), rtol=1e-4, atol=1e-5)


def test_bfloat16_weights_give_close_scores(folders):
    full = load_model(folders["llama"])
    half = load_model(folders["llama"], dtype="bfloat16", device_map={"": "cpu"})
    assert {p.dtype for p in half.bridge.original_model.parameters()} == {torch.bfloat16}
    a = score_heads(full, TASK, difference="absolute", progress=False)
    b = score_heads(half, TASK, difference="absolute", progress=False)
    # bf16 keeps ~3 significant digits: the scores move, the ranking of the clear heads does not
    assert (b.scores - a.scores).abs().max() < 0.05 * a.scores.abs().max()
    assert a.top_k(3) == b.top_k(3)


def test_bad_device_options_are_refused_with_the_fix(folders):
    with pytest.raises(PearLensError, match="not both"):
        load_model(folders["llama"], device="cpu", device_map={"": "cpu"})
    with pytest.raises(PearLensError, match="save_pretrained"):
        load_model("tiny-llama", device_map={"": "cpu"})
    with pytest.raises(PearLensError, match="bfloat16"):
        load_model("tiny-llama", dtype="fp8")
    with pytest.raises(PearLensError, match="meta/disk"):
        load_model(folders["llama"], device_map={"": "meta"})


def test_discover_command_takes_dtype_and_device_map(folders, tmp_path):
    from pear_lens.commands.cli import main
    from pear_lens.results import HeadScores

    common = ["discover", "--model", folders["gpt2"], "--settings", "4x6", "--no-png", "--quiet",
              "--allow-weak-copy-task"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--device-map", "auto"]) == 0
    assert main([*common, "--out", str(tmp_path / "c"), "--dtype", "bfloat16"]) == 0
    a, b, c = (HeadScores.load(tmp_path / x) for x in "abc")
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-7)
    assert c.fingerprint != a.fingerprint  # bf16 weights are other weights, and the run says so


@pytest.mark.slow
def test_registry_model_takes_a_device_map(smol):
    # the GGUF registry models load through their cached Hugging Face folder, so the map applies there too
    mapped = load_model("smollm2-135m-instruct", device_map={"": "cpu"})
    assert mapped.fingerprint == smol.fingerprint
    task = ProxyTask(settings=((4, 8),), seed=0)
    a = score_heads(smol, task, difference="absolute", progress=False)
    b = score_heads(mapped, task, difference="absolute", progress=False)
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- every command (issue 36, item 4)

MODEL_COMMANDS = ("discover", "train", "apply", "ablate", "demo", "eval", "atlas")
"""Every command that loads a model; each takes --device-map (through Placement)."""

DISCOVER = ["--settings", "4x8", "--quiet", "--no-png", "--allow-weak-copy-task"]
TRAIN = dict(top_k=2, steps=3, batch_size=4, micro_batch=2, n=8, quiet=True, no_png=True)


def _discovered(folder: str, run: Path) -> Path:
    from pear_lens.commands.cli import main

    assert main(["discover", "--model", folder, "--out", str(run), *DISCOVER]) == 0
    return run


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    """A discovery run of the saved tiny Llama, trained without a device map: the reference."""
    from pear_lens.commands.train import TrainRunConfig, train_run

    run = _discovered(folders["llama"], tmp_path_factory.mktemp("trained") / "run")
    artifact, result = train_run(TrainRunConfig(run_dir=run, **TRAIN))
    return run, result


def test_training_with_a_per_layer_map_gives_the_same_tau(folders, trained, tmp_path, monkeypatch):
    from pear_lens.commands.train import TrainRunConfig, train_run
    from pear_lens.models import loaded
    from pear_lens.runs import read_stages

    _, plain = trained
    run = _discovered(folders["llama"], tmp_path / "run")
    maps = []

    def spy(*args, **kwargs):
        maps.append(kwargs.get("device_map"))
        return load_model(*args, **kwargs)

    monkeypatch.setattr(loaded, "load_model", spy)
    _, mapped = train_run(TrainRunConfig(run_dir=run, device_map=LAYER_MAPS["llama"], **TRAIN))
    assert maps == [LAYER_MAPS["llama"]]  # the map reached the load
    assert mapped.heads == plain.heads
    torch.testing.assert_close(mapped.tau, plain.tau, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(mapped.loss_curve), torch.tensor(plain.loss_curve), rtol=1e-5, atol=1e-6)
    assert read_stages(run)["train"]["device"] == "cpu"  # one device: no "devices" list


def test_evaluation_with_a_per_layer_map_gives_the_same_outputs(folders, trained, tmp_path):
    """Greedy answers, context-aware decoding and teacher-forced likelihoods, item by item (fresh_hf loads
    each condition's copy with the model's map)."""
    from pear_lens import constants
    from pear_lens.commands.eval import EvalConfig, run_eval

    run, _ = trained
    common = dict(task="kv", model=folders["llama"], artifact=run, n=3, n_context=2, cad=0.5, likelihood=True,
                  quiet=True, batch_size=8)
    a = run_eval(EvalConfig(out=tmp_path / "a", **common))
    b = run_eval(EvalConfig(out=tmp_path / "b", device_map=LAYER_MAPS["llama"], **common))
    assert a.items["condition"].nunique() == 3  # baseline, PEAR, context-aware decoding
    pd.testing.assert_frame_equal(b.items, a.items)
    la, lb = (pd.read_csv(tmp_path / x / constants.EVAL_LIKELIHOOD_CSV) for x in "ab")
    pd.testing.assert_frame_equal(lb, la, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "b" / constants.EVAL_JSON).read_text())["config"]["device_map"] == LAYER_MAPS["llama"]


def test_train_apply_and_eval_take_device_map_on_the_command_line(folders, tmp_path, capsys):
    from pear_lens import constants
    from pear_lens.commands.cli import main
    from pear_lens.runs import read_stages

    run = _discovered(folders["gpt2"], tmp_path / "run")
    quick = ["--top-k", "2", "--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]
    assert main(["train", str(run), "--device-map", "auto", *quick]) == 0, capsys.readouterr().err
    assert main(["apply", str(run), "--out", str(tmp_path / "hf"), "--device-map", "auto"]) == 0, capsys.readouterr().err
    assert main(["eval", "--task", "kv", "--n", "2", "--n-context", "2", "--artifact", str(run), "--out",
                 str(tmp_path / "eval"), "--device-map", "auto", "--quiet"]) == 0, capsys.readouterr().err
    assert read_stages(run)["train"]["device"] == "cpu"
    assert json.loads((tmp_path / "hf" / constants.PEAR_NOTE_JSON).read_text())["ran_on"]["device"] == "cpu"
    assert json.loads((tmp_path / "eval" / constants.EVAL_JSON).read_text())["config"]["device_map"] == "auto"


def _subparsers():
    import argparse

    from pear_lens.commands.cli import build_parser

    return next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_command_that_loads_a_model_takes_device_map(command):
    assert "--device-map" in _subparsers()[command].format_help()


def _args(command: str, tmp_path) -> list[str]:
    """The fewest arguments ``command`` parses with (the refusal comes before any of them is read)."""
    positional = [str(tmp_path / "run")] if command in ("train", "apply", "ablate", "atlas") else []
    out = ["--out", str(tmp_path / "out")] if command in ("discover", "apply", "eval") else []
    return [command, *positional, *out]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_device_and_device_map_together_are_refused_in_one_line(command, tmp_path, capsys):
    from tests.cli_support import refused

    refused(capsys, [*_args(command, tmp_path), "--device", "cuda", "--device-map", "auto"], says="not both")
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_placement_checks_the_device_map_in_python():
    from pear_lens.commands.eval import EvalConfig
    from pear_lens.models.loaded import Placement

    with pytest.raises(PearLensError, match="not both"):
        Placement(device="cuda:1", device_map="auto")
    with pytest.raises(PearLensError, match="unknown device map"):
        EvalConfig(out=Path("x"), device_map="everywhere")
    placed = Placement(device_map=LAYER_MAPS["llama"], dtype="bfloat16")
    assert placed.load_options() == {"device_map": LAYER_MAPS["llama"], "dtype": "bfloat16"}
    assert Placement().load_options("float16") == {"device": "cpu", "dtype": "float16"}
