"""Typed config dataclasses, and the command line generated from them.

A config is a dataclass whose fields are Enums or typed values; a field's help is its attribute
docstring (``option(help=...)`` overrides it). :func:`add_arguments` turns a config class into argparse
options by the *resolved type* of each field:

- an Enum subclass becomes a choice of its values; ``Literal[...]`` a choice of its strings;
- ``int``, ``float``, ``str``, ``Path`` (or ``Optional`` of one) a typed option; ``bool`` a flag;
- ``tuple[X, ...]`` a comma-separated list (several values when positional, or with ``option(nargs=...)``);
- ``Annotated[T, Format(...)]`` a value in that text format (``Settings``: ``20x50,40x25``;
  ``Heads``: ``26.28,11.6``);
- a nested dataclass a section of options, prefixed with the field name (``--train.lr``) unless the
  field says ``option(prefix="")``;
- ``option(variants=..., selector=...)`` one options dataclass out of a registry, chosen by another
  field (the scoring method's options): the union of their fields, and a given option that the chosen
  variant lacks is an error;
- ``option(sections=..., selector=...)`` one options dataclass per entry of a registry, for each entry the
  selector field (a tuple of names) chooses (the head detectors' options): ``--NAME.OPTION`` per entry,
  built into ``{name: {option: value}}`` of the options given; an option of an entry not chosen is an error.

Any other type raises when the parser is built: a value is never passed on as an unparsed string.
:func:`from_namespace` builds the config back, nested sections included, and :func:`coerce` checks a
``{name: value}`` mapping against a config class (unknown names and bad Enum values are a
:class:`PearLensError`), which the Python API uses for the same checks.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, get_args, get_origin

from pear_lens.errors import PearLensError
from pear_lens.text_formats import Format, enum_parser, list_of
from pear_lens.vocabulary import parse_member

MISSING = dataclasses.MISSING
_SCALARS = (int, float, str, Path)


def option(default: Any = MISSING, *, help: str | None = None, positional: bool = False,
           choices: list[str] | Callable[[], list[str]] | None = None, default_factory: Any = MISSING, prefix: str | None = None,
           omit: tuple[str, ...] = (), cli_type: Any = None, cli: bool = True,
           variants: Callable[[], Mapping[str, type]] | None = None, selector: str | None = None,
           sections: Callable[[], Mapping[str, type]] | None = None, nargs: str | None = None,
           flag: str | None = None, defaults_reason: str | None = None) -> Any:
    """A config field with its command-line form.

    ``help`` (default: the attribute docstring); ``positional``; ``choices`` for a ``str`` field (a list, or a function returning one when the parser is built);
    ``prefix`` of a nested section's options (default ``"<field>."``; ``""`` keeps its flags unprefixed)
    and ``omit``, the section's fields that do not apply here; ``cli_type``: the type the command line
    parses when the field's own type has no command-line form; ``cli=False`` leaves the field off the
    command line; ``variants``/``selector`` and ``sections``/``selector``: see the module docstring;
    ``nargs`` (``"+"`` or ``"*"``) takes a ``tuple[X, ...]`` field as separate values (``--seeds 0 1 2``)
    instead of a comma-separated list. ``help=""`` states that an option has no help line. ``flag``: the option's
    name on the command line when it is not the field's (``flag="task"`` gives ``--task``).
    ``defaults_reason``: for a nested section whose default (an instance) changes some of the section class's own
    defaults, why this command must differ; each changed option's help states it (a section that changes a
    default without a reason is refused when the parser is built: one option, one default, or a stated reason).
    """
    meta = {"help": help, "positional": positional, "choices": choices, "prefix": prefix, "omit": tuple(omit),
            "cli_type": cli_type, "cli": cli, "variants": variants, "selector": selector, "sections": sections,
            "nargs": nargs, "flag": flag, "defaults_reason": defaults_reason}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# --------------------------------------------------------------------------- reading the types


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of the string literals written under the fields of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _unwrap_optional(typ: Any) -> Any:
    if get_origin(typ) in (typing.Union, types.UnionType):
        args = [a for a in get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return typ


def _format_of(typ: Any) -> Format | None:
    if get_origin(typ) is Annotated:
        return next((m for m in typ.__metadata__ if isinstance(m, Format)), None)
    return None


def _plain(typ: Any) -> Any:
    """``typ`` without ``Optional`` and without ``Annotated`` metadata other than a :class:`Format`."""
    typ = _unwrap_optional(typ)
    if get_origin(typ) is Annotated and _format_of(typ) is None:
        return _unwrap_optional(get_args(typ)[0])
    return typ


def _is_enum(typ: Any) -> bool:
    return isinstance(typ, type) and issubclass(typ, enum.Enum)


def _default_of(f: dataclasses.Field, base: Any = None) -> Any:
    if base is not None:
        return getattr(base, f.name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def show(value: Any, typ: Any = None) -> str:
    """A default as the command line writes it."""
    fmt = _format_of(typ) if typ is not None else None
    if fmt is not None and value is not None:
        return fmt.show(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _field_help(cls: type, f: dataclasses.Field, docs: dict[str, str]) -> str:
    text = f.metadata.get("help")
    if text is None:  # "" is an explicit "no help line"
        text = docs.get(f.name)
    if text is None:
        raise TypeError(f"{cls.__name__}.{f.name} has no help text: write a docstring under it or option(help=...)")
    return text


def _kwargs_for(cls: type, f: dataclasses.Field, typ: Any, positional: bool) -> dict[str, Any]:
    """argparse keyword arguments for one value-typed field, chosen by its resolved type."""
    fmt = _format_of(_unwrap_optional(typ))
    plain = _plain(typ)
    if fmt is not None:
        return {"type": fmt.parse, "metavar": fmt.metavar}
    if plain is bool:
        return {"action": "store_true"}
    if _is_enum(plain):
        return {"type": enum_parser(plain), "metavar": "{" + ",".join(str(m.value) for m in plain) + "}"}
    if get_origin(plain) is Literal:
        return {"choices": [str(a) for a in get_args(plain)]}
    if plain in _SCALARS:
        return {"type": plain}
    if get_origin(plain) is tuple:
        args = get_args(plain)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
            if f.metadata.get("nargs"):
                return {"type": args[0], "nargs": f.metadata["nargs"]}
            if positional:
                return {"type": args[0], "nargs": "+"}
            fmt = list_of(args[0])
            return {"type": fmt.parse, "metavar": fmt.metavar}
    raise TypeError(f"{cls.__name__}.{f.name}: {typ!r} has no command-line form; use an Enum, int, float, str, "
                    "Path, bool, tuple[X, ...], a nested dataclass, Annotated[T, Format(...)] or option(cli_type=...)")


# --------------------------------------------------------------------------- dataclass -> argparse


def changed_defaults(cls: type, base: Any) -> dict[str, tuple[Any, Any]]:
    """``{field: (class default, this instance's value)}`` for the fields of ``base`` (an instance of the config
    class ``cls``) that differ from ``cls``'s own defaults."""
    if base is None:
        return {}
    out = {}
    for f in dataclasses.fields(cls):
        own = _default_of(f)
        if own is not MISSING and f.metadata.get("cli", True) and getattr(base, f.name) != own:
            out[f.name] = (own, getattr(base, f.name))
    return out


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, prefix: str = "", dest: str = "",
                  base: Any = None, omit: tuple[str, ...] = (), group: Any = None,
                  defaults_in_help: bool = True, defaults_reason: str | None = None) -> None:
    """Add the options of config class ``cls`` to ``parser`` (see the module docstring).

    Every option's default is ``SUPPRESS``, so :func:`from_namespace` knows which ones were given.
    ``defaults_in_help=False`` leaves the defaults out of the help (a script whose help never showed them).
    ``base``: an instance whose values are the defaults here; where they differ from ``cls``'s own, the help
    says so with ``defaults_reason``.
    """
    changed = changed_defaults(cls, base)
    hints, docs = _hints(cls), attribute_docs(cls)
    target = group or parser
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in omit:
            continue
        typ = meta.get("cli_type") or hints[f.name]
        default = _default_of(f, base)
        flag = "--" + (prefix + (meta.get("flag") or f.name)).replace("_", "-")
        if meta.get("variants"):
            _add_variants(parser, cls, f, meta, dest + f.name)
            continue
        if meta.get("sections"):
            _add_sections(parser, f, meta, dest + f.name)
            continue
        if dataclasses.is_dataclass(_plain(typ)):
            sub = _plain(typ)
            sub_prefix = meta.get("prefix")
            sub_prefix = f"{f.name}." if sub_prefix is None else sub_prefix
            title = _field_help(cls, f, docs)
            sub_group = parser.add_argument_group(f"{(prefix + f.name).replace('_', '-')} options", title)
            sub_base = None if default is MISSING else default
            if changed_defaults(sub, sub_base) and not meta.get("defaults_reason"):
                raise TypeError(f"{cls.__name__}.{f.name} changes the defaults of {sub.__name__} "
                                f"({', '.join(changed_defaults(sub, sub_base))}) without a reason: keep one default "
                                "or give option(defaults_reason=...)")
            add_arguments(parser, sub, prefix=prefix + sub_prefix, dest=f"{dest}{f.name}.",
                          base=sub_base, omit=meta.get("omit", ()), group=sub_group,
                          defaults_in_help=defaults_in_help, defaults_reason=meta.get("defaults_reason"))
            continue
        positional = bool(meta.get("positional"))
        kwargs = _kwargs_for(cls, f, typ, positional)
        if kwargs.get("action") == "store_true" and default is not False:
            raise TypeError(f"{cls.__name__}.{f.name}: a flag must default to False (got {default!r})")
        help_text = _field_help(cls, f, docs)
        required = default is MISSING
        if defaults_in_help and not required and kwargs.get("action") != "store_true":
            if f.name in changed:
                help_text += (f" (default here: {show(default, typ)}, not {show(changed[f.name][0], typ)} as elsewhere: "
                              f"{defaults_reason})")
            else:
                help_text += f" (default: {show(default, typ)})"
        if meta.get("choices"):
            choices = meta["choices"]
            kwargs["choices"] = list(choices() if callable(choices) else choices)
        kwargs.update(help=help_text.replace("%", "%%"), default=argparse.SUPPRESS)  # argparse %-formats help
        if positional:
            if not required:
                kwargs["nargs"] = "*" if kwargs.get("nargs") == "+" else "?"
            target.add_argument(dest + f.name, metavar=f.name.upper(), **kwargs)
        else:
            if "metavar" not in kwargs and kwargs.get("action") != "store_true" and "choices" not in kwargs:
                kwargs["metavar"] = f.name.upper()
            target.add_argument(flag, dest=dest + f.name, required=required, **kwargs)


