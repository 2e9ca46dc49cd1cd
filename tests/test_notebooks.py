"""Every notebook runs top to bottom (FAST mode), and committed notebooks carry no outputs.

The kernel is this interpreter (the project's .venv), registered under its own
name in a temporary Jupyter path, so a notebook can never pick up another Python.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from .conftest import load_script

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "pear-lens"
CELL_TIMEOUT_S = 1800  # a hang guard; FAST cells take seconds to a few minutes


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_five_notebooks_exist():
    names = [p.name for p in notebook_paths()]
    assert names == ["01_discover_heads.ipynb", "02_reweight_and_fold.ipynb", "03_compare_families.ipynb",
                     "04_head_atlas.ipynb", "05_your_own_task.ipynb"]


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebooks_have_no_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; run `python scripts/strip_notebooks.py`"
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "PEAR_NOTEBOOK_FAST" in "".join(first_code["source"]), "the first code cell must be the parameters"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernel spec named KERNEL that runs this interpreter, in a private Jupyter path."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name=KERNEL, display_name="pear_lens (test)", prefix=str(prefix))
    spec = prefix / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json"
    argv = json.loads(spec.read_text())["argv"]
    assert Path(argv[0]).resolve() == Path(sys.executable).resolve()
    return {"JUPYTER_PATH": str(prefix / "share" / "jupyter")}


@pytest.mark.notebook
@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, kernel_env, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in {**kernel_env, "PEAR_NOTEBOOK_FAST": "1"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(tmp_path)}})  # run where it may write freely
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    print(f"{path.name}: {time.perf_counter() - t0:.0f} s in FAST mode")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_strip_script_removes_outputs_and_check_mode_reports_them(tmp_path):
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    strip = load_script("strip_notebooks")
    path = tmp_path / "x.ipynb"
    cell = new_code_cell("1 + 1", execution_count=3, outputs=[new_output("execute_result", {"text/plain": "2"},
                                                                         execution_count=3)])
    cell.metadata["execution"] = {"iopub.execute_input": "2025-01-01T00:00:00Z"}
    nbformat.write(new_notebook(cells=[cell]), path)
    assert strip.main(["--check", str(path)]) == 1
    assert strip.main([str(path)]) == 0
    assert strip.main(["--check", str(path)]) == 0
    clean = nbformat.read(path, as_version=4).cells[0]
    assert clean.outputs == [] and clean.execution_count is None and "execution" not in clean.metadata
    assert clean.source == "1 + 1"
