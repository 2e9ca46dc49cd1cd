"""Config dataclasses shared by notebooks and the command line.

Each field carries its help text in ``metadata``; :func:`add_dataclass_args`
turns a config class into argparse options, so the CLI and the Python API can
never drift apart.
"""
from __future__ import annotations

import argparse
import dataclasses
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


def _parse_pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``20x50,40x25`` → ((20, 50), (40, 25))."""
    try:
        return tuple(tuple(int(v) for v in part.lower().split("x")) for part in text.split(",") if part)  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BATCHxN pairs like 20x50,40x25, got {text!r}") from None


def _parse_ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _parse_heads(text: str) -> tuple[tuple[int, int], ...]:
    """``26.28,11.6`` → ((26, 28), (11, 6))."""
    try:
        return tuple(tuple(int(v) for v in part.split(".")) for part in text.split(",") if part)  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LAYER.HEAD pairs like 26.28,11.6, got {text!r}") from None


PARSERS = {
    "tuple[tuple[int, int], ...]": _parse_pairs,
    "tuple[int, ...]": _parse_ints,
    "Heads": _parse_heads,
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
        if type_key == "tuple[Path, ...]":  # several paths: `pear-lens eval-report DIR DIR ...`
            kwargs.update(type=Path, nargs="+")
        elif type_key in PARSERS:
            kwargs["type"] = PARSERS[type_key]
        elif typ in (int, float, str, Path) or _optional_of(typ) in (int, float, str, Path):
            kwargs["type"] = _optional_of(typ) or typ
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("positional"):
            if not required and "nargs" not in kwargs:
                kwargs["nargs"] = "?"
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
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return cls(**values)
    except TypeError as e:
        raise PearLensError(str(e)) from None
