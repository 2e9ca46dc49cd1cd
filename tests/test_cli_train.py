"""The train → apply → ablate commands end to end on a tiny model, and the folded folder loaded
by plain transformers in a separate process."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from pear_lens import constants
from pear_lens.artifact import load_artifact
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.k_sweep import COLUMNS
from pear_lens.reweight import reweighted
from tests.conftest import tiny

TRAIN = ["--steps", "3", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8",
                 "--quiet", "--no-png", "--allow-weak-copy-task"]) == 0
    assert main(["train", str(run), "--top-k", "3", *TRAIN]) == 0
    return run


def test_train_writes_the_artifact_and_the_log(run_dir, capsys):
    art = load_artifact(run_dir)
    scores = pd.read_csv(run_dir / constants.HEAD_SCORES_CSV).sort_values("rank")
    assert art.heads == list(zip(scores["layer"][:3], scores["head"][:3]))
    assert art.ranks == [1, 2, 3] and art.training["steps"] == 3 and art.discovery["method"] == "path"
    log = pd.read_csv(run_dir / constants.TRAINING_CSV)
    assert len(log) == 4 * 3 and set(log.columns) >= {"step", "layer", "head", "tau", "loss", "lr"}
    assert (run_dir / constants.TRAINING_HTML).exists()


def test_train_says_when_tau_sits_at_the_step_limit(run_dir, tmp_path, capsys, monkeypatch):
    """pear.json records the step limit and each τ's flag; the command prints a note naming held heads, and
    none when no τ is held (on this tiny model's noisy gradients τ moves less than the limit)."""
    import shutil

    import pear_lens.reweight as rw
    from pear_lens.recipe import TrainConfig

    config = TrainConfig(steps=3, batch_size=4, micro_batch=2, n=8)
    for share in (rw.AT_LIMIT_SHARE, 0.0):  # 0: any τ counts as held, so the note must appear
        monkeypatch.setattr(rw, "AT_LIMIT_SHARE", share)
        run = tmp_path / f"run{share}"
        shutil.copytree(run_dir, run)
        capsys.readouterr()
        assert main(["train", str(run), "--top-k", "3", "--overwrite", *[a for a in TRAIN if a != "--quiet"]]) == 0
        err = capsys.readouterr().err
        pear = json.loads((run / constants.PEAR_JSON).read_text())
        training = pear["training"]
        assert training["tau_step_limit"] == pytest.approx(rw.step_limit(config), abs=1e-6)
        assert training["tau_at_step_limit"] == rw.at_step_limit([h["tau"] for h in pear["heads"]], config)
        assert ("step limit" in err) == any(training["tau_at_step_limit"])
        if share == 0.0:
            assert all(training["tau_at_step_limit"]) and all(f"L{h['layer']}.H{h['head']}" in err for h in pear["heads"])


def test_train_refuses_to_overwrite_and_bad_heads(run_dir, capsys):
    before = (run_dir / constants.PEAR_JSON).read_text()
    assert main(["train", str(run_dir), *TRAIN]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["train", str(run_dir), "--heads", "9.9", "--overwrite", *TRAIN]) == 2
    assert "outside the model" in capsys.readouterr().err
    assert (run_dir / constants.PEAR_JSON).read_text() == before
    assert main(["train", str(run_dir), "--heads", "1.2,2.0", "--overwrite", *TRAIN]) == 0
    assert load_artifact(run_dir).heads == [(1, 2), (2, 0)]


def test_apply_writes_a_folder_plain_transformers_loads(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert main(["apply", str(run_dir), "--out", str(out)]) == 0
    note = json.loads((out / constants.PEAR_NOTE_JSON).read_text())
    assert note["verified_max_abs_logit_diff"] <= 1e-4 and note["base_model"]["name"] == "tiny-llama"
    assert note["verification"]["vs_unfolded_hf"] <= 1e-5
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}

    tokens = torch.randint(4, 512, (2, 20), generator=torch.Generator().manual_seed(5))
    save_file({"tokens": tokens}, str(tmp_path / "in.safetensors"))
    script = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
        AutoTokenizer.from_pretrained({str(out)!r})
        with torch.no_grad():
            logits = model(load_file({str(tmp_path / 'in.safetensors')!r})["tokens"]).logits
        save_file({{"logits": logits.contiguous()}}, {str(tmp_path / 'out.safetensors')!r})
        assert not any(m.startswith("pear_lens") for m in sys.modules), "pear_lens was imported"
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    art = load_artifact(run_dir)
    with torch.no_grad(), reweighted(tiny("llama"), art.heads, art.tau) as bridge:
        hooked = bridge(tokens)
    assert (load_file(str(tmp_path / "out.safetensors"))["logits"] - hooked).abs().max() <= 1e-4


def test_apply_refuses_an_existing_folder(run_dir, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    for extra in ([], ["--overwrite"]):  # not a folder pear_lens wrote: --overwrite does not replace it
        assert main(["apply", str(run_dir), "--out", str(tmp_path / "taken"), *extra]) == 2
        assert "was not written by pear-lens" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "keep me"


def test_ablate_writes_the_curve(run_dir):
    assert main(["ablate", str(run_dir), "--k", "1,2", "--control-draws", "2", "--steps", "2", "--control-steps", "1",
                 "--batch-size", "2", "--micro-batch", "2", "--n", "8", "--n-eval", "6", "--quiet",
                 "--no-png"]) == 0
    df = pd.read_csv(run_dir / constants.K_SWEEP_CSV)
    assert list(df.columns[:len(COLUMNS)]) == COLUMNS
    assert df["selection"].value_counts().to_dict() == {"random": 4, "top": 2, "none": 1}
    assert set(df.loc[df["selection"] == "random", "steps"]) == {1}
    assert set(df.loc[df["selection"] == "top", "steps"]) == {2}
    assert (df["n_eval"] == 6).all() and df["copy_accuracy"].between(0, 1).all()
    assert (run_dir / constants.K_SWEEP_HTML).exists()


def test_choose_k_takes_the_smallest_k_near_the_best_gain():
    from pear_lens.k_sweep import choose_k

    rows = [("none", 0, 2.0), ("top", 1, 1.9), ("top", 5, 1.2), ("top", 10, 1.05), ("top", 20, 1.0), ("random", 5, 1.9)]
    df = pd.DataFrame([{"selection": s, "k": k, "copy_loss": loss} for s, k, loss in rows])
    assert choose_k(df) == 10  # gains 0.1, 0.8, 0.95, 1.0: the first at >= 0.9 of the best
    assert choose_k(df, fraction=0.8) == 5
    worse = df.assign(copy_loss=[2.0, 2.1, 2.2, 2.3, 2.4, 2.0])
    with pytest.raises(PearLensError, match="no K"):
        choose_k(worse)


def test_demo_runs_the_whole_pipeline(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-llama", "--out", str(out), "--steps", "3", "--n-eval", "4",
                 "--kv-items", "4", "--no-png", "--quiet", "--allow-weak-copy-task"]) == 0
    check = json.loads((out / "demo_check.json").read_text())
    assert set(check["copy_task"]) == set(check["kv_retrieval"]["accuracy"]) == {"baseline", "folded"}
    assert check["kv_retrieval"]["n_items"] == 4 and check["verification"]["vs_unfolded_hf"] <= 1e-4
    assert len(check["heads"]) == 10 and (out / "folded_hf" / "config.json").exists()
    assert load_artifact(out).heads == [(h["layer"], h["head"]) for h in check["heads"]]


def test_training_warns_when_bos_differs_from_the_discovery_run(tmp_path):
    import warnings

    run = tmp_path / "bos"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--prepend-bos",
                 "--quiet", "--no-png", "--allow-weak-copy-task"]) == 0
    with pytest.warns(UserWarning, match="with BOS.*pass --prepend-bos"):
        assert main(["train", str(run), "--top-k", "2", *TRAIN]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matching BOS: no warning
        assert main(["train", str(run), "--top-k", "2", "--prepend-bos", "--overwrite", *TRAIN]) == 0
        assert main(["ablate", str(run), "--k", "1", "--control-draws", "0", "--prepend-bos", "--steps", "1",
                     "--control-steps", "1", "--batch-size", "2", "--micro-batch", "2", "--n", "8",
                     "--n-eval", "2", "--quiet", "--no-png"]) == 0
    assert load_artifact(run).training["prepend_bos"] is True
    assert pd.read_csv(run / constants.K_SWEEP_CSV)["prepend_bos"].all()
