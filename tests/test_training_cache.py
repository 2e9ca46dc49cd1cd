"""An artifact is reused only for the same weights, heads and recipe (pear_lens.training_cache)."""
from __future__ import annotations

import dataclasses

import pytest

from pear_lens.commands.cli import main
from pear_lens.commands.train import TrainRunConfig
from pear_lens.models import load_model
from pear_lens.recipe import TrainConfig
from pear_lens.training_cache import matching_artifact

SMALL = TrainConfig(steps=2, batch_size=4, micro_batch=2, n=8)


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-llama")


def test_matching_artifact_needs_the_same_heads_and_recipe(model, tmp_path):
    run = tmp_path / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--quiet", "--no-png",
                 "--allow-weak-copy-task"]) == 0
    assert matching_artifact(run, SMALL, model) is None  # nothing trained yet
    assert main(["train", str(run), "--top-k", "2", "--steps", "2", "--batch-size", "4", "--micro-batch", "2",
                 "--n", "8", "--quiet", "--no-png"]) == 0
    config = TrainRunConfig(run_dir=run, top_k=2, steps=2, batch_size=4, micro_batch=2, n=8)
    artifact = matching_artifact(run, config, model)
    assert artifact is not None and len(artifact.heads) == 2
    assert matching_artifact(run, dataclasses.replace(config, top_k=3), model) is None
    assert matching_artifact(run, dataclasses.replace(config, lr=0.01), model) is None
