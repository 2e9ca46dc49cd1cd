from __future__ import annotations

import json

import pandas as pd
import pytest

from pear_lens import constants
from pear_lens.cli import main
from pear_lens.io import MARKER


def discover(tmp_path, *extra, name="run"):
    out = tmp_path / name
    code = main(["discover", "--model", "tiny-llama", "--out", str(out), "--settings", "4x6,3x5", "--quiet",
                 "--allow-weak-copy-task", *extra])
    return code, out


def test_discover_writes_a_complete_run_folder(tmp_path):
    code, out = discover(tmp_path)
    assert code == 0
    assert {p.name for p in out.iterdir()} == {constants.HEAD_SCORES_CSV, constants.HEATMAP_HTML,
                                               constants.HEATMAP_PNG, constants.DISCOVERY_JSON, MARKER}
    assert json.loads((out / MARKER).read_text())["kind"] == "run"
    df = pd.read_csv(out / constants.HEAD_SCORES_CSV)
    assert len(df) == 12 and {"layer", "head", "score", "rank", "method", "metric"} <= set(df.columns)
    meta = json.loads((out / constants.DISCOVERY_JSON).read_text())
    assert meta["model"]["fingerprint"].startswith("blake2b:")
    assert meta["config"]["settings"] == [[4, 6], [3, 5]]
    assert {"torch", "transformers", "transformer-lens"} <= set(meta["environment"])
    assert (out / constants.HEATMAP_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_discover_round_trips_through_head_scores(tmp_path):
    from pear_lens.results import HeadScores

    _, out = discover(tmp_path, "--method", "attribution", "--no-png")
    loaded = HeadScores.load(out)
    df = pd.read_csv(out / constants.HEAD_SCORES_CSV)
    assert loaded.method == "attribution" and loaded.scores.shape == (3, 4)
    assert loaded.scores.flatten().tolist() == pytest.approx(df["score"].tolist(), rel=1e-6)
    assert not (out / constants.HEATMAP_PNG).exists()


def test_existing_run_folder_is_refused_unless_overwrite(tmp_path, capsys):
    code, out = discover(tmp_path, "--no-png")
    assert code == 0
    capsys.readouterr()
    code, _ = discover(tmp_path, "--no-png")
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")  # an earlier run of pear-lens discover: --overwrite replaces it
    code, _ = discover(tmp_path, "--overwrite", "--no-png")
    assert code == 0 and not (out / "notes.txt").exists()


def test_a_folder_pear_lens_did_not_write_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):
        code, _ = discover(tmp_path, "--no-png", *extra)
        err = capsys.readouterr().err
        assert code == 2 and "was not written by pear-lens" in err and len(err.strip().splitlines()) == 1
        assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--model", "gpt-17"], "unknown model"),
    (["--settings", "4x1"], "n >= 2"),
    (["--settings", "1x6"], "at least 2 sequences"),
    (["--settings", "2x300"], "longer than"),
])
def test_bad_input_gets_one_clear_line(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = main(["discover", "--model", "tiny-gpt2", "--out", str(out), "--quiet", "--allow-weak-copy-task", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_a_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    import pear_lens.plots

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pear_lens.plots, "save_figure", broken)
    code, _ = discover(tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and "disk full" in err and "--debug" in err and "Traceback" not in err  # a bug: exit 1
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir()]  # no staging leftovers


def test_unknown_method_is_rejected_by_the_parser(tmp_path):
    with pytest.raises(SystemExit):
        main(["discover", "--out", str(tmp_path / "x"), "--method", "magic"])
