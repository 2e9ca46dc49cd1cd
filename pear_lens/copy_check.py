"""Which proxy task can the model do? The choice between the reference task and the task with BOS.

The clean copy check itself (:func:`~pear_lens.copy_accuracy.clean_copy`, :func:`~pear_lens.copy_accuracy.check_copy_task`)
sits below the scoring methods so that ``score_heads`` runs it too; this module measures both variants and
:func:`choose_copy_task` applies :data:`COPY_RULE`: the reference task (no BOS) when the model copies it, else
the task with BOS.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from pear_lens.copy_accuracy import MIN_COPY_ACCURACY, check_copy_task, clean_copy, copy_task_record
from pear_lens.errors import CopyTaskTooWeak
from pear_lens.proxy_task import ProxyTask

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

__all__ = ["COPY_RULE", "MIN_COPY_ACCURACY", "check_copy_task", "choose_copy_task", "clean_copy", "copy_task_record",
           "copy_task_variants", "measure_copy_tasks"]

COPY_RULE = ("the reference proxy task (no BOS) when the unmodified model copies at least {min:.0%} of its tokens, "
             "else the task with BOS")
"""How :func:`choose_copy_task` picks a model's proxy task (format with ``min=MIN_COPY_ACCURACY``)."""


def copy_task_variants(model: "LoadedModel", task: ProxyTask | None = None) -> list[ProxyTask]:
    """``task`` (default: the reference) without BOS and, where the tokenizer has one, with BOS."""
    task = task or ProxyTask()
    options = [False] + ([True] if model.tokenizer.bos_token_id is not None else [])
    return [dataclasses.replace(task, prepend_bos=bos) for bos in options]


def measure_copy_tasks(model: "LoadedModel", task: ProxyTask | None = None) -> dict[str, dict]:
    """Clean copy records of ``task`` (default: the reference) without BOS and, where the tokenizer has one,
    with BOS: ``{"no_bos": record, "bos": record}``."""
    out = {}
    for variant in copy_task_variants(model, task):
        start = time.perf_counter()
        result = clean_copy(model, variant)
        out["bos" if variant.prepend_bos else "no_bos"] = copy_task_record(variant, result, time.perf_counter() - start)
    return out


def choose_copy_task(model_name: str, measured: dict[str, dict], allow_weak: bool = False) -> dict:
    """Apply :data:`COPY_RULE` to :func:`measure_copy_tasks`' records: the chosen record plus the rule, whether
    it is weak (only with ``allow_weak``: no setting reaches :data:`MIN_COPY_ACCURACY`) and every measurement."""
    works = [m for m in measured.values() if m["clean_copy_accuracy"] >= MIN_COPY_ACCURACY]
    if works:
        chosen = works[0]  # no BOS first: the reference
    elif allow_weak:
        chosen = max(measured.values(), key=lambda m: m["clean_copy_accuracy"])
    else:
        accs = ", ".join(f"{k.replace('_', ' ')} {m['clean_copy_accuracy']:.1%}" for k, m in measured.items())
        raise CopyTaskTooWeak(f"{model_name} copies less than {MIN_COPY_ACCURACY:.0%} of the proxy task's tokens "
                            f"({accs}); no copy task it can do, so no discovery (--allow-weak-copy-task goes on)")
    return {"prepend_bos": chosen["prepend_bos"], "clean_copy_accuracy": chosen["clean_copy_accuracy"],
            "clean_copy_loss": chosen["clean_copy_loss"], "n_sequences": chosen["n_sequences"],
            "rule": COPY_RULE.format(min=MIN_COPY_ACCURACY), "weak": chosen not in works, "measured": measured}
