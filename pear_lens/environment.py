"""The versions a run folder records: everything that can change a number."""
from __future__ import annotations

import platform
import sys


def environment() -> dict[str, str]:
    """Versions of everything that can change a number."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("pear-lens", "torch", "transformers", "transformer-lens", "gguf", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out
