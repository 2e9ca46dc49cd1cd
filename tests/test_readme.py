"""The README is generated from files (never typed by hand), and its quick start runs."""
from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"


def test_readme_blocks_match_the_files_they_are_generated_from():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "update_readme.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert QUICKSTART.read_text().strip() in (ROOT / "README.md").read_text()


def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
    code = QUICKSTART.read_text()
    assert '"smollm2-135m-instruct"' in code  # the README shows the real default model...
    script = tmp_path / "quickstart.py"
    script.write_text(code.replace('"smollm2-135m-instruct"', '"tiny-llama"'))  # ...the unit test a tiny one
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "heatmap.html").exists()
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "smollm2-pear")
    assert folded.config.pear_lens_folded["heads"]
