"""The README is generated from files (never typed by hand), and its quick start runs."""
from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from .conftest import load_script

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


def test_verdicts_read_the_summary_table(tmp_path):
    module = load_script("update_readme")
    rows = ["model,task,condition,gold_position,n,accuracy,ci_low,ci_high,delta_vs_baseline,p_vs_baseline,setup",
            "m,kv,baseline,all,300,0.40,0.3,0.5,,,s", "m,kv,PEAR,all,300,0.45,0.4,0.5,0.05,0.01,s",
            "m,kv,PEAR,0,50,0.9,0.8,1.0,0.2,0.001,s",  # a gold-position row: not the overall verdict
            "m,kv,random-K seed 0,all,300,0.41,0.3,0.5,0.01,0.6,s", "m,kv,random-K seed 1,all,300,0.46,0.4,0.5,0.06,0.02,s",
            "m,closed-book,baseline,all,300,0.5,0.4,0.6,,,s", "m,closed-book,PEAR,all,300,0.3,0.2,0.4,-0.2,1e-6,s",
            "m,mdqa,baseline,all,300,0.5,0.4,0.6,,,s", "m,mdqa,PEAR,all,300,0.49,0.4,0.6,-0.01,0.8,s"]
    csv = tmp_path / "summary.csv"
    csv.write_text("\n".join(rows) + "\n")
    lines = module._verdicts(csv)
    assert "- m, kv: PEAR helps, +5.0 points (p = 0.01); within the random-K controls' range (+1.0 to +6.0)." in lines
    assert "- m, closed-book: knowledge lost, -20.0 points (p = 1e-06)." in lines
    assert "- m, mdqa: no significant change, -1.0 points (p = 0.8)." in lines
