"""Printing never fails and inputs come in every form a user has (issue 37, items 7 and 8): a terminal that
cannot encode τ gets ASCII, never "a bug in pear_lens" after the artifact is written; a pipe, a FIFO or
/dev/fd/N is read as a file; a value echoed in a message is cut to a readable length; every public function
that takes a model takes a name, a folder or a loaded model."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

from pear_lens import constants, errors
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError, ascii_text, one_line, safe_output, shorten
from pear_lens.evaluation.tasks.kv import load_kv_jsonl
from pear_lens.prompt_task import PromptTask
from tests.conftest import tiny

DATA = Path(__file__).parent / "data"
TRAIN = ["--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("output") / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--quiet",
                 "--no-png", "--allow-weak-copy-task"]) == 0
    return run


# --------------------------------------------------------------------------- 7. printing never fails


def test_the_ascii_spelling_of_pear_lens_symbols():
    assert ascii_text("τ of L0.H1 → 0.95; Δπ ≥ 0, ρ = 0.3 [0.1, 0.5] × 2 … café") == \
        "tau of L0.H1 -> 0.95; dpi >= 0, rho = 0.3 [0.1, 0.5] x 2 ... cafe"
    assert ascii_text("漢") == "?"


@pytest.mark.parametrize("encoding", ["latin-1", "ascii", "cp1252", "utf-8"])
def test_a_stream_that_cannot_encode_gets_ascii_instead_of_an_error(encoding):
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding=encoding)
    with pytest.raises(UnicodeEncodeError) if encoding != "utf-8" else _nothing():
        print("τ", file=stream)
        stream.flush()
    raw.seek(0), raw.truncate()
    safe_output(stream)
    print("trained τ: Δπ → ρ é", file=stream)
    stream.flush()
    text = raw.getvalue().decode(encoding)
    if encoding == "utf-8":
        assert text == "trained τ: Δπ → ρ é\n"
    else:
        assert "trained tau: dpi -> rho" in text and text.isascii() == (encoding == "ascii")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_train_on_a_latin1_terminal_succeeds_and_prints_ascii(run_dir):
    env = {**os.environ, "PYTHONIOENCODING": "latin-1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pear_lens.commands.cli", "train", str(run_dir), "--top-k", "2",
                           *TRAIN], capture_output=True, env=env, timeout=600, cwd=ROOT)
    out, err = proc.stdout.decode("latin-1"), proc.stderr.decode("latin-1")
    assert proc.returncode == 0, err
    assert "a bug in pear_lens" not in err
    assert "trained tau for 2 heads" in out and "tau: L" in out and "τ" not in out
    assert json.loads((run_dir / constants.PEAR_JSON).read_text(encoding="utf-8"))["heads"]
    # an error on the same terminal is one line and exit 2, in ASCII
    proc = subprocess.run([sys.executable, "-m", "pear_lens.commands.cli", "train", str(run_dir), "--top-k", "2",
                           *TRAIN], capture_output=True, env=env, timeout=600, cwd=ROOT)
    err = proc.stderr.decode("latin-1")
    assert proc.returncode == 2 and "already holds an artifact" in err and len(err.strip().splitlines()) == 1, err


def test_a_reader_that_leaves_never_turns_success_into_failure(run_dir):
    """``pear-lens train ... | head -0``: stdout's pipe is closed before the command prints; it exited 2 with
    "Broken pipe; check the path" after writing its artifact."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (run_dir / constants.PEAR_JSON).unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "pear_lens.commands.cli", "train", str(run_dir), "--top-k", "2",
                             "--overwrite", *TRAIN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.close()  # the reader leaves at once
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 0, err
    assert "Broken pipe" not in err and "Exception ignored" not in err, err
    assert json.loads((run_dir / constants.PEAR_JSON).read_text(encoding="utf-8"))["heads"]


# --------------------------------------------------------------------------- 8. pipes, long values, model forms


def _content(item) -> dict:
    """An item's fields but its id (which names the file it came from)."""
    return {k: v for k, v in item.to_dict().items() if k != "item_id"}


