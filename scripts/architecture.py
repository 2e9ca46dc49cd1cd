"""Write docs/architecture.md: pear_lens's layer order and one line per module, read off the code.

    python scripts/architecture.py           # rewrite docs/architecture.md
    python scripts/architecture.py --check   # exit 1 if it is stale (tests/test_architecture.py runs this check)

The layers are pyproject.toml's import-linter contracts, as tests/layers.py reads them (`lint-imports` and
tests/test_layers.py enforce them on every import); each module's
line is the first line of its docstring, each notebook's its title. Nothing on the page is typed by hand, so a
renamed, moved or re-described module shows up as a stale page, not as a wrong one.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGE = ROOT / "pear_lens"

FOLDERS = {
    "studies": "our experiments: users of the library, beside it and never installed with it (`pear_lens` never "
               "imports them: an import-linter contract); run from the repository root as `python -m studies.NAME`, "
               "they write the README's results, `docs/`, `figures/` and the calibration data; their tests are in "
               "`studies/tests/`",
    "scripts": "tools that keep the repository itself in order; not installed with the package",
    "benchmarks": "speed and exactness, each measured side by side in one run; their output is kept in "
                  "`figures/benchmarks/`",
    "notebooks": "tutorials, executed top to bottom (fast mode) by `tests/test_notebooks.py`; committed without "
                 "outputs",
    "examples": "`quickstart.py`, the README's quick start, shown there verbatim and run by `studies/tests/test_readme.py`; "
                "`ioi_task.py`, an indirect-object task of your own (and its `ioi_task.jsonl`), read by a test, a "
                "benchmark and notebook 05",
    "docs": "the pages the README links to",
}
"""The folders beside the package, and what they are (scripts, benchmarks and notebooks list each file)."""


def _layers():
    """tests/layers.py, loaded by path (tests/ is no installed package)."""
    spec = importlib.util.spec_from_file_location("pear_lens_layers", ROOT / "tests" / "layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(path: Path) -> str:
    """The first sentence of a Python file's docstring (an error names the file if it has none)."""
    doc = ast.get_docstring(ast.parse(path.read_text(), str(path)))
    if not doc:
        raise SystemExit(f"{path.relative_to(ROOT)} has no docstring: its first line is its line in {PAGE.name}")
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    line = re.match(r"(.*?[^.]\.)(?:\s|$)", paragraph + " ").group(1)  # its first sentence
    line = re.sub(r":\w+:`~?([^`<]*?)(?: <[^>]*>)?`", r"`\1`", line)  # reST roles (:mod:`x`) as code
    return line.replace("``", "`").replace("|", "\\|")  # a `|` would end the table cell


def notebook_title(path: Path) -> str:
    """The first heading of a notebook's first Markdown cell, without its ``#``."""
    cells = json.loads(path.read_text())["cells"]
    first = next(c for c in cells if c["cell_type"] == "markdown")
    return "".join(first["source"]).splitlines()[0].lstrip("#").strip()


def page_title(path: Path) -> str:
    """The first heading of a Markdown page, without its ``#``."""
    return next(line for line in path.read_text().splitlines() if line.startswith("#")).lstrip("#").strip()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def render() -> str:
    layers = _layers()
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules.pop("", None)  # pear_lens/__init__.py: the package, described above the table
    placed: dict[int, list[str]] = {}
    for name in modules:
        layer = layers.layer_of(name)
        if layer is None:
            raise SystemExit(f"pear_lens.{name} is in no layer: place it in pyproject.toml's [tool.importlinter] contracts")
        placed.setdefault(layer, []).append(name)

    lines = ["# Architecture", "",
             "<!-- Written by scripts/architecture.py from pyproject.toml's import contracts and the modules' "
             "docstrings: do not "
             "edit by hand. -->", "",
             summary(PACKAGE / "__init__.py"), "",
             "The package is built in layers. A module imports only its own layer and the layers below it, "
             "and no import goes in a circle: `lint-imports` checks the contracts in `pyproject.toml` "
             "(`[tool.importlinter]`) on every import, function-level and type-checking ones included (run by "
             "`tests/test_layers.py` in `make test` and `make test-fast`, which backs it with a scan of its own). "
             "The commands sit on top, "
             "never import each other, and the library never imports them; nor does it import the studies "
             "(`studies/`), which use it as any user would.", "",
             "## Layers, bottom to top", ""]
    lines += [f"{i + 1}. " + ", ".join(f"`{name}`" for name in layer) for i, layer in enumerate(layers.LAYERS)]
    lines += ["", "## Modules of `pear_lens/`", "", "| layer | module | what it is |", "|---|---|---|"]
    for i in sorted(placed):
        for n, name in enumerate(sorted(placed[i])):
            path = modules[name].relative_to(ROOT).as_posix()
            lines.append(f"| {i + 1 if n == 0 else ''} | [`{name}`](../{path}) | {summary(modules[name])} |")
    for folder, what in FOLDERS.items():
        lines += ["", f"## `{folder}/`", "", what[0].upper() + what[1:] + "."]
        if folder == "notebooks":
            lines += ["", *(f"- [`{p.name}`](../{folder}/{p.name}): {notebook_title(p)}"
                            for p in sorted((ROOT / folder).glob("*.ipynb")))]
        elif folder in ("scripts", "benchmarks"):
            lines += ["", *(f"- [`{p.name}`](../{folder}/{p.name}): {summary(p)}"
                            for p in sorted((ROOT / folder).glob("*.py")))]
        elif folder == "studies":
            found = sorted(p for p in (ROOT / folder).rglob("*.py") if "tests" not in p.relative_to(ROOT).parts)
            lines += ["", *(f"- [`{p.relative_to(ROOT / folder).as_posix()}`](../{p.relative_to(ROOT).as_posix()}): "
                            f"{summary(p)}" for p in found)]
        elif folder == "docs":
            lines += ["", *(f"- [`{p.name}`]({p.name}): {page_title(p)}" for p in sorted((ROOT / folder).glob("*.md")))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/architecture.md is stale; write nothing")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run `python scripts/architecture.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