def describe_options(cls: type, *, prefix: str = "", base: Any = None,
                     omit: tuple[str, ...] = (), defaults_reason: str | None = None) -> list[dict[str, Any]]:
    """Every plain option :func:`add_arguments` adds for ``cls`` (nested sections included; a scoring method's or
    detector's own options left out), as ``{"flag", "default", "help", "reason", "positional"}``: the default as
    the command line writes it (``required``; ``off`` for a flag) and, where a section changes it, the stated reason.
    The docs' table of shared options is generated from it."""
    hints, docs = _hints(cls), attribute_docs(cls)
    changed = changed_defaults(cls, base)
    rows: list[dict[str, Any]] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in omit or meta.get("variants") or meta.get("sections"):
            continue
        typ = meta.get("cli_type") or hints[f.name]
        default = _default_of(f, base)
        if dataclasses.is_dataclass(_plain(typ)):
            sub_prefix = meta.get("prefix")
            rows += describe_options(_plain(typ), prefix=prefix + (f"{f.name}." if sub_prefix is None else sub_prefix),
                                     base=None if default is MISSING else default, omit=meta.get("omit", ()),
                                     defaults_reason=meta.get("defaults_reason"))
            continue
        flag = "--" + (prefix + (meta.get("flag") or f.name)).replace("_", "-")
        shown = "required" if default is MISSING else "off" if _plain(typ) is bool else show(default, typ)
        rows.append({"flag": flag, "default": shown, "help": _field_help(cls, f, docs),
                     "reason": defaults_reason if f.name in changed else None, "positional": bool(meta.get("positional"))})
    return rows


