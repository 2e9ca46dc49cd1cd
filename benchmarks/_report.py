"""Print benchmark lines and keep them in ``figures/benchmarks/NAME.txt``.

The README quotes benchmark results only through these files (see
``studies/update_readme.py``), so every number there comes from a rerunnable script.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from pear_lens.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


class Bar:
    """A progress bar that shows nothing (the per-setting scans advance one)."""

    def update(self, n: int = 1) -> None:
        pass


def spread(n_layers: int, n_heads: int, count: int) -> list[tuple[int, int]]:
    """``count`` heads spread evenly over the layers: the subset a plain per-head loop is timed on."""
    layers = torch.linspace(0, n_layers - 1, count).round().long().tolist()
    return [(layer, (i * 4) % n_heads) for i, layer in enumerate(layers)]


def timed(fn):
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class Report:
    def __init__(self, name: str, command: str):
        self.path = ROOT / "figures" / "benchmarks" / f"{name}.txt"
        self.lines = [
            f"# command: {command}",
            f"# date: {datetime.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads",
        ]

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def save(self) -> Path:
        return atomic_write_text(self.path, "\n".join(self.lines) + "\n")


@contextlib.contextmanager
def kept_output(name: str, command: str) -> Iterator[None]:
    """Print as usual and also keep everything printed in ``figures/benchmarks/NAME.txt`` (on success)."""
    report = Report(name, command)
    buffer = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, s: str) -> int:
            buffer.write(s)
            return sys.__stdout__.write(s)

        def flush(self) -> None:
            sys.__stdout__.flush()

    with contextlib.redirect_stdout(Tee()):
        yield
    report.lines += buffer.getvalue().rstrip("\n").splitlines()
    report.save()
