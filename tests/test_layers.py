"""The package imports only downward: library layers in a stated order, commands on top, no circles.

Every ``import`` and ``from … import`` of a pear_lens module counts, at module level or inside a function
(a function-level import is a dependency that merely runs later). Imports under ``if TYPE_CHECKING:``
do not count: they never run, and annotating a parameter with a higher layer's type (``plots`` drawing a
``HeadScores``) is no dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from . import layers  # the order itself: tests/layers.py (docs/architecture.md is written from it)

PACKAGE = Path(__file__).resolve().parents[1] / "pear_lens"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _resolve(dotted: str) -> str | None:
    """The pear_lens module a dotted name points into ('' for the package itself)."""
    if dotted != "pear_lens" and not dotted.startswith("pear_lens."):
        return None
    name = dotted.removeprefix("pear_lens").lstrip(".")
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_block(node):
            for child in node.orelse:  # only the `else:` branch runs
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(m for a in node.names if (m := _resolve(a.name)) is not None)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:  # `from pear_lens import constants` imports the module pear_lens.constants
                target = _resolve(f"{node.module}.{a.name}")
                if target is not None:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    found.discard(module_name(path))
    found.discard("")  # `from pear_lens import __version__`: the package's own attributes
    return found


GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    layer = layers.layer_of(module)
    if layer is None:
        raise AssertionError(f"pear_lens.{module} is in no layer of tests/layers.py: place it in LAYERS")
    return layer


def test_the_parser_sees_function_level_and_package_imports():
    assert "convert" in GRAPH["models"]
    assert "constants" in GRAPH["artifact"]  # `from pear_lens import constants`
    assert "fingerprint" in GRAPH["artifact"]  # imported inside load_artifact
    assert "results" not in GRAPH["plots"]  # a TYPE_CHECKING import is no dependency


def test_every_module_has_a_layer():
    for module in GRAPH:
        if module:
            layer_of(module)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m))
def test_imports_go_only_downward(module):
    upward = sorted(t for t in GRAPH[module] if t and layer_of(t) > layer_of(module))
    assert not upward, f"pear_lens.{module} (layer {layer_of(module)}) imports higher layers: {upward}"


def test_no_import_circles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                circle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(f"pear_lens.{m}" for m in circle))
            if nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            walk(module)


def test_the_library_never_imports_a_command():
    for module, targets in GRAPH.items():
        if not module.startswith("commands"):
            assert not [t for t in targets if t.startswith("commands")], module
