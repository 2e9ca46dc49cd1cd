"""What the command-line fault tests share: a tiny trained run, a byte snapshot of a folder, and the check that a
command was refused in one line."""
from __future__ import annotations

from pathlib import Path

from pear_lens.commands.cli import main

TRAIN = ["--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png"]
"""A training of a few seconds on a tiny model."""


def discover(run: Path, model: str = "tiny-llama", settings: str = "4x8") -> Path:
    """A discovery run of ``model`` on the proxy ``settings``, in ``run`` (seconds on a tiny model)."""
    assert main(["discover", "--model", model, "--out", str(run), "--settings", settings, "--quiet",
                 "--no-png", "--allow-weak-copy-task"]) == 0
    return run


def discover_and_train(run: Path, model: str = "tiny-llama") -> Path:
    """A discovery run of ``model`` with an artifact of its top two heads, in ``run``."""
    discover(run, model)
    assert main(["train", str(run), "--top-k", "2", *TRAIN]) == 0
    return run


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root``, hidden ones included (folders as None), with its bytes."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(capsys, args, *, says: str, code: int = 2) -> str:
    """Run the CLI, expect ``code`` and one line (no traceback) holding ``says``."""
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err