def _add_variants(parser: argparse.ArgumentParser, cls: type, f: dataclasses.Field, meta: Mapping, dest: str) -> None:
    """The options of every variant, once each; one name in two variants must have one type."""
    variants: Mapping[str, type] = meta["variants"]()
    seen: dict[str, tuple[Any, list[str], dataclasses.Field, type]] = {}
    lines = []
    for name, vcls in variants.items():
        hints = _hints(vcls)
        names = []
        for vf in dataclasses.fields(vcls):
            typ = _plain(hints[vf.name])
            if vf.name in seen and seen[vf.name][0] != typ:
                raise TypeError(f"option {vf.name!r} is {seen[vf.name][0]!r} in {seen[vf.name][1]} but {typ!r} in "
                                f"{name}: give one of them another name")
            seen.setdefault(vf.name, (typ, [], vf, vcls))[1].append(name)
            names.append("--" + vf.name.replace("_", "-"))
        lines.append(f"{name}: {', '.join(names) or 'no options'}")
    title = f"{meta['selector']} options"
    group = parser.add_argument_group(title, f"{_field_help(cls, f, attribute_docs(cls))}. Each --{meta['selector']} "
                                             f"takes only its own: " + "; ".join(lines))
    for opt, (typ, owners, vf, vcls) in seen.items():
        kwargs = _kwargs_for(vcls, vf, typ, positional=False)
        defaults = {o: show(_default_of(_field(variants[o], opt)), typ) for o in owners}
        where = ", ".join(f"{o} (default {d})" if kwargs.get("action") != "store_true" else o
                          for o, d in defaults.items())
        help_text = f"{_field_help(vcls, vf, attribute_docs(vcls))} [{where}]"
        group.add_argument("--" + opt.replace("_", "-"), dest=f"{dest}.{opt}", default=argparse.SUPPRESS,
                           help=help_text.replace("%", "%%"), **kwargs)


