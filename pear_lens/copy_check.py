"""Can the model do its proxy task? The clean copy check that discovery and the evaluation protocol share.

Heads ranked on a task the model cannot do rank noise (Gemma-3-270m without a BOS token copies about one
token in eight), so before scoring, the unmodified model's copy accuracy on the proxy task's own sequences
is measured. :func:`choose_copy_task` applies :data:`COPY_RULE`: the reference task (no BOS) when the model
copies it, else the task with BOS.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

from pear_lens.errors import CopyTaskTooWeak
from pear_lens.proxy_task import ProxyTask, TaskBatch

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.reweight import CopyEval

MIN_COPY_ACCURACY = 0.5
"""Below this clean copy accuracy on its proxy task a model is said not to do the task (discovery stops).

The accuracy counts the copy-half positions whose target the context reveals (all but the first, which
predicts the start of the repeat); the record keeps the all-positions accuracy beside it."""
COPY_RULE = ("the reference proxy task (no BOS) when the unmodified model copies at least {min:.0%} of its tokens, "
             "else the task with BOS")
"""How :func:`choose_copy_task` picks a model's proxy task (format with ``min=MIN_COPY_ACCURACY``)."""


def clean_copy(model: "LoadedModel", task: ProxyTask, micro_batch: int = 20) -> "CopyEval":
    """Copy accuracy and loss of the unmodified model on ``task``'s own sequences (every setting pooled).

    Run in micro-batches: the copy-half logits of a reference batch (100 sequences) over a 262k
    vocabulary would take gigabytes at once.
    """
    from pear_lens.reweight import evaluate_copy

    batches = [TaskBatch(rows, b.n, b.offset) for b in task.batches(model)
               for rows in b.tokens.split(micro_batch)]
    return evaluate_copy(model, batches)


def copy_task_record(task: ProxyTask, result: "CopyEval", seconds: float) -> dict:
    """What ``discovery.json`` (and evaluate_all) record of a clean copy check."""
    # the check's accuracy leaves out the first copy-half position: it predicts the start of the repeat,
    # which no model can know, and would cap a perfect copier at (n-1)/n (90 % at the reference n = 10)
    return {"prepend_bos": task.prepend_bos, "clean_copy_accuracy": round(result.copyable_accuracy, 6),
            "clean_copy_accuracy_all_positions": round(result.accuracy, 6),
            "clean_copy_loss": round(result.loss, 6), "n_sequences": result.n_sequences,
            "n_predictions": result.n_predictions, "settings": [list(s) for s in task.settings],
            "seed": task.seed, "seconds": round(seconds, 2)}


def check_copy_task(model_name: str, record: dict, allow_weak: bool = False) -> None:
    """Stop (one line naming ``--prepend-bos``) when the model copies below :data:`MIN_COPY_ACCURACY`."""
    acc = record["clean_copy_accuracy"]
    if acc >= MIN_COPY_ACCURACY or allow_weak:
        return
    bos = record["prepend_bos"]
    raise CopyTaskTooWeak(
        f"{model_name} copies only {acc:.1%} of the proxy task's tokens {'with' if bos else 'without'} BOS "
        f"(below {MIN_COPY_ACCURACY:.0%}), so its heads would be ranked on a task it cannot do; "
        f"{'try without --prepend-bos' if bos else 'rerun with --prepend-bos'}, or pass --allow-weak-copy-task "
        "to score anyway")


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
