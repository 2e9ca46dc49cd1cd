"""docs/architecture.md is written from the code (tests/layers.py and the module docstrings), so it cannot drift."""
from __future__ import annotations

from .conftest import load_script


def test_architecture_page_is_current(capsys):
    assert load_script("architecture").main(["--check"]) == 0, capsys.readouterr().err


def test_the_page_lists_every_module_of_the_package():
    architecture = load_script("architecture")
    page = architecture.render()
    for path in architecture.PACKAGE.rglob("*.py"):
        name = architecture.module_name(path)
        if name:
            assert f"[`{name}`](../{path.relative_to(architecture.ROOT).as_posix()})" in page
