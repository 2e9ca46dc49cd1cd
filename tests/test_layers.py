"""The package imports only downward: library layers in a stated order, commands on top, no circles.

The rule is pyproject.toml's import-linter contracts (``lint-imports``, run here by
:func:`test_the_import_contracts_hold`, so ``make test`` and ``make test-fast`` check them); this file backs it with a scan of its own over the same layers
(tests/layers.py reads them from pyproject.toml), so a mistake in either shows.

Every ``import`` and ``from … import`` of a pear_lens module counts: at module level, inside a function
(a dependency that merely runs later) and under ``if TYPE_CHECKING:`` (a dependency of the types a reader
must follow; annotating with a higher layer's type makes the lower module know about the higher one).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from . import layers  # the order itself: tests/layers.py (docs/architecture.md is written from it)

PACKAGE = Path(__file__).resolve().parents[1] / "pear_lens"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


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
    assert "convert" in GRAPH["models.weights"]
    assert "constants" in GRAPH["artifact"]  # `from pear_lens import constants`
    assert "fingerprint" in GRAPH["artifact"]  # imported inside load_artifact
    assert "results" in GRAPH["agreement"]  # imported only under `if TYPE_CHECKING:`, and it counts
    assert "drawing" in GRAPH["results"]  # imported inside HeadScores.heatmap


def test_a_result_type_never_imports_the_figures_drawn_from_it():
    """Result types draw themselves with `drawing`, below them; `plots`, above them, draws result objects."""
    holders = ["results", "reweight", "recipe", "artifact", "evaluation.runner",
               *(m for m in GRAPH if m == "atlas" or m.startswith("atlas."))]
    assert set(holders) <= set(GRAPH)
    assert not [m for m in holders if "plots" in GRAPH[m]]
    assert "drawing" in GRAPH["reweight"] and "results" in GRAPH["plots"]


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


def test_commands_never_import_each_other():
    """Only the dispatcher ``commands.cli`` imports command modules; a command reuses library code instead."""
    for module, targets in GRAPH.items():
        if module.startswith("commands.") and module != "commands.cli":
            assert not [t for t in targets if t.startswith("commands")], module


def test_the_import_contracts_hold(capsys):
    """import-linter's verdict on pyproject.toml's contracts (layers, independence, no circles)."""
    from importlinter.cli import lint_imports

    code = lint_imports(config_filename=str(layers.PYPROJECT), no_cache=True)
    assert code == 0, capsys.readouterr().out[-3000:]


def test_the_scan_and_the_contracts_agree_on_the_modules():
    """Every module the scan sees is placed by the contracts, and every layer names a module that exists."""
    named = {name for layer in layers.LAYERS for name in layer}
    assert not [n for n in named if n not in GRAPH], "a layer names no module"
    assert "models.loaded" in named and "commands.cli" in named and "drawing" in named


ROOT = PACKAGE.parent
SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_500_lines(path):
    assert len(path.read_text().splitlines()) <= 500, f"{path.relative_to(ROOT)}: split it by idea"


def private_names_used(path: Path) -> list[str]:
    """``pear_lens`` names starting with one underscore that a file imports or reaches as attributes."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = {a.asname or a.name.split(".")[0]: a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
               for a in n.names if a.name.split(".")[0] == "pear_lens"}
    aliases |= {a.asname or a.name: f"{n.module}.{a.name}" for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "pear_lens" for a in n.names}
    found = [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             and (n.module or "").split(".")[0] == "pear_lens" for a in n.names
             if re.match(r"_[a-z]", a.name) or any(re.match(r"_[a-z]", part) for part in n.module.split("."))]
    for node in ast.walk(tree):  # pear_lens.x._private or an imported module's alias._private
        if isinstance(node, ast.Attribute) and re.match(r"_[a-z]", node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{aliases[base.id]}…{node.attr}")
    return found


def test_the_private_name_scan_sees_both_spellings(tmp_path):
    sample = tmp_path / "s.py"
    sample.write_text("import pear_lens.io\nfrom pear_lens.plots import _colour\npear_lens.io._chrome_path()\n")
    assert len(private_names_used(sample)) == 2


@pytest.mark.parametrize("path", [p for p in SOURCES if not p.is_relative_to(PACKAGE)],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_and_benchmarks_use_only_public_names(path):
    assert not private_names_used(path), f"{path.relative_to(ROOT)} uses private names of pear_lens"
