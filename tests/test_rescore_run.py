"""``pear-lens rescore`` and ``HeadScores.with_prompt_values``: an older discovery run (scores only) gets every
prompt's values from a rescan that reproduces its scores, and nothing else in the run changes."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.results import HeadScores

from .cli_support import discover, refused, snapshot
from .conftest import tiny


@pytest.fixture(scope="module")
def discovered(tmp_path_factory) -> Path:
    """A tiny-llama discovery run as pear_lens writes it today (with ``scores/``)."""
    return discover(tmp_path_factory.mktemp("rescore") / "run", settings="4x8,3x6")


@pytest.fixture
def old_run(discovered, tmp_path) -> Path:
    """The same run as one written before pear_lens kept per-prompt values: ``head_scores.csv`` alone."""
    run = Path(shutil.copytree(discovered, tmp_path / "run"))
    shutil.rmtree(run / constants.RUN_SCORES_DIR)
    return run


def test_rescore_adds_the_per_prompt_values_the_run_lost_and_changes_nothing_else(discovered, old_run, tmp_path,
                                                                                   capsys):
    assert HeadScores.load(old_run).per_prompt is None
    before = snapshot(old_run)
    assert main(["rescore", str(old_run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "rescanned 12 heads of tiny-llama on 7 prompts" in out and "largest difference from the run's scores 0" in out
    after = snapshot(old_run)
    assert {k: v for k, v in after.items() if k in before} == before  # every file the run had, byte for byte
    assert {k for k in after if k not in before} == {"scores", "scores/scores.json", "scores/head_scores.safetensors"}
    back, original = HeadScores.load(old_run), HeadScores.load(discovered)
    assert torch.equal(back.scores, original.scores)  # the run's own scores, as its head_scores.csv holds them
    assert torch.equal(back.per_prompt, original.per_prompt)  # the scan is deterministic on one machine
    assert torch.equal(back.prompt_setting, original.prompt_setting)
    assert back.extra["rescored"]["max_abs_difference"] == 0.0
    lo, hi = back.ci(n_boot=1000)  # error bars from the prompts, refused before
    assert bool((lo <= back.scores + 1e-6).all()) and bool((hi >= back.scores - 1e-6).all())

    again = snapshot(tmp_path)
    refused(capsys, ["rescore", old_run, "--quiet"], says="keeps its per-prompt values already")
    assert snapshot(tmp_path) == again


def test_the_atlas_of_a_rescored_run_resamples_its_prompts(old_run):
    from pear_lens.atlas import head_atlas
    from pear_lens.atlas.correlation import Resampled

    model = tiny("llama")
    held = head_atlas(model, HeadScores.load(old_run), ["sink", "previous_token"]).statistics(n_boot=1000)
    assert set(held["resampled"]) == {Resampled.HEADS_AND_DETECTOR_PROMPTS.value}
    assert main(["rescore", str(old_run), "--quiet"]) == 0
    stats = head_atlas(model, HeadScores.load(old_run), ["sink", "previous_token"]).statistics(n_boot=1000)
    assert set(stats["resampled"]) == {Resampled.HEADS_AND_PROMPTS.value} and not any(stats["note"])
    # the point estimates are the run's: only the intervals change
    assert list(stats["spearman"]) == list(held["spearman"])


def test_with_prompt_values_refuses_a_rescan_of_another_scan_or_other_numbers(discovered):
    full = HeadScores.load(discovered)
    bare = dataclasses.replace(full, per_prompt=None, clean_per_prompt=None, prompt_setting=None)
    assert torch.equal(bare.with_prompt_values(full).per_prompt, full.per_prompt)
    with pytest.raises(PearLensError, match="does not reproduce these scores"):
        dataclasses.replace(bare, scores=bare.scores + 0.01).with_prompt_values(full)
    with pytest.raises(PearLensError, match="its method differ"):
        bare.with_prompt_values(dataclasses.replace(full, method="activation"))
    with pytest.raises(PearLensError, match="its weights, task differ"):
        bare.with_prompt_values(dataclasses.replace(full, fingerprint="blake2b:00", task={**full.task, "seed": 9}))
    with pytest.raises(PearLensError, match="keeps no per-prompt values either"):
        bare.with_prompt_values(bare)
    # rounding from another device passes within the tolerance, and is recorded
    nudged = dataclasses.replace(full, scores=full.scores * (1 + 1e-6))
    assert bare.with_prompt_values(nudged).extra["rescored"]["max_abs_difference"] > 0


@pytest.mark.parametrize("args, says", [
    (["rescore", "no/such/run"], "is not a folder"),
    (["rescore", "RUN", "--tolerance", "-1"], "--tolerance must be a fraction"),
    (["rescore", "RUN", "--model", "tiny-gpt2"], "other weights"),
])
def test_bad_input_is_one_line_and_writes_nothing(old_run, tmp_path, capsys, args, says):
    before = snapshot(tmp_path)
    refused(capsys, [str(old_run) if a == "RUN" else a for a in args], says=says)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"])
def test_each_published_run_s_prompt_values_reproduce_its_scores(name):
    """The committed artifacts were rescored (``pear-lens rescore artifacts/MODEL``): their per-prompt values
    give back the published scores within the difference the rescan recorded, which is float rounding."""
    import numpy as np

    from pear_lens.uncertainty import score_statistic

    run = Path(__file__).resolve().parents[1] / "artifacts" / name
    scores = HeadScores.load(run)
    assert scores.per_prompt is not None and scores.per_prompt.shape[0] == 240
    again = score_statistic(scores.per_prompt.numpy(), scores.clean_per_prompt.numpy(),
                            scores.prompt_setting.numpy(), scores.difference)
    recorded = scores.extra["rescored"]
    gap = float(np.abs(again - scores.scores.double().numpy()).max())
    assert gap <= recorded["max_abs_difference"] + 1e-6 and gap <= 1e-4 * recorded["largest_abs_score"] + 1e-6
