"""``pear-lens eval``: load a model, make or read items, run the conditions, write an eval folder.

The settings (:class:`~pear_lens.evaluation.eval_folder.EvalConfig`) and the evaluation
(:func:`~pear_lens.evaluation.eval_folder.run_eval`) are library code in :mod:`pear_lens.evaluation.eval_folder`,
which the protocol of ``scripts/evaluate_all.py`` calls too.
"""
from __future__ import annotations

from pear_lens.evaluation.eval_folder import EvalConfig, run_eval

__all__ = ["EvalConfig", "run_eval"]
