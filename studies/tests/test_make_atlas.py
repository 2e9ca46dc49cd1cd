"""The published three-family atlas tables are what ``studies/make_atlas.py`` computes from the committed atlases."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


def test_published_atlas_tables_are_what_the_script_computes(tmp_path):
    committed = ROOT / "figures" / "atlas_summary.csv"
    if not committed.exists():
        pytest.fail("figures/atlas_summary.csv is missing: run studies/make_atlas.py")
    assert load_script("make_atlas").main(["--out", str(tmp_path), "--no-png"]) == 0
    for name in ("atlas_summary.csv", "atlas_roles.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / name), pd.read_csv(ROOT / "figures" / name))
