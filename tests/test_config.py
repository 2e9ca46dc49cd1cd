"""The command line generated from config dataclasses: dispatch on resolved types, nesting, variants."""
from __future__ import annotations

import argparse
import enum
from dataclasses import dataclass, make_dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from pear_lens.config import add_arguments, from_namespace, option
from pear_lens.text_formats import Heads, Settings
from pear_lens.errors import PearLensError


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Inner:
    """An inner section."""

    rate: float = 0.5
    """how fast"""
    heads: Heads = ()
    """heads to keep"""
    extra: int = 1
    """left off where omitted"""


@dataclass
class Outer:
    run_dir: Path = option(help="a folder", positional=True)
    colour: Colour = option(Colour.RED, help="a colour")
    settings: Settings = option(((2, 4),), help="pairs")
    ks: tuple[int, ...] = option((1, 2), help="numbers")
    limit: Optional[int] = option(None, help="a limit")
    flag: bool = option(False, help="a flag")
    inner: Inner = option(default_factory=lambda: Inner(rate=0.25), help="prefixed section",
                          defaults_reason="a section may change its defaults, saying why")
    flat: Inner = option(default_factory=Inner, prefix="", omit=("extra",), help="unprefixed section")


def parse(cls, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    return parser, from_namespace(cls, parser.parse_args(argv))


def test_fields_parse_by_their_resolved_types():
    _, cfg = parse(Outer, ["runs/x", "--colour", "blue", "--settings", "20x50,40x25", "--ks", "3,4", "--limit", "7",
                           "--flag", "--inner.rate", "0.1", "--inner.heads", "1.2,0.3", "--rate", "0.9"])
    assert cfg.run_dir == Path("runs/x") and cfg.colour is Colour.BLUE
    assert cfg.settings == ((20, 50), (40, 25)) and cfg.ks == (3, 4) and cfg.limit == 7 and cfg.flag
    assert cfg.inner == Inner(rate=0.1, heads=((1, 2), (0, 3)))
    assert cfg.flat == Inner(rate=0.9)


def test_defaults_come_from_the_config_and_its_nested_defaults():
    parser, cfg = parse(Outer, ["runs/x"])
    assert cfg == Outer(run_dir=Path("runs/x"))
    assert cfg.inner.rate == 0.25  # the section's default instance, not Inner()'s
    text = parser.format_help()
    assert "--inner.rate" in text and "{red,blue}" in text
    # a section's own default, and why it differs from the class's (a reason is required: option(defaults_reason=))
    assert "how fast (default here: 0.25, not 0.5 as elsewhere: a section may change" in " ".join(text.split())
    assert "--extra" not in text  # omitted from the unprefixed section


def test_a_percent_sign_in_help_is_text(capsys):
    @dataclass
    class Percent:
        share: float = 0.5
        """stop below 50% of the tokens"""

    parser = argparse.ArgumentParser()
    add_arguments(parser, Percent)
    assert "stop below 50% of the tokens (default: 0.5)" in " ".join(parser.format_help().split())


def test_bad_values_are_argparse_errors(capsys):
    for argv in (["x", "--colour", "green"], ["x", "--settings", "20-50"], ["x", "--inner.heads", "1"]):
        with pytest.raises(SystemExit):
            parse(Outer, argv)
    assert "invalid choice 'green' (choose from red, blue)" in capsys.readouterr().err


@pytest.mark.parametrize("annotation", [dict[str, int], list[int], Any, tuple[int, int]])
def test_a_type_without_a_command_line_form_fails_when_the_parser_is_built(annotation):
    Odd = make_dataclass("Odd", [("value", annotation, option(None, help="?"))])
    with pytest.raises(TypeError, match="Odd.value.*no command-line form"):
        add_arguments(argparse.ArgumentParser(), Odd)


def test_a_flag_must_default_to_false_and_every_option_needs_help():
    @dataclass
    class OnByDefault:
        on: bool = option(True, help="?")

    @dataclass
    class Undocumented:
        n: int = 3

    with pytest.raises(TypeError, match="must default to False"):
        add_arguments(argparse.ArgumentParser(), OnByDefault)
    with pytest.raises(TypeError, match="no help text"):
        add_arguments(argparse.ArgumentParser(), Undocumented)


def test_nargs_takes_separate_values_and_help_may_leave_out_defaults():
    @dataclass
    class Lists:
        seeds: tuple[int, ...] = option((0, 1), nargs="+", help="seeds drawing the heads")
        kinds: tuple[str, ...] = option(("a",), nargs="*", choices=["a", "b"], help="")
        rates: tuple[float, ...] = option((0.5,), help="rates")

    parser = argparse.ArgumentParser()
    add_arguments(parser, Lists, defaults_in_help=False)
    assert from_namespace(Lists, parser.parse_args(["--seeds", "3", "4", "--kinds"])) == Lists(seeds=(3, 4), kinds=())
    assert from_namespace(Lists, parser.parse_args(["--rates", "0.1,0.2"])).rates == (0.1, 0.2)  # no nargs: commas
    text = " ".join(parser.format_help().split())
    assert "--seeds SEEDS [SEEDS ...] seeds drawing the heads --kinds [{a,b} ...] --rates FLOAT,... rates" in text
    assert "default" not in text  # help="" is no help line, and no option shows its default
    with pytest.raises(SystemExit):
        parser.parse_args(["--kinds", "c"])


@dataclass
class A:
    size: int = 1
    """a size"""


@dataclass
class B:
    size: str = "big"
    """a size, as a word"""


def test_variants_with_one_name_in_two_types_are_refused():
    @dataclass
    class Choose:
        kind: str = option("a", help="which")
        opts: Any = option(None, variants=lambda: {"a": A, "b": B}, selector="kind", help="options")

    with pytest.raises(TypeError, match="option 'size'"):
        add_arguments(argparse.ArgumentParser(), Choose)


def test_a_variant_option_of_the_wrong_variant_is_a_clear_error():
    @dataclass
    class Other:
        colour: Colour = Colour.RED
        """a colour"""

    @dataclass
    class Choose:
        kind: str = option("a", help="which")
        opts: Any = option(None, variants=lambda: {"a": A, "other": Other}, selector="kind", help="options")

    _, cfg = parse(Choose, ["--kind", "other", "--colour", "blue"])
    assert cfg.opts == Other(colour=Colour.BLUE)
    assert parse(Choose, [])[1].opts == A()
    with pytest.raises(PearLensError, match="colour does not apply to kind 'a' \\(it applies to other\\)"):
        parse(Choose, ["--colour", "blue"])


def _configs():
    from pear_lens.commands.cli import COMMANDS

    return {name: load() for name, (_, load, _) in COMMANDS.items() if load is not None}


def test_every_command_parser_builds_and_no_config_repeats_a_nested_ones_fields():
    import dataclasses
    import typing

    from pear_lens.commands.cli import build_parser

    build_parser()  # an unprefixed section whose flags clash with its parent's fails here
    for name, cls in _configs().items():
        hints = typing.get_type_hints(cls)
        own = {f.name for f in dataclasses.fields(cls)}
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                repeated = own & {g.name for g in dataclasses.fields(hints[f.name])}
                assert not repeated, f"{cls.__name__} re-declares {sorted(repeated)} of {hints[f.name].__name__}"


def test_ablate_and_demo_take_every_training_option(capsys):
    from pear_lens.commands.cli import main

    for command in ("ablate", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for flag in ("--lr", "--weight-decay", "--steps", "--batch-size", "--precision {fp32,bf16}", "--prepend-bos"):
            assert flag in text, (command, flag)
