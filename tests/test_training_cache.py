"""τ trained before is reused only for the same weights, heads and recipe (pear_lens.training_cache)."""
from __future__ import annotations

import dataclasses
import json

import pytest

from pear_lens import reweight
from pear_lens.commands.cli import main
from pear_lens.commands.train import TrainRunConfig
from pear_lens.models import load_model
from pear_lens.reweight import TrainConfig
from pear_lens.training_cache import cached_training, matching_artifact

SMALL = TrainConfig(steps=2, batch_size=4, micro_batch=2, n=8)
HEADS = [(0, 1), (2, 3)]


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


def test_cached_training_reads_back_the_same_recipe_only(model, tmp_path, monkeypatch):
    cache = tmp_path / "controls" / "seed0.json"
    tau, trained = cached_training(model, HEADS, SMALL, cache=cache)
    assert trained and set(tau) == set(HEADS) and json.loads(cache.read_text())["key"]["fingerprint"] == model.fingerprint

    calls = []
    real = reweight.train_coefficients
    monkeypatch.setattr(reweight, "train_coefficients", lambda *a, **k: calls.append(a) or real(*a, **k))
    again, trained = cached_training(model, HEADS, SMALL, cache=cache)
    assert not trained and again == tau and not calls
    _, trained = cached_training(model, HEADS, dataclasses.replace(SMALL, seed=1), cache=cache)  # another recipe
    assert trained and len(calls) == 1
    _, trained = cached_training(model, HEADS[:1], dataclasses.replace(SMALL, seed=1), cache=cache)  # other heads
    assert trained and len(calls) == 2


def test_matching_artifact_needs_the_same_heads_and_recipe(model, tmp_path):
    run = tmp_path / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--quiet", "--no-png"]) == 0
    assert matching_artifact(run, SMALL, model) is None  # nothing trained yet
    assert main(["train", str(run), "--top-k", "2", "--steps", "2", "--batch-size", "4", "--micro-batch", "2",
                 "--n", "8", "--quiet", "--no-png"]) == 0
    config = TrainRunConfig(run_dir=run, top_k=2, steps=2, batch_size=4, micro_batch=2, n=8)
    artifact = matching_artifact(run, config, model)
    assert artifact is not None and len(artifact.heads) == 2
    assert matching_artifact(run, dataclasses.replace(config, top_k=3), model) is None
    assert matching_artifact(run, dataclasses.replace(config, lr=0.01), model) is None
