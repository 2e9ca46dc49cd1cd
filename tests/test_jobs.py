"""A study as jobs (pear_lens.jobs): the same bytes under every executor, a killed worker's job rerun from scratch
and never accepted half-written, two launchers running each job once, failures named with their last line.

The study is tests/jobs_study.py: four head scans of tiny-llama and a job that can stall halfway or fail.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pear_lens.errors import PearLensError
from pear_lens.jobs import ExecutorOptions, Job, Study, run_job, run_study, study_status
from tests import jobs_study as S

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("scans/s0.json", "scans/s1.json", "scans/s2.json", "scans/s3.json", "slow.txt", "report.json")


def _results(root: Path) -> dict[str, bytes]:
    """Every file of the study that is a result: outputs, receipts, the job list and the report (not the run logs
    or the engines' logs, which say where and when)."""
    keep = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(("jobs/.runs/", "jobs/.logs/")) and rel != "completions.log" \
                and ".pear-lock" not in rel:
            keep[rel] = p.read_bytes()
    return keep


def _wait_for(path: Path, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _launch(root: Path, *args: str) -> subprocess.Popen:
    """A launcher in its own process: run_study on tests/jobs_study's study (args: stall name, executor)."""
    code = ("import sys; from pathlib import Path; from tests import jobs_study as S; from pear_lens.jobs import "
            "run_study; r = run_study(S.study(Path(sys.argv[1]), stall=sys.argv[2]), executor=sys.argv[3], "
            "threads=1); print(r); S.report(Path(sys.argv[1]))")
    return subprocess.Popen([sys.executable, "-c", code, str(root), *args], cwd=ROOT,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # two engines start (submitit's subprocesses, a local Ray): about a minute
def test_every_executor_writes_the_same_bytes(tmp_path):
    runs = {}
    for name, opts in {"local": ExecutorOptions(threads=1),
                       "submitit-local": ExecutorOptions(executor="submitit-local", workers=2, threads=1),
                       "ray": ExecutorOptions(executor="ray", workers=2, threads=1)}.items():
        root = tmp_path / name
        result = run_study(S.study(root), opts)
        assert result.status.complete, str(result)
        assert not result.lost_workers
        S.report(root)
        assert S.completions(root) == sorted(["slow"] + [f"scan_s{s}" for s in S.SEEDS]), name  # each job once
        runs[name] = _results(root)
    assert set(runs["local"]) >= {*RESULTS, "jobs/study.json", "jobs/scan_s0.json", "jobs/slow.json"}
    assert runs["submitit-local"] == runs["local"]
    assert runs["ray"] == runs["local"]
    # two workers did run side by side: the run logs name both
    workers = {(S.json.loads(p.read_text())["worker"]) for p in (tmp_path / "ray" / "jobs" / ".runs").glob("*.json")}
    assert workers == {"1/2", "2/2"}


def test_a_killed_worker_leaves_no_output_that_counts_and_the_next_launch_reruns_it(tmp_path):
    root = tmp_path / "study"
    (root).mkdir()
    (root / "hold").write_text("")  # the slow job waits while this file exists
    p = _launch(root, "hold", "local")
    _wait_for(root / "hold.started")
    os.kill(p.pid, signal.SIGKILL)  # mid-job: its output half written, its receipt not
    p.wait()
    assert (root / "slow.txt").read_text() == "first half\n"
    states = {r.job: r.state for r in study_status(S.study(root)).rows}
    assert states["slow"] == "pending"  # the half output does not count
    assert all(states[f"scan_s{s}"] == "done" for s in S.SEEDS)

    (root / "hold").unlink()
    result = run_study(S.study(root, stall="hold"), threads=1)
    assert result.status.complete
    assert (root / "slow.txt").read_text() == "first half\nsecond half\n"
    assert S.completions(root) == sorted(["slow"] + [f"scan_s{s}" for s in S.SEEDS])  # none ran twice to the end


@pytest.mark.slow  # submitit starts two worker processes; Ray starts a local cluster
@pytest.mark.parametrize("executor", ["submitit-local", "ray"])
def test_a_killed_worker_s_job_is_run_again_in_the_same_launch(tmp_path, executor):
    """submitit: the other worker, waiting for the held job, takes it over; Ray: also retries the lost task."""
    root = tmp_path / "study"
    root.mkdir()
    (root / "hold").write_text("")
    box = {}
    t = threading.Thread(target=lambda: box.update(r=run_study(
        S.study(root, stall="hold"), executor=executor, workers=2, threads=1)), daemon=True)
    t.start()
    try:
        _wait_for(root / "hold.started")
        os.kill(int((root / "hold.started").read_text()), signal.SIGKILL)  # the worker running the slow job
        (root / "hold.started").unlink()
    finally:
        (root / "hold").unlink()  # whatever happened, the study can finish
    t.join(timeout=300)
    assert not t.is_alive()
    result = box["r"]
    assert result.status.complete, str(result)
    if executor == "submitit-local":  # Ray retried the task in a new process: no worker was lost for good
        assert len(result.lost_workers) == 1 and "worker" in result.lost_workers[0]
    assert (root / "slow.txt").read_text() == "first half\nsecond half\n"
    assert S.completions(root).count("slow") == 1


def test_two_launchers_at_once_run_every_job_exactly_once(tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    (root / "hold").write_text("")
    a, b = _launch(root, "hold", "local"), _launch(root, "hold", "local")
    _wait_for(root / "hold.started")
    time.sleep(1.0)  # the other launcher reaches the held job and waits for it
    (root / "hold").unlink()
    outs = [a.communicate(timeout=300)[0], b.communicate(timeout=300)[0]]
    assert a.returncode == 0 and b.returncode == 0, outs
    assert S.completions(root) == sorted(["slow"] + [f"scan_s{s}" for s in S.SEEDS])
    for out in outs:
        assert "5 jobs: 5 done" in out


def test_a_failing_job_is_reported_with_its_last_line_and_does_not_stop_the_others(tmp_path):
    root = tmp_path / "study"
    result = run_study(S.study(root, fail=True), threads=1)
    rows = {r.job: r for r in result.status.rows}
    assert rows["slow"].state == "failed"
    assert rows["slow"].detail == "line 2 of the message"
    assert all(rows[f"scan_s{s}"].state == "done" for s in S.SEEDS)
    assert "failed   slow: line 2 of the message" in str(result)
    fixed = run_study(S.study(root), threads=1)  # the job fixed: it runs, its failure record goes
    assert fixed.status.complete
    assert not (root / "jobs" / "slow.failed.json").exists()


def test_a_changed_job_or_a_damaged_output_is_refused_and_left_as_it_is(tmp_path):
    root = tmp_path / "study"
    assert run_study(S.study(root), threads=1).status.complete
    before = (root / "scans" / "s0.json").read_bytes()
    changed = Study(root, [Job("scan_s0", "tests.jobs_study:scan", {"seed": 5, "out": "scans/s0.json"},
                               outputs=("scans/s0.json",))])
    status = run_study(changed, threads=1).status
    assert status.rows[0].state == "changed" and "kwargs" in status.rows[0].detail
    assert (root / "scans" / "s0.json").read_bytes() == before

    (root / "scans" / "s1.json").write_text("{}")
    study = S.study(root)
    row = {r.job: r for r in run_study(study, threads=1).status.rows}["scan_s1"]
    assert row.state == "damaged" and "scans/s1.json" in row.detail
    assert (root / "scans" / "s1.json").read_text() == "{}"  # the user's edit is not overwritten


def test_a_running_job_is_named_running(tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    (root / "hold").write_text("")
    p = _launch(root, "hold", "local")
    try:
        _wait_for(root / "hold.started")
        rows = {r.job: r.state for r in study_status(S.study(root)).rows}
        assert rows["slow"] == "running"
    finally:
        (root / "hold").unlink()
        p.communicate(timeout=300)


def test_the_jobs_command_reports_and_runs_a_saved_study(tmp_path, capsys):
    from pear_lens.commands.cli import main

    root = tmp_path / "study"
    S.study(root).save()
    assert main(["jobs", str(root)]) == 0
    assert "5 jobs: 5 pending" in capsys.readouterr().out
    assert main(["jobs", str(root), "--run", "--threads", "1"]) == 0
    assert "5 jobs: 5 done" in capsys.readouterr().out
    S.study(root, fail=True).save()  # the same study, its slow job now failing: a new key, the receipt refuses
    assert main(["jobs", str(root)]) == 2
    captured = capsys.readouterr()
    assert "changed" in captured.out and "1 job changed" in captured.err


def test_a_missing_engine_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(PearLensError, match=r"pip install 'pear_lens\[slurm\]'"):
        run_study(S.study(tmp_path), executor="slurm")
    with pytest.raises(PearLensError, match=r"pip install 'pear_lens\[ray\]'"):
        run_study(S.study(tmp_path), executor="ray")


@pytest.mark.parametrize("bad, match", [
    ({"executor": "local", "workers": 2}, "one job after another"),
    ({"executor": "slurm", "gpus_per_worker": 0.5}, "fractional"),
    ({"executor": "local", "ray_address": "x:1"}, "--ray-address"),
    ({"workers": 0}, "at least 1"),
])
def test_contradictory_executor_options_are_refused(bad, match):
    with pytest.raises(PearLensError, match=match):
        ExecutorOptions(**bad)


def test_jobs_are_checked_when_built(tmp_path):
    with pytest.raises(PearLensError, match="letters, digits"):
        Job("a b", "m:f", outputs=("x",))
    with pytest.raises(PearLensError, match="inside the study folder"):
        Job("a", "m:f", outputs=("/abs",))
    with pytest.raises(PearLensError, match="names no output"):
        Job("a", "m:f")
    with pytest.raises(PearLensError, match="more than one job"):
        Study(tmp_path, [Job("a", "m:f", outputs=("x",)), Job("b", "m:f", outputs=("x",))])
    out = run_job(tmp_path, Job("a", "no_such_module:f", outputs=("x",)))
    assert out.result == "failed" and "cannot import the job function" in out.error