def _add_sections(parser: argparse.ArgumentParser, f: dataclasses.Field, meta: Mapping, dest: str) -> None:
    """``--NAME.OPTION`` for every option of every registered entry, one group per entry."""
    for name, scls in meta["sections"]().items():
        fields = dataclasses.fields(scls)
        if not fields:
            continue
        hints, docs = _hints(scls), attribute_docs(scls)
        group = parser.add_argument_group(f"{name} options", f"apply only when --{meta['selector']} includes {name}")
        for sf in fields:
            typ = _plain(hints[sf.name])
            kwargs = _kwargs_for(scls, sf, typ, positional=False)
            help_text = _field_help(scls, sf, docs)
            if kwargs.get("action") != "store_true":
                help_text += f" (default: {show(_default_of(sf), typ)})"
            group.add_argument("--" + f"{name}.{sf.name}".replace("_", "-"), dest=f"{dest}.{name}.{sf.name}",
                               default=argparse.SUPPRESS, help=help_text.replace("%", "%%"), **kwargs)


def _field(cls: type, name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(cls) if f.name == name)


def from_namespace(cls: type, ns: argparse.Namespace | Mapping[str, Any]) -> Any:
    """The config ``cls`` from parsed arguments (those not given keep the config's defaults)."""
    given = dict(vars(ns) if isinstance(ns, argparse.Namespace) else ns)
    try:
        return _build(cls, given, "", None)
    except TypeError as e:
        raise PearLensError(str(e)) from None


