from __future__ import annotations

import enum
import json
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.mediation.base import Ablation, Positions
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
                                               constants.HEATMAP_PNG, "heatmap.pdf", "heatmap.svg",
                                               constants.DISCOVERY_JSON, MARKER,
                                               constants.RUN_SCORES_DIR, constants.STAGES_JSON,
                                               constants.MANIFEST_JSON}
    assert (out / "heatmap.pdf").read_bytes()[:5] == b"%PDF-" and b"<svg" in (out / "heatmap.svg").read_bytes()
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
    import pear_lens.runs

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pear_lens.runs, "save_figure", broken)
    code, _ = discover(tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and "disk full" in err and "--debug" in err and "Traceback" not in err  # a bug: exit 1
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir()]  # no staging leftovers


def test_unknown_method_is_rejected_by_the_parser(tmp_path):
    with pytest.raises(SystemExit):
        main(["discover", "--out", str(tmp_path / "x"), "--method", "magic"])


# --------------------------------------------------------------------------- the method registry reaches the CLI


class Sign(str, enum.Enum):
    """Direction of the toy scores."""

    PLUS = "plus"
    """Later layers score higher."""
    MINUS = "minus"
    """Later layers score lower."""


@dataclass(frozen=True)
class ToyOptions:
    """Options of the toy method."""

    scale: float = 1.0
    """Δπ of a head is scale × its layer"""
    sign: Sign = Sign.PLUS
    """whether later layers score higher or lower"""


@pytest.fixture
def toy_method():
    """A scoring method registered the way a new one would be, removed again after the test."""
    from pear_lens.mediation.base import METHODS, SettingScan, record_options, register, run_settings

    @register("toy", "T", "toy: Δπ = ±scale × layer, no forward pass", ToyOptions)
    def toy(model, task, metric, *, difference, seed, progress, options=ToyOptions()):
        layer = torch.arange(model.n_layers, dtype=torch.float64)[:, None].expand(model.n_layers, model.n_heads)
        effect = options.scale * (1 if options.sign is Sign.PLUS else -1) * layer

        def per_setting(batch, bar):  # clean π = 1, so the relative Δπ is the effect itself
            n = batch.batch_size
            return SettingScan(1.0 + effect, 1.0, (1.0 + effect).float().expand(n, -1, -1), torch.ones(n))

        return run_settings(model, task, metric, difference, "toy", per_setting,
                            options=record_options(options), progress=progress, steps_per_setting=1)

    yield ToyOptions
    del METHODS["toy"]


def test_a_registered_method_runs_from_the_cli_with_its_own_options(tmp_path, toy_method):
    from pear_lens.results import HeadScores

    code, out = discover(tmp_path, "--method", "toy", "--scale", "2", "--sign", "minus", "--no-png")
    assert code == 0
    scores = HeadScores.load(out)
    assert scores.method == "toy" and scores.options == {"scale": 2.0, "sign": "minus"}
    assert scores.scores.flatten().tolist() == pytest.approx([-2.0 * layer for layer in range(3) for _ in range(4)])
    config = json.loads((out / constants.DISCOVERY_JSON).read_text())["config"]
    assert (config["method"], config["scale"], config["sign"]) == ("toy", 2.0, "minus")


def test_discover_help_lists_every_registered_method_and_its_options(toy_method, capsys):
    with pytest.raises(SystemExit):
        main(["discover", "--help"])
    text = capsys.readouterr().out
    for option in ("--ablation", "--positions", "--implementation", "--scale", "--sign"):
        assert option in text
    assert "{activation,attribution,path,toy}" in text
    assert "toy: --scale, --sign" in text and "path: --ablation, --implementation" in text
    assert "Δπ of a head is scale × its layer" in text  # the options' docstrings are the help


@pytest.mark.parametrize("args, message", [
    (["--method", "path", "--positions", "end"], "positions does not apply to method 'path' (it applies to "
                                                 "activation, attribution"),
    (["--method", "toy", "--ablation", "zero"], "ablation does not apply to method 'toy'"),
    (["--scale", "3"], "scale does not apply to method 'path' (it applies to toy)"),
])
def test_an_option_of_another_method_is_one_clear_error(tmp_path, capsys, toy_method, args, message):
    code, out = discover(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_score_heads_checks_options_against_the_method(toy_method):
    from pear_lens.errors import PearLensError
    from pear_lens.mediation import score_heads
    from pear_lens.models import load_model
    from pear_lens.proxy_task import ProxyTask

    model, task = load_model("tiny-llama"), ProxyTask(settings=((2, 4),))
    with pytest.raises(PearLensError, match="positions does not apply to method 'path'"):
        score_heads(model, task, method="path", positions="end")
    with pytest.raises(PearLensError, match="unknown sign 'sideways'"):
        score_heads(model, task, method="toy", sign="sideways")
    scores = score_heads(model, task, method="toy", options=toy_method(scale=0.5), progress=False)
    assert scores.scores[2, 0].item() == pytest.approx(1.0)
    assert score_heads(model, task, method="toy", options={"scale": 0.5}, progress=False).options["scale"] == 0.5


def test_a_method_name_is_registered_once(toy_method):
    from pear_lens.errors import PearLensError
    from pear_lens.mediation.base import METHODS, register

    for name in ("path", "toy"):
        with pytest.raises(PearLensError, match=f"a scoring method named '{name}' is already registered"):
            register(name, "x", "again", ToyOptions)(lambda *a, **k: None)
    assert METHODS["toy"].options is ToyOptions and METHODS["path"].short == "PP"


def test_a_method_records_its_options_as_given(toy_method):
    from pear_lens.mediation import ActivationOptions, PathOptions, method_options, score_heads
    from pear_lens.models import load_model
    from pear_lens.proxy_task import ProxyTask

    # options are checked once, on the way in: an instance of the method's dataclass passes as it is
    given = ActivationOptions(ablation=Ablation.ZERO, positions=Positions.END)
    assert method_options("activation", given) is given
    with pytest.raises(PearLensError, match="method 'activation' takes ActivationOptions options, got PathOptions"):
        method_options("activation", PathOptions())
    with pytest.raises(PearLensError, match="unknown ablation 'half'"):
        method_options("path", ablation="half")
    model, task = load_model("tiny-llama"), ProxyTask(settings=((2, 4),), seed=3)
    scores = score_heads(model, task, method="activation", options=given, seed=3, progress=False)
    # every field as given, then what the method adds (the seed); path adds the position it always patches
    assert scores.options == {"ablation": "zero", "positions": "end", "implementation": "fast", "seed": 3}
    assert list(score_heads(model, task, method="path", progress=False).options.items()) == [
        ("ablation", "mean"), ("positions", "end"), ("implementation", "fast"), ("seed", 0)]
    assert score_heads(model, task, method="toy", options={"sign": "minus"}, progress=False).options == {
        "scale": 1.0, "sign": "minus"}
