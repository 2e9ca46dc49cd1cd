"""The keyed stage cache: one value per key, and the mismatch rule the caller states (recompute or refuse)."""
from __future__ import annotations

import gzip
import json
from enum import Enum
from pathlib import Path

import pytest

from pear_lens.errors import PearLensError
from pear_lens.io import as_json
from pear_lens.stage_cache import OnMismatch, cached_stage, lookup, read_record, write_record


class Colour(Enum):
    RED = "red"


def test_as_json_is_what_json_reads_back():
    assert as_json({"heads": [(1, 2)], "path": Path("/a/b"), "colour": Colour.RED, "n": 3}) == \
        {"heads": [[1, 2]], "path": "/a/b", "colour": "red", "n": 3}


@pytest.mark.parametrize("name", ["stage.json", "stage.json.gz"])
def test_a_stage_runs_once_per_key_and_its_seconds_are_the_first_runs(tmp_path, name):
    calls = []

    def compute():
        calls.append(1)
        return {"tau": (1.5, 0.5)}

    path = tmp_path / name
    value, seconds, ran = cached_stage(path, {"heads": [(0, 1)]}, compute)
    assert ran and value == {"tau": [1.5, 0.5]}
    again, seconds_again, ran_again = cached_stage(path, {"heads": [[0, 1]]}, compute)  # a tuple and a list: one key
    assert (again, seconds_again, ran_again) == (value, seconds, False) and len(calls) == 1
    if name.endswith(".gz"):
        assert json.loads(gzip.decompress(path.read_bytes()))["key"] == {"heads": [[0, 1]]}


def test_another_key_recomputes_by_default_and_is_refused_when_told(tmp_path):
    path = tmp_path / "stage.json"
    cached_stage(path, {"seed": 0, "n": 5}, lambda: 1)
    assert cached_stage(path, {"seed": 1, "n": 5}, lambda: 2)[:1] == (2,)  # recompute: the file is replaced
    with pytest.raises(PearLensError, match=r"another key \(seed differ\)"):
        cached_stage(path, {"seed": 0, "n": 5}, lambda: 3, on_mismatch=OnMismatch.REFUSE)
    assert read_record(path)["value"] == 2  # a refused stage leaves the saved record as it was


def test_lookup_returns_the_whole_record_or_none(tmp_path):
    path = tmp_path / "out.json.gz"
    assert lookup(path, {"a": 1}, "refuse") is None
    write_record(path, {"key": {"a": 1}, "outputs": ["x", "ü"]})
    assert lookup(path, {"a": 1}, "refuse") == {"key": {"a": 1}, "outputs": ["x", "ü"]}
    assert path.read_bytes() == (write_record(path, read_record(path)) or path).read_bytes()  # same record, same bytes


def test_a_cut_record_is_named_not_a_traceback(tmp_path):
    path = tmp_path / "out.json.gz"
    write_record(path, {"key": {"a": 1}, "value": list(range(1000))})
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(PearLensError, match="not a readable stage record"):
        lookup(path, {"a": 1}, OnMismatch.RECOMPUTE)
