"""Closed vocabularies: a str Enum whose members print as their values, and one way to parse a value into an Enum.

A :class:`StrEnum` member prints as its value (``str``, ``format`` and JSON agree), so an option shown or
recorded reads ``mean``, never ``Ablation.MEAN``. A value outside an Enum is a :class:`PearLensError` that
names the choices (:func:`parse_member`).
"""
from __future__ import annotations

import sys
from enum import Enum
from typing import TypeVar

from pear_lens.errors import PearLensError

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # Python 3.10: what pear_lens relies on of it (str() and format() give the value)
    class StrEnum(str, Enum):
        """A str Enum whose members print as their values (``enum.StrEnum`` from Python 3.11)."""

        def __str__(self) -> str:
            return self.value

E = TypeVar("E", bound=Enum)


def parse_member(enum: type[E], value: object, what: str, *, colon: bool = True) -> E:
    """``value`` as a member of ``enum`` (a member is returned as is), else a :class:`PearLensError`:
    ``unknown {what} {value!r}; choose one of: a, b`` (without the colon where ``colon`` is False)."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in enum)
        raise PearLensError(f"unknown {what} {value!r}; choose one of{':' if colon else ''} {choices}") from None