def _build(cls: type, given: dict[str, Any], dest: str, base: Any) -> Any:
    hints = _hints(cls)
    values: dict[str, Any] = {}
    later = []
    for f in dataclasses.fields(cls):
        typ = f.metadata.get("cli_type") or hints[f.name]
        if f.metadata.get("variants") or f.metadata.get("sections"):
            later.append(f)
        elif dataclasses.is_dataclass(_plain(typ)) and f.metadata.get("cli", True):
            sub_base = _default_of(f, base)
            sub = _build(_plain(typ), given, f"{dest}{f.name}.", None if sub_base is MISSING else sub_base)
            if sub is not None:
                values[f.name] = sub
        elif dest + f.name in given:
            value = given[dest + f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    for f in later:
        selector = f.metadata["selector"]
        chosen = values.get(selector, _default_of(_field(cls, selector), base))
        prefix = f"{dest}{f.name}."
        opts = {k[len(prefix):]: v for k, v in given.items() if k.startswith(prefix)}
        if f.metadata.get("sections"):
            values[f.name] = section_options(tuple(chosen), opts, selector)
        else:
            values[f.name] = variant_options(f.metadata["variants"](), str(chosen), opts, selector)
    if base is not None:
        return dataclasses.replace(base, **values) if values else base
    return cls(**values)


def section_options(chosen: tuple[str, ...], given: Mapping[str, Any], what: str) -> dict[str, dict[str, Any]]:
    """``{"name.option": value}`` as ``{name: {option: value}}``; an option of an entry not chosen is an error."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        name, _, opt = key.partition(".")
        if name not in chosen:
            flag = "--" + key.replace("_", "-")
            raise PearLensError(f"{flag} is an option of {name!r}, which is not among the chosen {what} "
                                f"({', '.join(chosen) or 'none'}); drop it or add {name} to --{what}")
        out.setdefault(name, {})[opt] = tuple(value) if isinstance(value, list) else value
    return out


def variant_options(variants: Mapping[str, type], chosen: str, given: Mapping[str, Any], what: str) -> Any:
    """``variants[chosen]`` built from ``given``; a name that ``chosen`` does not take is a clear error."""
    if chosen not in variants:
        raise PearLensError(f"unknown {what} {chosen!r}; choose one of: {', '.join(variants)}")
    vcls = variants[chosen]
    known = [f.name for f in dataclasses.fields(vcls)]
    extra = [k for k in given if k not in known]
    if extra:
        others = sorted(n for n, v in variants.items() if all(k in [f.name for f in dataclasses.fields(v)] for k in extra))
        hint = f" (it applies to {', '.join(others)})" if others else ""
        raise PearLensError(f"{', '.join(extra)} does not apply to {what} {chosen!r}{hint}; "
                            f"{chosen!r} takes: {', '.join(known) or 'no options'}")
    return vcls(**coerce(vcls, given))


def coerce(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the fields of ``cls``: Enum fields parsed from their values."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in names:
            raise PearLensError(f"{cls.__name__} has no option {key!r}; it takes: {', '.join(sorted(names))}")
        typ = _plain(hints[key])
        if _is_enum(typ):
            value = parse_member(typ, value, key)
        elif not (value is None and _unwrap_optional(hints[key]) is not hints[key]):
            value = checked_value(typ, value, f"{cls.__name__}.{key}")
        out[key] = value
    return out


def check_fields(obj: Any) -> None:
    """Check (in ``__post_init__``) that every plain-typed field of the dataclass ``obj`` holds a value of its type
    (:func:`checked_value`): a config built in Python is held to the types its command line parses."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        if value is None and _unwrap_optional(hint) is not hint:
            continue
        typ = _plain(hint)
        if not _is_enum(typ):
            object.__setattr__(obj, f.name, checked_value(typ, value, f.name))


_TYPE_NAMES = {bool: "a boolean (True or False)", int: "an integer", float: "a number", str: "a string"}


def checked_value(typ: Any, value: Any, what: str) -> Any:
    """``value`` if it is of the plain type ``typ`` (bool, int, float, str, or a tuple of one of them; an int is a
    number too, a bool never an int), else a :class:`PearLensError` naming ``what``. The Python API's values are
    checked as the command line's parser checks them: the string ``"false"`` is no boolean (it would act as True),
    ``2.5`` no integer. Other types pass unchecked."""
    import numbers

    def ok(t: Any, v: Any) -> bool:
        if t is bool:
            return isinstance(v, bool) or type(v).__name__ == "bool_"  # NumPy's too
        if t is int:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)
        if t is float:
            return isinstance(v, numbers.Real) and not isinstance(v, bool)
        return isinstance(v, str)

    if typ in _TYPE_NAMES:
        if not ok(typ, value):
            raise PearLensError(f"{what} must be {_TYPE_NAMES[typ]}, got {type(value).__name__} {value!r:.60}")
        # NumPy's integers and booleans as plain ones (JSON records them); an int given for a float stays an int
        return int(value) if typ is int else bool(value) if typ is bool else value
    args = get_args(typ)
    if get_origin(typ) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _TYPE_NAMES:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            noun = _TYPE_NAMES[args[0]].split(" (")[0].split(" ", 1)[1]
            raise PearLensError(f"{what} must be a list of {noun}s, got {type(value).__name__} {value!r:.60}")
        return tuple(checked_value(args[0], v, f"{what}[{i}]") for i, v in enumerate(value))
    return value
