"""``pear-lens discover``: score every head and write a discovery run folder.

The settings (:class:`~pear_lens.workflow.DiscoverConfig`) and the run itself
(:func:`~pear_lens.workflow.discover`) are library code in :mod:`pear_lens.workflow`, which the demo and any
study built on discovery call too; the folder's files are :mod:`pear_lens.runs`'s.
"""
from __future__ import annotations

from pear_lens.copy_check import MIN_COPY_ACCURACY
from pear_lens.workflow import DiscoverConfig, discover

__all__ = ["DiscoverConfig", "MIN_COPY_ACCURACY", "discover"]
