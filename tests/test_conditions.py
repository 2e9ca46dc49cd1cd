"""Evaluation conditions are identified by content, so cached outputs survive a moved run folder."""
from __future__ import annotations

import shutil

import torch

from pear_lens.artifact import Artifact
from pear_lens.evaluation import conditions as C

from .conftest import tiny


def test_a_moved_artifact_is_the_same_condition_and_a_retrained_one_is_not(tmp_path):
    model = tiny("llama")
    Artifact(heads=[(0, 1), (2, 3)], tau=torch.tensor([0.8, 1.1]), base_model=model.describe()).save(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere" / "b")
    here, moved = C.from_artifact(model, tmp_path / "a"), C.from_artifact(model, tmp_path / "elsewhere" / "b")
    assert here.describe() == moved.describe()
    assert str(tmp_path) not in str(here.describe())
    Artifact(heads=[(0, 1), (2, 3)], tau=torch.tensor([0.8, 1.2]), base_model=model.describe()).save(tmp_path / "c")
    assert C.from_artifact(model, tmp_path / "c").describe() != here.describe()
