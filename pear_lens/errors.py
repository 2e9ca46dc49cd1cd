"""One exception type for every mistake a user can fix.

The CLI prints these as a one-line message instead of a traceback; the message
always says what to do next.
"""
from __future__ import annotations


class PearLensError(ValueError):
    """Bad input or a missing prerequisite, with the fix in the message."""


class ModelNotAvailable(PearLensError):
    """The model is unknown, or known but not installed on this machine."""
