"""Two writers of one output, and signals at every stage (issue 37, items 4 and 5).

Faults are injected, not timed: a test wraps a step (building the parser, reading the config, loading the model,
writing a figure, each rename of the swap) so that it sends the process SIGINT or SIGTERM, raises, or kills it
outright, and then checks the exit code, the one line, every file that existed before, and that no hidden folder is
left beside the output.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pear_lens import constants
from pear_lens.commands import cli
from pear_lens.commands.cli import main
from pear_lens.output_lock import lock_path
from tests.cli_support import TRAIN, discover_and_train, snapshot

ATLAS = ["--no-png", "--quiet", "--needle.n-prompts", "2", "--needle.haystack-tokens", "16", "--n-boot", "1000",
         "--detectors", "sink"]
LINE = "nothing was left half-written and no earlier output was changed"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny-llama discovery run with an artifact; tests work on copies of it."""
    run = tmp_path_factory.mktemp("writers") / "run"
    return discover_and_train(run)


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def one_line(err: str, says: str) -> None:
    assert says in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (its signals and exit are its own)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=600, **kwargs)


# --------------------------------------------------------------------------- 4. one writer per output


def test_a_second_atlas_into_the_same_run_is_refused_naming_the_first(run_dir, tmp_path, capsys, monkeypatch):
    """The issue's case: two `atlas` runs into one folder both said "wrote". The second is started while the first
    computes; it exits 2 with one line naming the first, and the first's atlas is the one written."""
    import pear_lens.atlas

    real, second = pear_lens.atlas.head_atlas, {}

    def with_a_second_run(*args, **kwargs):
        second["result"] = subprocess.run(["pear-lens", "atlas", str(run_dir), *ATLAS, "--overwrite"],
                                          capture_output=True, text=True, timeout=600,
                                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
        return real(*args, **kwargs)

    monkeypatch.setattr(pear_lens.atlas, "head_atlas", with_a_second_run)
    assert main(["atlas", str(run_dir), *ATLAS]) == 0
    other = second["result"]
    assert other.returncode == 2, other.stderr
    one_line(other.stderr, f"{run_dir.resolve()} is being written by pear-lens atlas (pid {os.getpid()} on "
                           f"{socket.gethostname()}, started ")
    assert (run_dir / constants.HEAD_ATLAS_CSV).is_file()
    assert hidden(tmp_path) == []  # the lock went with its owner


@pytest.mark.parametrize("args", [["train", "{run}", "--overwrite", *TRAIN], ["ablate", "{run}", "--k", "1"],
                                  ["discover", "--model", "tiny-llama", "--out", "{run}", "--overwrite"],
                                  ["report", "{run}"]])
def test_every_command_writing_a_held_output_is_refused(run_dir, tmp_path, capsys, args):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pear_lens.output_lock import writing
        with writing(sys.argv[1], "pear-lens atlas"):
            print("held", flush=True)
            sys.stdin.read()
        """), str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        assert main([a.format(run=run_dir) for a in args]) == 2
        one_line(capsys.readouterr().err, f"is being written by pear-lens atlas (pid {holder.pid} on")
        assert snapshot(tmp_path) == before
    finally:
        holder.communicate("", timeout=60)
    assert hidden(tmp_path) == []


def test_the_python_run_report_is_refused_while_another_process_writes_the_run(run_dir):
    import pear_lens as pl
    from pear_lens.output_lock import OutputBusy

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pear_lens.output_lock import writing
        with writing(sys.argv[1], "pear-lens train"):
            print("held", flush=True)
            sys.stdin.read()
        """), str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusy, match="is being written by pear-lens train"):
            pl.run_report(run_dir)
        assert not (run_dir / constants.RUN_REPORT_HTML).exists()
    finally:
        holder.communicate("", timeout=60)
    assert pl.run_report(run_dir).is_file()  # once the other writer is done


def _lock_of(run_dir: Path, **record) -> Path:
    path = lock_path(run_dir)
    path.write_text(json.dumps({"command": "pear-lens atlas", "started": "2026-12-06T21:00:00Z", **record}))
    return path


