"""Config dataclasses shared by notebooks and the command line.

Each field carries its help text in ``metadata``; :func:`add_dataclass_args`
turns a config class into argparse options, so the CLI and the Python API can
never drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, get_args, get_origin

from pear_lens.errors import PearLensError

MISSING = dataclasses.MISSING


def option(default: Any = MISSING, *, help: str, positional: bool = False, choices: list[str] | None = None,
           default_factory: Any = MISSING) -> Any:
    """A config field with its ``--help`` text."""
    meta = {"help": help, "positional": positional, "choices": choices}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _entries(text: str, example: str) -> list[str]:
    """The comma-separated entries of ``text``; an empty list or an empty entry is a typo, not a default."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip():
        raise argparse.ArgumentTypeError(f"is empty; give values like {example}, or leave the option out")
    if "" in parts:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty entry; give values like {example}")
    return parts


def _parse_pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``20x50,40x25`` → ((20, 50), (40, 25))."""
    parts = _entries(text, "20x50,40x25")
    if not all(re.fullmatch(r"\d+[xX]\d+", p) for p in parts):
        raise argparse.ArgumentTypeError(f"expected BATCHxN pairs like 20x50,40x25, got {text!r}")
    return tuple(tuple(int(v) for v in p.lower().split("x")) for p in parts)  # type: ignore[misc]


def _parse_ints(text: str) -> tuple[int, ...]:
    parts = _entries(text, "1,2,5")
    try:
        return tuple(int(v) for v in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _parse_heads(text: str) -> tuple[tuple[int, int], ...]:
    """``26.28,11.6`` → ((26, 28), (11, 6))."""
    parts = _entries(text, "26.28,11.6 (LAYER.HEAD)")
    bad = [p for p in parts if not re.fullmatch(r"\d+\.\d+", p)]
    if bad:
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD pairs like 26.28,11.6, got {text!r} "
                                         f"({bad[0]!r} is not LAYER.HEAD)")
    return tuple(tuple(int(v) for v in p.split(".")) for p in parts)  # type: ignore[misc]


PARSERS = {
    "tuple[tuple[int, int], ...]": _parse_pairs,
    "tuple[int, ...]": _parse_ints,
    "Heads": _parse_heads,
}

# Field types given as several space-separated values (``pear-lens compare RUN1 RUN2 ...``).
VARIADIC = {
    "tuple[Path, ...]": Path,
}


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls, include_extras=False)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if "help" not in meta:
            continue
        typ = hints[f.name]
        kwargs: dict[str, Any] = {"help": meta["help"]}
        required = f.default is MISSING and f.default_factory is MISSING
        if not required:
            default = f.default if f.default is not MISSING else f.default_factory()
            kwargs["help"] += f" (default: {_show(default)})"
        type_key = f.type if isinstance(f.type, str) else str(typ)
        if typ is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", action="store_true", **kwargs)
            continue
        if type_key in PARSERS:
            kwargs["type"] = PARSERS[type_key]
        elif type_key in VARIADIC:
            kwargs["type"], kwargs["nargs"] = VARIADIC[type_key], "+"
        elif typ in (int, float, str, Path) or _optional_of(typ) in (int, float, str, Path):
            kwargs["type"] = _optional_of(typ) or typ
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("positional"):
            if not required:
                kwargs["nargs"] = "*" if "nargs" in kwargs else "?"
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, required=required, **kwargs)


def _optional_of(typ: Any) -> Any:
    if get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(typ) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return None


def _show(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ",".join("x".join(map(str, v)) for v in value)
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    # argparse gives variadic options as lists; config fields hold tuples
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if v is not None}
    try:
        return cls(**values)
    except TypeError as e:
        raise PearLensError(str(e)) from None
