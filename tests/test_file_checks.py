"""Every file pear_lens reads back is checked whole (issue 37, item 1): a run folder's tables and records are listed
in its ``manifest.json`` with their SHA-256, row count and the model they belong to, so a cut, edited or foreign
file is refused with one line naming it, and a folder written before manifests still loads."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pear_lens import constants, manifest
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.results import HeadScores
from tests.cli_support import TRAIN, refused, snapshot

DISCOVER = ["--settings", "4x8", "--quiet", "--no-png", "--allow-weak-copy-task"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two discovery runs of two tiny models of the same shape (3 layers × 4 heads); tests work on copies."""
    root = tmp_path_factory.mktemp("file_checks")
    out = {}
    for model in ("tiny-llama", "tiny-qwen2"):
        out[model] = root / model
        assert main(["discover", "--model", model, "--out", str(out[model]), *DISCOVER]) == 0
    return out


@pytest.fixture
def run_dir(runs, tmp_path) -> Path:
    return Path(shutil.copytree(runs["tiny-llama"], tmp_path / "run"))


def cut_inside_last_row(csv: Path) -> None:
    data = csv.read_bytes()
    csv.write_bytes(data[:-3])  # the last row loses its end: the newline and two characters of its last field


def test_a_run_lists_its_tables_with_model_hash_and_rows(run_dir):
    record = manifest.read(run_dir)
    info = json.loads((run_dir / constants.DISCOVERY_JSON).read_text())
    assert record["key"] == {"model": "tiny-llama", "fingerprint": info["scores"]["fingerprint"]}
    assert record["value"][constants.HEAD_SCORES_CSV]["rows"] == 12
    assert {constants.HEAD_SCORES_CSV, constants.DISCOVERY_JSON} <= set(record["value"])


@pytest.mark.parametrize("command", ["atlas", "train"])
def test_a_head_scores_csv_cut_inside_its_last_row_is_refused(run_dir, tmp_path, capsys, command):
    cut_inside_last_row(run_dir / constants.HEAD_SCORES_CSV)
    before = snapshot(tmp_path)
    args = {"atlas": ["atlas", run_dir, "--no-png", "--quiet"], "train": ["train", run_dir, *TRAIN]}[command]
    err = refused(capsys, args, says=str(run_dir / constants.HEAD_SCORES_CSV))
    assert "rerun `pear-lens discover`" in err
    assert snapshot(tmp_path) == before


def test_a_cut_head_scores_csv_is_refused_in_a_folder_without_manifest(run_dir, capsys):
    (run_dir / constants.MANIFEST_JSON).unlink()
    cut_inside_last_row(run_dir / constants.HEAD_SCORES_CSV)
    with pytest.raises(PearLensError, match="ends inside its last row"):
        HeadScores.load(run_dir)


def test_an_edited_head_scores_csv_is_refused(run_dir, capsys):
    csv = run_dir / constants.HEAD_SCORES_CSV
    csv.write_text(csv.read_text().replace("tiny-llama", "tiny-llama "))  # a valid table, not the one written
    with pytest.raises(PearLensError, match="is not the file written for tiny-llama"):
        HeadScores.load(run_dir)


def test_another_models_head_scores_csv_is_refused(runs, run_dir, tmp_path, capsys):
    """The same shape (3 × 4 heads), so nothing but the manifest tells the two models' tables apart."""
    shutil.copy(runs["tiny-qwen2"] / constants.HEAD_SCORES_CSV, run_dir / constants.HEAD_SCORES_CSV)
    shutil.rmtree(run_dir / constants.RUN_SCORES_DIR)  # so the per-prompt copy cannot tell either
    before = snapshot(tmp_path)
    refused(capsys, ["train", run_dir, *TRAIN], says="copied from another run")
    assert snapshot(tmp_path) == before


def test_another_models_manifest_is_refused(runs, run_dir, tmp_path, capsys):
    for name in (constants.HEAD_SCORES_CSV, constants.MANIFEST_JSON):
        shutil.copy(runs["tiny-qwen2"] / name, run_dir / name)
    shutil.rmtree(run_dir / constants.RUN_SCORES_DIR)
    before = snapshot(tmp_path)
    err = refused(capsys, ["train", run_dir, *TRAIN], says="belongs to tiny-qwen2")
    assert "not to tiny-llama" in err
    assert snapshot(tmp_path) == before


def test_an_edited_discovery_json_is_refused(run_dir):
    path = run_dir / constants.DISCOVERY_JSON
    info = json.loads(path.read_text())
    info["config"]["seed"] = 1234
    path.write_text(json.dumps(info))
    with pytest.raises(PearLensError, match=r"discovery\.json is not the file written"):
        HeadScores.load(run_dir)


def test_a_folder_written_before_manifests_still_loads(run_dir):
    (run_dir / constants.MANIFEST_JSON).unlink()
    assert HeadScores.load(run_dir).scores.shape == (3, 4)


def test_later_stages_add_their_tables_to_the_manifest(run_dir, tmp_path):
    assert main(["train", str(run_dir), "--top-k", "2", *TRAIN]) == 0
    assert main(["ablate", str(run_dir), "--k", "1", "--control-draws", "0", "--steps", "1", "--n-eval", "8", "--batch-size", "4",
                 "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]) == 0
    listed = manifest.read(run_dir)["value"]
    assert {constants.TRAINING_CSV, constants.K_SWEEP_CSV, constants.HEAD_SCORES_CSV} <= set(listed)
    for name in (constants.TRAINING_CSV, constants.K_SWEEP_CSV):
        csv = run_dir / name
        csv.write_bytes(csv.read_bytes()[:-1])
        with pytest.raises(PearLensError, match=name):
            manifest.check(run_dir, name, fix="rerun the stage")
    from pear_lens.run_page import run_report

    page = run_report(run_dir, tmp_path / "page.html").read_text(encoding="utf-8")
    assert "The training log cannot be trusted" in page and "The K sweep cannot be trusted" in page


def test_an_edited_head_atlas_is_refused(run_dir, capsys):
    from pear_lens.atlas import HeadAtlas

    assert main(["atlas", str(run_dir), "--no-png", "--quiet", "--needle.n-prompts", "2",
                 "--needle.haystack-tokens", "16", "--n-boot", "1000", "--detectors", "sink"]) == 0
    assert {constants.HEAD_ATLAS_CSV, constants.HEAD_ATLAS_JSON} <= set(manifest.read(run_dir)["value"])
    assert HeadAtlas.load(run_dir).names == ["sink"]
    path = run_dir / constants.HEAD_ATLAS_JSON
    path.write_text(path.read_text().replace('"sink"', '"sink" '))
    with pytest.raises(PearLensError, match=r"head_atlas\.json is not the file written for tiny-llama"):
        HeadAtlas.load(run_dir)
