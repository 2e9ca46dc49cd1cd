"""The intended layer order of pear_lens, bottom to top, as ``pyproject.toml``'s import-linter contracts state it.

``lint-imports`` (run by ``make test``) enforces those contracts; this module reads them, so that
tests/test_layers.py (its own AST scan, backing import-linter) and scripts/architecture.py (which writes
docs/architecture.md) use the one list. A layer of the main contract that has a layers contract of its own
(``models``, ``commands``) is replaced by that contract's layers, with the package itself on top of them.

A module may import its own layer's modules (without a circle) and any lower layer's. A name covers its
sub-package (``mediation`` is every ``pear_lens.mediation.*``); a module belongs to the longest name that
covers it (``commands.cli`` before ``commands``).
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PACKAGE = "pear_lens"


def _split(layer: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in re.split(r"[|:]", layer))


def read_layers(pyproject: Path = PYPROJECT) -> list[tuple[str, ...]]:
    """The layers of the contracts in ``pyproject``, bottom to top; names relative to ``pear_lens``."""
    contracts = tomllib.loads(pyproject.read_text())["tool"]["importlinter"]["contracts"]
    layered = {c["containers"][0]: c["layers"] for c in contracts if c["type"] == "layers"}
    out: list[tuple[str, ...]] = []
    for layer in reversed(layered[PACKAGE]):
        names = _split(layer)
        subs = [n for n in names if f"{PACKAGE}.{n}" in layered]
        if subs:
            if len(names) > 1:
                raise ValueError(f"{layer!r}: a package with its own layers contract must be a layer alone")
            (sub,) = subs
            out += [tuple(f"{sub}.{n}" for n in _split(s)) for s in reversed(layered[f"{PACKAGE}.{sub}"])]
        out.append(names)
    return out


LAYERS: list[tuple[str, ...]] = read_layers()
"""Bottom to top; module names relative to ``pear_lens``."""


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (relative to ``pear_lens``), or None if no layer covers it."""
    best = None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (i, prefix)
    return None if best is None else best[0]
