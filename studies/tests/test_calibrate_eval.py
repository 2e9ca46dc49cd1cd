"""studies/calibrate_eval.py on a tiny model: --tasks calibrates some context tasks, --resume the rest."""
from __future__ import annotations

import json

from .conftest import load_script


def test_tasks_then_resume_completes_the_entry_and_keeps_the_seconds(tmp_path):
    script, out = load_script("calibrate_eval"), tmp_path / "calibration.json"
    assert script.main(["--models", "tiny-llama", "--n", "2", "--out", str(out), "--tasks", "kv", "--quiet"]) == 0
    first = json.loads(out.read_text())["models"]["tiny-llama"]
    assert set(first["tasks"]) == {"closed-book", "kv"} and first["complete"] is False and first["seconds"] > 0
    assert script.main(["--models", "tiny-llama", "--n", "2", "--out", str(out), "--tasks", "mdqa", "counterfactual",
                        "--resume", "--quiet"]) == 0
    second = json.loads(out.read_text())["models"]["tiny-llama"]
    assert set(second["tasks"]) == {"closed-book", "kv", "mdqa", "counterfactual"} and second["complete"] is True
    assert second["tasks"]["kv"] == first["tasks"]["kv"]  # kept, not measured again
    assert second["seconds"] > first["seconds"]  # the earlier run's seconds carried over
