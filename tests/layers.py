"""The intended layer order of pear_lens, bottom to top: the one list that tests/test_layers.py enforces
and scripts/architecture.py writes into docs/architecture.md.

A module may import its own layer's modules (without a circle) and any lower layer's. A name covers its
sub-package (``mediation`` is every ``pear_lens.mediation.*``); a module belongs to the longest name that
covers it (``commands.cli`` before ``commands``).
"""
from __future__ import annotations

LAYERS: list[tuple[str, ...]] = [
    # vocabulary and infrastructure: no pear_lens imports but each other
    ("errors", "constants", "hooks", "environment"),
    ("io", "config", "families", "fingerprint", "metrics"),
    # weights on disk and in memory
    ("artifact",),
    ("convert",),
    ("models",),
    ("proxy_task",),
    # the run folder's files (plain tables and records; the result types below read theirs through it)
    ("runs",),
    # results and how they are compared and drawn
    ("agreement",),
    ("plots",),
    ("results",),
    ("compare",),
    # the methods
    ("mediation",),
    ("atlas",),
    ("reweight",),
    ("k_sweep", "training_cache", "copy_check"),
    ("evaluation",),
    # commands, in the order they call each other; cli dispatches to all of them
    ("commands.discover", "commands.compare", "commands.atlas"),
    ("commands.train",),
    ("commands.apply", "commands.ablate", "commands.eval"),
    ("commands.demo", "commands.evaluate_all"),
    ("commands.cli", "commands"),
]
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
