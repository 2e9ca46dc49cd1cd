"""Acceptance tests of the head atlas on the three real models, and of the published atlas tables.

``pear-lens atlas`` runs on a copy of each published run folder (fewer proxy sequences and needle prompts than
the published run, to fit CI, but the minimum of 1000 bootstrap replicates: the statistics are vectorised) (the
published three-family tables are checked in ``studies/tests/test_make_atlas.py``).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pear_lens import constants
from pear_lens.commands.cli import main

ROOT = Path(__file__).resolve().parents[1]
REAL = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct")


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_atlas_command_on_each_real_model(name, tmp_path, capsys):
    run = tmp_path / name
    run.mkdir()
    for f in (constants.DISCOVERY_JSON, constants.HEAD_SCORES_CSV):
        shutil.copy(ROOT / "artifacts" / name / f, run / f)
    code = main(["atlas", str(run), "--quiet", "--no-png", "--needle.n-prompts", "4", "--n-boot", "1000",
                 "--proxy-settings", "10x20"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(run / constants.HEAD_ATLAS_CSV)
    scores = pd.read_csv(run / constants.HEAD_SCORES_CSV)
    assert len(df) == len(scores) and set(zip(df["layer"], df["head"])) == set(zip(scores["layer"], scores["head"]))
    detectors = ["previous_token", "duplicate_token", "induction", "sink", "copy_suppression", "retrieval"]
    assert all(c in df.columns for c in detectors)
    assert all(math.isfinite(v) for v in df[["delta_pi", *detectors]].to_numpy().ravel())
    # attention shares lie in [0, 1]; a model that copies the needle has at least one head that retrieves it
    for c in ("previous_token", "duplicate_token", "induction", "sink", "retrieval"):
        assert df[c].between(0, 1).all(), c
    assert df["retrieval"].max() > 0
