"""Bad input and faults on the command line (issue 11): each ends with a non-zero exit, one line naming
the fix, and every file that existed before byte-identical afterwards."""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.io import FILE_MODE, MARKER
from tests.cli_support import TRAIN, discover_and_train, refused, snapshot

EVAL = ["--model", "tiny-llama", "--quiet", "--batch-size", "8"]
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A discovery run with an artifact (tiny-llama); tests work on copies of it."""
    run = tmp_path_factory.mktemp("reliability") / "run"
    return discover_and_train(run)


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


# --------------------------------------------------------------------------- 1. never replace what it did not write


@pytest.mark.parametrize("case", ["apply onto its run", "eval onto its artifact", "apply inside its run",
                                  "report over its eval folders"])
def test_an_output_is_never_one_of_the_inputs(run_dir, tmp_path, capsys, case):
    before = snapshot(tmp_path)
    args, says = {
        "apply onto its run": (["apply", run_dir, "--out", run_dir, "--overwrite"], "is the input"),
        "eval onto its artifact": (["eval", "--artifact", run_dir, "--out", run_dir, "--overwrite", "--n", 2,
                                    *EVAL], "is the input"),
        "apply inside its run": (["apply", run_dir, "--out", run_dir / "hf"], "lies inside the input"),
        "report over its eval folders": (["eval-report", run_dir, "--out", tmp_path, "--overwrite"],
                                         "contains the input"),
    }[case]
    refused(capsys, args, says=says)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_only_a_folder_of_the_same_kind(run_dir, tmp_path, capsys):
    other = Path(shutil.copytree(run_dir, tmp_path / "other-run"))
    before = snapshot(tmp_path)
    refused(capsys, ["apply", run_dir, "--out", other, "--overwrite"],
            says="is a discovery run folder (`pear-lens discover`), not a folded Hugging Face model folder")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path, capsys, extra):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("months of work")
    before = snapshot(tmp_path)
    refused(capsys, ["demo", "--model", "tiny-llama", "--out", thesis, "--no-png", "--quiet", *extra],
            says="was not written by pear-lens")
    assert snapshot(tmp_path) == before


def test_the_current_folder_is_never_an_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("x")
    before = snapshot(tmp_path)
    refused(capsys, ["discover", "--model", "tiny-llama", "--out", ".", "--overwrite"], says="is the current folder")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- 2. atomic, early checks


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "training.png")


def _interrupted_save(self, run_dir):
    """Ctrl-C after the coefficient file is written and before pear.json."""
    save_file({"tau": self.tau.contiguous()}, str(Path(run_dir) / constants.COEFFICIENTS_SAFETENSORS))
    raise KeyboardInterrupt


@pytest.mark.parametrize("fault", ["figure writer fails", "Ctrl-C mid-save"])
def test_train_overwrite_that_fails_while_saving_leaves_the_old_run(run_dir, tmp_path, capsys, monkeypatch, fault):
    import pear_lens.artifact
    import pear_lens.runs

    before = snapshot(tmp_path)
    if fault == "figure writer fails":
        monkeypatch.setattr(pear_lens.runs, "save_figure", _disk_full)
        refused(capsys, ["train", run_dir, "--heads", "0.1,2.3", "--overwrite", *TRAIN], says="free some space")
    else:
        monkeypatch.setattr(pear_lens.artifact.Artifact, "save", _interrupted_save)
        refused(capsys, ["train", run_dir, "--heads", "0.1,2.3", "--overwrite", *TRAIN], code=130,
                says="nothing was left half-written")
    assert snapshot(tmp_path) == before  # byte-identical, and no staging leftovers beside it


def test_ablate_that_fails_while_saving_leaves_the_run(run_dir, tmp_path, capsys, monkeypatch):
    import pear_lens.runs

    before = snapshot(tmp_path)
    monkeypatch.setattr(pear_lens.runs, "save_figure", _disk_full)
    refused(capsys, ["ablate", run_dir, "--k", "1", "--control-draws", "0", "--steps", "1", "--control-steps", "1",
                     "--batch-size", "2", "--micro-batch", "2", "--n", "8", "--n-eval", "2", "--quiet", "--no-png"],
            says="free some space")
    assert snapshot(tmp_path) == before


def test_what_can_be_checked_early_is_checked_before_the_slow_part(run_dir, tmp_path, capsys, monkeypatch):
    import pear_lens.figure_files
    import pear_lens.io
    import pear_lens.models
    import pear_lens.models.loaded
    import pear_lens.workflow

    def too_late(*args, **kwargs):
        raise AssertionError("the slow part started before the check")

    for home in (pear_lens.models, pear_lens.models.loaded):  # the re-export and where it is defined
        monkeypatch.setattr(home, "load_model", too_late)
    monkeypatch.setattr(pear_lens.workflow, "train_coefficients", too_late)
    before = snapshot(tmp_path)
    # no Chrome is no longer a refusal (issue 35): the HTML figures are written and one line says why not the PNG
    # (tests/test_plots.py::test_without_a_chrome_the_html_is_written_and_one_line_says_why_not_the_rest)
    (tmp_path / "a-file").write_text("")
    refused(capsys, ["discover", "--model", "tiny-llama", "--out", tmp_path / "a-file" / "run", "--no-png"],
            says="is a file, not a folder")
    real_mkdtemp = pear_lens.io.tempfile.mkdtemp

    def read_only(*args, prefix=None, dir=None, **kwargs):  # the file system refuses the parent folder
        if dir is not None and Path(dir) == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkdtemp(*args, prefix=prefix, dir=dir, **kwargs)

    monkeypatch.setattr(pear_lens.io.tempfile, "mkdtemp", read_only)
    refused(capsys, ["discover", "--model", "tiny-llama", "--out", tmp_path / "new", "--no-png"],
            says="cannot write in")
    refused(capsys, ["train", run_dir, "--overwrite", *TRAIN], says="cannot write in")
    assert snapshot(tmp_path) == {**before, "a-file": b""}


# --------------------------------------------------------------------------- 3. values checked where they enter


def _edit_artifact(run: Path, *, json_tau=None, file_tau=None) -> None:
    meta = json.loads((run / constants.PEAR_JSON).read_text())
    coef = run / constants.COEFFICIENTS_SAFETENSORS
    if file_tau is not None:
        tensors = load_file(str(coef))
        save_file({"tau": torch.tensor(file_tau, dtype=torch.float32), "heads": tensors["heads"]}, str(coef))
        meta["coefficients_file"]["sha256"] = hashlib.sha256(coef.read_bytes()).hexdigest()
    for entry, t in zip(meta["heads"], json_tau or []):
        entry["tau"] = t
    (run / constants.PEAR_JSON).write_text(json.dumps(meta))


@pytest.mark.parametrize("edit, says", [
    ({"json_tau": [1e30, 1e30], "file_tau": [1e30, 1e30]}, "is beyond ±100"),
    ({"json_tau": [float("nan"), 1.0]}, "is not finite"),
    ({"json_tau": [0.5, 0.5]}, "pear.json was edited"),
])
def test_tau_is_checked_and_the_edited_file_is_blamed(run_dir, tmp_path, capsys, edit, says):
    _edit_artifact(run_dir, **edit)
    before = snapshot(tmp_path)
    err = refused(capsys, ["apply", run_dir, "--out", tmp_path / "hf"], says=says)
    assert f"{constants.PEAR_JSON}" in err and f"{constants.COEFFICIENTS_SAFETENSORS} is damaged" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("score", ["nan", "inf", "lots"])
def test_a_score_that_is_not_a_finite_number_is_refused(run_dir, tmp_path, capsys, score):
    csv = run_dir / constants.HEAD_SCORES_CSV
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("score")] = score
    csv.write_text("\n".join(lines[:3] + [",".join(row)] + lines[4:]) + "\n")
    before = snapshot(tmp_path)
    refused(capsys, ["train", run_dir, "--overwrite", *TRAIN], says=f"line 4: the score {score!r}")
    assert snapshot(tmp_path) == before


def test_a_head_beyond_the_model_is_refused_not_taken_for_a_larger_model(run_dir, tmp_path, capsys):
    csv = run_dir / constants.HEAD_SCORES_CSV
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("layer")] = "99"
    csv.write_text("\n".join(lines[:3] + [",".join(row)] + lines[4:]) + "\n")
    before = snapshot(tmp_path)
    err = refused(capsys, ["train", run_dir, "--overwrite", *TRAIN], says="line 4: L99.H")
    assert "is outside the model (3 layers × 4 heads" in err and "100" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "nan")])
def test_a_training_number_that_is_not_finite_is_refused(run_dir, tmp_path, capsys, flag, value):
    before = snapshot(tmp_path)
    err = refused(capsys, ["train", run_dir, "--overwrite", flag, value, *TRAIN],
                  says=f"{flag[2:].replace('-', '_')} must be a finite number, got {value}")
    assert "a bug" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("heads, says", [("", "is empty"), ("1.1,,2.2", "has an empty entry"),
                                         ("1.1.1", "'1.1.1' is not LAYER.HEAD")])
def test_empty_or_malformed_heads_are_refused(run_dir, tmp_path, capsys, heads, says):
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(run_dir), "--heads", heads, "--overwrite", *TRAIN])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and says in err and len(err.strip().splitlines()) == 1
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, says", [
    (["eval", "--task", "kv", "--data", DATA / "kv_handmade.jsonl", "--n-context", 3, *EVAL],
     "--n-context sets how items are generated"),
    (["eval", "--task", "mdqa", "--key-format", "hex4", "--n", 2, *EVAL], "applies to --task kv only"),
    (["eval", "--task", "closed-book", "--n-context", 2, "--n", 2, *EVAL], "does not apply to --task closed-book"),
    (["eval", "--task", "kv", "--uniform", "nan", "--n", 2, *EVAL], "is not finite"),
    (["discover", "--model", "tiny-llama", "--positions", "end"], "positions does not apply to method 'path'"),
])
def test_flags_that_do_not_apply_are_refused(tmp_path, capsys, args, says):
    before = snapshot(tmp_path)
    refused(capsys, [*args, "--out", tmp_path / "out"], says=says)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("tolerance", ["-1", "nan", "0"])
def test_a_bad_tolerance_blames_the_tolerance(run_dir, tmp_path, capsys, tolerance):
    before = snapshot(tmp_path)
    err = refused(capsys, ["apply", run_dir, "--out", tmp_path / "hf", "--tolerance", tolerance],
                  says="tolerance must be a positive number")
    assert "families" not in err
    assert snapshot(tmp_path) == before


def test_fold_verification_refuses_degenerate_logits():
    from pear_lens.verified_fold import check_logits
    from pear_lens.errors import PearLensError

    check_logits(torch.randn(2, 3, 5), "the model", "x")
    with pytest.raises(PearLensError, match="constant"):
        check_logits(torch.zeros(2, 3, 5), "the model", "x")
    with pytest.raises(PearLensError, match="not finite"):
        check_logits(torch.tensor([[[1.0, float("nan")]]]), "the model", "x")


def test_the_tolerance_is_relative_to_the_logits_scale(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert main(["apply", str(run_dir), "--out", str(out)]) == 0
    note = json.loads((out / constants.PEAR_NOTE_JSON).read_text())
    v = note["verification"]
    assert note["verified_max_rel_logit_diff"] == pytest.approx(note["verified_max_abs_logit_diff"] / v["logit_scale"])
    assert v["logit_scale"] > 0 and note["verified_max_rel_logit_diff"] <= v["tolerance"]


# --------------------------------------------------------------------------- 4. OS errors: one line, --debug


def test_os_errors_are_one_line(run_dir, tmp_path, capsys, monkeypatch):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"question": "caf\u00e9?"}\n'.encode("latin-1"))
    (tmp_path / "data-dir").mkdir()
    before = snapshot(tmp_path)
    refused(capsys, ["eval", "--task", "kv", "--data", latin1, "--out", tmp_path / "o", *EVAL], says="not UTF-8 text")
    refused(capsys, ["eval", "--task", "kv", "--data", tmp_path / "data-dir", "--out", tmp_path / "o", *EVAL],
            says="is a folder; --data takes a JSONL file")
    assert snapshot(tmp_path) == before

    (run_dir / constants.HEAD_SCORES_CSV).unlink()
    (run_dir / constants.HEAD_SCORES_CSV).mkdir()  # a folder where a file should be
    refused(capsys, ["train", run_dir, "--overwrite", *TRAIN], says="a folder was given where a file is expected")

    import pear_lens.artifact

    def denied(run_dir, model=None):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(run_dir) / constants.PEAR_JSON))

    monkeypatch.setattr(pear_lens.artifact, "load_artifact", denied)
    refused(capsys, ["eval", "--artifact", run_dir, "--out", tmp_path / "o", *EVAL],
            says="pear.json: permission denied; check its permissions")


@pytest.mark.parametrize("writer", ["figure", "safetensors"])
def test_a_file_too_large_is_named_not_called_a_bug(run_dir, tmp_path, capsys, monkeypatch, writer):
    import safetensors.torch
    from safetensors import SafetensorError

    import pear_lens.runs

    def too_large(*args, **kwargs):
        if writer == "figure":
            raise OSError(errno.EFBIG, "File too large", "training.html")
        raise SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(pear_lens.runs if writer == "figure" else safetensors.torch,
                        "save_figure" if writer == "figure" else "save_file", too_large)
    before = snapshot(tmp_path)
    err = refused(capsys, ["train", run_dir, "--heads", "0.1,2.3", "--overwrite", *TRAIN], says="file too large")
    assert "a bug" not in err and "ulimit -f" in err
    if writer == "safetensors":
        assert constants.COEFFICIENTS_SAFETENSORS in err  # the file being written, not the temporary one
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("device, says", [("gpu", "unknown device 'gpu'"), ("cuda", "sees no CUDA GPU")])
def test_a_device_this_torch_cannot_use_is_one_line(tmp_path, capsys, device, says):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    refused(capsys, ["discover", "--model", "tiny-llama", "--device", device, "--out", tmp_path / "r", "--no-png"],
            says=says)
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    from pear_lens.errors import PearLensError

    args = ["discover", "--model", "gpt-17", "--out", str(tmp_path / "r")]
    with pytest.raises(PearLensError, match="unknown model"):
        main([*args, "--debug"])
    with pytest.raises(PearLensError, match="unknown model"):
        main(["--debug", *args])
    monkeypatch.setenv("PEAR_LENS_DEBUG", "1")
    with pytest.raises(PearLensError, match="unknown model"):
        main(args)


# --------------------------------------------------------------------------- 6. permissions


def test_every_file_of_an_artifact_has_the_same_permissions(run_dir, tmp_path):
    out = tmp_path / "hf"
    assert main(["apply", str(run_dir), "--out", str(out)]) == 0
    for folder in (run_dir, out):
        modes = {p.name: p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}
        assert set(modes.values()) == {FILE_MODE}, modes
    assert {constants.COEFFICIENTS_SAFETENSORS, MARKER} <= {p.name for p in run_dir.iterdir()}
    assert "model.safetensors" in {p.name for p in out.iterdir()}