def test_a_stale_lock_of_a_dead_process_is_named_and_taken_over(run_dir, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock_of(run_dir, pid=dead.pid, host=socket.gethostname())
    with pytest.warns(UserWarning, match=rf"taking over the stale lock .* \(pid {dead.pid} on .*which has ended"):
        assert main(["atlas", str(run_dir), *ATLAS]) == 0
    assert (run_dir / constants.HEAD_ATLAS_CSV).is_file() and hidden(tmp_path) == []


def test_a_lock_from_another_host_is_never_taken_over(run_dir, tmp_path, capsys):
    lock = _lock_of(run_dir, pid=1, host="another-machine")
    before = snapshot(tmp_path)
    assert main(["atlas", str(run_dir), *ATLAS]) == 2
    one_line(capsys.readouterr().err, f"(pid 1 on another-machine, started 2026-12-06T21:00:00Z), on another host; "
                                      f"if that run has ended, delete {lock}")
    assert snapshot(tmp_path) == before


def test_ablate_replaces_its_curve_only_with_overwrite(run_dir, tmp_path, capsys):
    (run_dir / constants.K_SWEEP_CSV).write_text("an earlier curve\n")
    before = snapshot(tmp_path)
    assert main(["ablate", str(run_dir), "--k", "1", "--control-draws", "0", "--quiet", "--no-png"]) == 2
    one_line(capsys.readouterr().err, f"already holds a K sweep ({constants.K_SWEEP_CSV}); pass --overwrite")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- 5. signals at every stage


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_starting_is_one_line(signum, code):
    """Ctrl-C in the first second used to print a 35-line traceback (importing the commands builds the parser)."""
    done = python(f"""
        import os, sys
        from pear_lens.commands import cli
        real = cli.build_parser
        def build_parser():
            os.kill(os.getpid(), {int(signum)})
            return real()
        cli.build_parser = build_parser
        sys.exit(cli.main(["models"]))
        """)
    assert done.returncode == code, done.stderr
    how = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
    one_line(done.stderr, f"pear-lens: {how}; {LINE}")


def _signal(signum):
    def send(*args, **kwargs):
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal was not delivered")  # never reached: the handler raises first
    return send


STAGES = {  # where the signal is sent during `train RUN --overwrite`: module, object in it (or ""), what it calls
    "reading the config": ("pear_lens.commands.cli", "", "from_namespace"),
    "loading the model": ("pear_lens.models.loaded", "", "load_model"),
    "training": ("pear_lens.workflow", "", "train_coefficients"),
    "copying the run beside itself": ("shutil", "", "copy2"),
    "writing a figure": ("pear_lens.runs", "", "save_figure"),
    "writing the artifact": ("pear_lens.artifact", "Artifact", "save"),
}


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_signal_at_any_stage_of_train_overwrite_leaves_the_run_as_it_was(run_dir, tmp_path, capsys, monkeypatch,
                                                                          stage, signum, code):
    import importlib

    module, inside, name = STAGES[stage]
    target = importlib.import_module(module)
    monkeypatch.setattr(getattr(target, inside) if inside else target, name, _signal(signum))
    before = snapshot(tmp_path)
    assert main(["train", str(run_dir), "--heads", "0.1,2.3", "--overwrite", *TRAIN]) == code
    how = "interrupted" if signum == signal.SIGINT else "stopped by SIGTERM"
    one_line(capsys.readouterr().err, f"pear-lens train: {how}; {LINE}")
    assert snapshot(tmp_path) == before  # byte-identical, no stage, old copy or lock beside it


WRITERS = {  # other writing commands: (arguments, where the signal is sent: module, object in it (or ""), name)
    "discover, scoring": (["discover", "--model", "tiny-llama", "--out", "{tmp}/new", "--settings", "4x8", "--quiet",
                           "--no-png", "--allow-weak-copy-task"], ("pear_lens.mediation", "", "score_heads")),
    "discover, writing the scores": (["discover", "--model", "tiny-llama", "--out", "{tmp}/new", "--settings", "4x8",
                                      "--quiet", "--no-png", "--allow-weak-copy-task"],
                                     ("pear_lens.scores_folder", "", "save_safetensors")),
    "discover --overwrite, writing the heatmap": (["discover", "--model", "tiny-llama", "--out", "{run}", "--settings",
                                                   "4x8", "--quiet", "--no-png", "--allow-weak-copy-task",
                                                   "--overwrite"], ("pear_lens.runs", "", "save_figure")),
    "atlas, running the detectors": (["atlas", "{run}", *ATLAS], ("pear_lens.atlas", "", "head_atlas")),
    "atlas, writing its tables": (["atlas", "{run}", *ATLAS], ("pear_lens.atlas", "HeadAtlas", "save")),
    "atlas, drawing its figures": (["atlas", "{run}", *ATLAS], ("pear_lens.figure_files", "", "save_figure")),
    "apply, writing the model": (["apply", "{run}", "--out", "{tmp}/hf"], ("pear_lens.commands.apply", "",
                                                                            "save_folded")),
}


@pytest.mark.parametrize("case", list(WRITERS))
def test_sigterm_while_another_command_writes_leaves_everything_as_it_was(run_dir, tmp_path, capsys, monkeypatch,
                                                                         case):
    """SIGTERM while `atlas` wrote used to leave a hidden partial copy that nothing removed."""
    import importlib

    args, (module, inside, name) = WRITERS[case]
    target = importlib.import_module(module)
    monkeypatch.setattr(getattr(target, inside) if inside else target, name, _signal(signal.SIGTERM))
    before = snapshot(tmp_path)
    assert main([a.format(run=run_dir, tmp=tmp_path) for a in args]) == 143
    one_line(capsys.readouterr().err, f"pear-lens {args[0]}: stopped by SIGTERM; {LINE}")
    assert snapshot(tmp_path) == before


def _replace_then(act: str, which: int):
    """``os.replace`` that does ``act`` right after its ``which``-th call of a swap (1: the old folder moved aside;
    the stage is moved in by the 2nd)."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        swap = ".pear-stage." in Path(src).name or ".pear-old." in Path(dst).parent.name  # not a file's own rename
        if act == "raise" and swap and len(calls) + 1 == which:
            calls.append(src)
            raise KeyboardInterrupt  # the second rename fails
        real(src, dst, *args, **kwargs)
        if swap:
            calls.append(src)
            if len(calls) == which and act != "raise":
                os.kill(os.getpid(), {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}[act])
    return replace


@pytest.mark.parametrize("act", ["SIGTERM", "SIGINT"])
def test_a_signal_between_the_two_renames_waits_for_the_swap(run_dir, tmp_path, capsys, monkeypatch, act):
    """SIGTERM during `train --overwrite`'s swap used to leave the run at a hidden name. Now the swap finishes (the
    signal waits for the second rename), the run holds the new training, and nothing hidden is left."""
    import pear_lens.io
    from pear_lens.artifact import load_artifact

    discovery = {k: v for k, v in snapshot(tmp_path).items() if Path(k).name in (
        constants.HEAD_SCORES_CSV, constants.DISCOVERY_JSON)}
    monkeypatch.setattr(pear_lens.io.os, "replace", _replace_then(act, 1))
    assert main(["train", str(run_dir), "--heads", "0.1,2.3", "--overwrite", *TRAIN]) == (143 if act == "SIGTERM"
                                                                                           else 130)
    capsys.readouterr()
    monkeypatch.undo()
    after = snapshot(tmp_path)
    assert {k: after[k] for k in discovery} == discovery
    assert [tuple(h) for h in load_artifact(run_dir).heads] == [(0, 1), (2, 3)]  # the new training
    assert hidden(tmp_path) == []


def test_a_failed_second_rename_puts_the_old_run_back(run_dir, tmp_path, capsys, monkeypatch):
    import pear_lens.io

    before = snapshot(tmp_path)
    monkeypatch.setattr(pear_lens.io.os, "replace", _replace_then("raise", 2))
    assert main(["train", str(run_dir), "--heads", "0.1,2.3", "--overwrite", *TRAIN]) == 130
    one_line(capsys.readouterr().err, f"pear-lens train: interrupted; {LINE}")
    assert snapshot(tmp_path) == before


KILLED = """
    import os, sys
    import pear_lens.io, pear_lens.runs
    from pear_lens.commands.cli import main
    real = os.replace
    def replace(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if ".pear-old." in os.path.basename(os.path.dirname(dst)):
            os._exit(137)  # SIGKILL between the two renames: nothing can run after it
    def save_figure(*args, **kwargs):
        os._exit(137)  # SIGKILL while writing
    if sys.argv[1] == "swap":
        pear_lens.io.os.replace = replace
    else:
        pear_lens.runs.save_figure = save_figure
    main(["train", sys.argv[2], "--heads", "0.1,2.3", "--overwrite", "--steps", "2", "--batch-size", "4",
          "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"])
    """


@pytest.mark.parametrize("where", ["swap", "writing"])
def test_what_a_killed_run_left_is_cleaned_up_by_the_next_run_on_that_path(run_dir, tmp_path, capsys, where):
    """SIGKILL cannot be handled: between the renames it leaves the run aside, while writing a stage folder. The next
    command on the path (here one refused at once) puts the run back and removes the rest, saying so."""
    before = snapshot(tmp_path)
    done = python(KILLED, where, str(run_dir))
    assert done.returncode == 137, done.stderr
    left = hidden(tmp_path)
    assert left and all(".pear-" in name for name in left), left
    assert run_dir.exists() == (where == "writing")
    with pytest.warns(UserWarning) as said:
        assert main(["discover", "--model", "tiny-llama", "--out", str(run_dir)]) == 2
    one_line(capsys.readouterr().err, "already exists and is not empty")
    messages = " ".join(str(w.message) for w in said)
    assert "left by a killed run" in messages and (where == "writing" or f"put back {run_dir}" in messages)
    assert snapshot(tmp_path) == before