def _fed(path_or_fd, text: str) -> threading.Thread:
    """A thread writing ``text`` into a FIFO path or a pipe's write end."""
    def write():
        if isinstance(path_or_fd, int):
            with os.fdopen(path_or_fd, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            with open(path_or_fd, "w", encoding="utf-8") as f:
                f.write(text)
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_and_dev_fd_are_read_as_data_files(tmp_path):
    text = (DATA / "kv_handmade.jsonl").read_text(encoding="utf-8")
    expected = [_content(it) for it in load_kv_jsonl(DATA / "kv_handmade.jsonl")]
    fifo = tmp_path / "items.jsonl"
    os.mkfifo(fifo)
    writer = _fed(str(fifo), text)
    assert [_content(it) for it in load_kv_jsonl(fifo)] == expected
    writer.join(5)
    r, w = os.pipe()  # what `--data <(cat items.jsonl)` hands over: /dev/fd/N
    writer = _fed(w, text)
    try:
        assert [_content(it) for it in load_kv_jsonl(f"/dev/fd/{r}")] == expected
    finally:
        writer.join(5)
        os.close(r)
    with pytest.raises(PearLensError, match="does not exist"):
        load_kv_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(PearLensError, match="is a folder"):
        load_kv_jsonl(tmp_path)


def test_a_task_file_from_a_pipe(tmp_path):
    r, w = os.pipe()
    writer = _fed(w, '{"prompt": "a b c", "answer": " d"}\n{"prompt": "e f", "answer": " g"}\n')
    try:
        task = PromptTask.from_jsonl(f"/dev/fd/{r}")
    finally:
        writer.join(5)
        os.close(r)
    assert len(task.prompts) == 2


def test_eval_reads_data_from_process_substitution(tmp_path, capsys):
    r, w = os.pipe()
    writer = _fed(w, (DATA / "kv_handmade.jsonl").read_text(encoding="utf-8"))
    out = tmp_path / "eval"
    try:
        code = main(["eval", "--task", "kv", "--data", f"/dev/fd/{r}", "--out", str(out), "--model", "tiny-llama",
                     "--quiet", "--batch-size", "8"])
    finally:
        writer.join(5)
        os.close(r)
    assert code == 0, capsys.readouterr().err
    items = pd.read_csv(out / "items.csv")
    assert len(items) == len((DATA / "kv_handmade.jsonl").read_text().splitlines())


def test_echoed_values_are_cut_to_a_readable_length():
    assert shorten("short") == "short" and shorten(3) == "3"
    long = "x" * 10_000_000
    cut = shorten(long)
    assert len(cut) <= errors.ECHO_LIMIT + 20 and "characters cut" in cut
    line, code = one_line(PearLensError(f"unknown model {long!r}; see `pear-lens models` for the names"))
    assert code == 2 and len(line) < errors.RUN_LIMIT + 100 and line.endswith("see `pear-lens models` for the names")
    assert len(str(PearLensError(f"bad value {long!r}; give a number"))) < errors.RUN_LIMIT + 50  # the API too
    path = "/a/long/but/real/path/" + "p" * 200 + "/file.jsonl"  # a long path still reads in full
    assert path in one_line(PearLensError(f"{path} does not exist; check the path"))[0]
    words = " ".join(["word"] * 2_000_000)  # a long value with spaces: the message is cut, its fix kept
    line, _ = one_line(PearLensError(f"bad value {words}; give a number"))
    assert len(line) <= errors.MESSAGE_LIMIT + 40 and line.endswith("; give a number")


def test_a_huge_command_line_value_gets_one_short_line(capsys):
    assert main(["discover", "--model", "m" * 5_000_000, "--out", "/nonexistent/x", "--quiet", "--no-png"]) == 2
    err = capsys.readouterr().err
    assert len(err) < 2 * errors.MESSAGE_LIMIT and len(err.strip().splitlines()) == 1, err[:500]


def test_every_public_function_that_takes_a_model_takes_a_name(run_dir, tmp_path):
    import pear_lens as pl
    from pear_lens.results import HeadScores

    scores = HeadScores.load(run_dir)
    model = tiny("llama")
    atlas = pl.head_atlas("tiny-llama", scores, ["previous_token"])
    assert atlas.to_dataframe()["previous_token"].notna().all()
    tokens = torch.tensor([[5, 6, 7]])
    with pl.reweighted(model, [(1, 2)], [0.5]) as bridge:
        by_object = bridge(tokens)
    with pl.reweighted("tiny-llama", [(1, 2)], [0.5]) as bridge:
        by_name = bridge(tokens)
    assert torch.allclose(by_object, by_name)
    from pear_lens.models.tiny import build_tiny

    hf_model, tok = build_tiny("llama")  # the same weights, as a local folder given as a Path
    hf_model.save_pretrained(tmp_path / "folder")
    tok.save_pretrained(tmp_path / "folder")
    with pl.reweighted(tmp_path / "folder", [(1, 2)], [0.5]) as bridge:
        assert torch.allclose(bridge(tokens), by_object, atol=1e-5)
    assert pl.intervention("prune", "tiny-llama", [(1, 2)]).label == "1 heads pruned"
    again = pl.rescore("tiny-llama", scores, progress=False)  # a discovery run's scores, rescanned by name
    assert again.per_prompt is not None and again.scores.shape == scores.scores.shape
