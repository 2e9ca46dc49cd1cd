"""The studies' tests share the library tests' fixtures (tiny models, the seed, the runtime shape checks)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import load_script as _load_script
from tests.conftest import seed, smol, tiny, tiny_model  # noqa: F401  (fixtures, registered by name)

STUDIES = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """``studies/NAME.py`` imported afresh as a module (a study's command line)."""
    return _load_script(name, STUDIES)
