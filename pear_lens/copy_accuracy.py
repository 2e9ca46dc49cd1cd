"""Can the model do the copy proxy task? Its clean copy accuracy, and the check every scan of the task runs.

Heads ranked on a task the model cannot do rank noise (Gemma-3-270m without a BOS token copies about one
token in eight), so before scoring, the unmodified model's copy accuracy on the proxy task's own sequences
is measured (:func:`clean_copy`) and compared with :data:`MIN_COPY_ACCURACY` (:func:`check_copy_task`).
``pear-lens discover`` and ``score_heads`` run the same check.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from pear_lens.errors import CopyTaskTooWeak
from pear_lens.proxy_task import ProxyTask, TaskBatch

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

MIN_COPY_ACCURACY = 0.5
"""Below this clean copy accuracy on its proxy task a model is said not to do the task (discovery stops).

The accuracy counts the copy-half positions whose target the context reveals (all but the first, which
predicts the start of the repeat); the record keeps the all-positions accuracy beside it."""


@dataclass(frozen=True)
class CopyEval:
    """Copy-half accuracy (greedy prediction = target) and mean cross-entropy.

    The positions are those of the training loss. The first of them predicts
    the start of the repeat, which the context cannot reveal, so ``accuracy`` is at
    most ``(n-1)/n``; ``copyable_accuracy`` leaves that position out, so it measures
    copying alone (1.0 for a perfect copier at every n).
    """

    accuracy: float
    loss: float
    n_sequences: int
    n_predictions: int
    copyable_accuracy: float = float("nan")

    @classmethod
    def of(cls, outputs: Iterable[tuple[Tensor, Tensor]]) -> "CopyEval":
        """Pool ``(logits [batch, n, vocab], targets [batch, n])`` pairs."""
        correct = total = sequences = copyable = copyable_total = 0
        loss_sum = 0.0
        for logits, targets in outputs:
            logits = logits.float()
            targets = targets.to(logits.device)  # under a device map the logits come off the last device
            hits = logits.argmax(-1) == targets
            correct += int(hits.sum())
            copyable += int(hits[:, 1:].sum())  # the first target starts the repeat: nothing to copy yet
            loss_sum += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"))
            total += targets.numel()
            copyable_total += hits[:, 1:].numel()
            sequences += targets.shape[0]
        return cls(accuracy=correct / total, loss=loss_sum / total, n_sequences=sequences, n_predictions=total,
                   copyable_accuracy=copyable / copyable_total if copyable_total else float("nan"))


def copy_inputs(batch: TaskBatch) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch n"], int]:
    """``(tokens, targets, keep)``: the tokens a forward needs, the copy-half targets, and how many
    final positions' logits predict them (the last token is only ever a target, so it is dropped)."""
    copy = batch.copy_slice
    return batch.tokens[:, : copy.stop], batch.tokens[:, copy.start + 1: copy.stop + 1], copy.stop - copy.start


def clean_copy(model: "LoadedModel", task: ProxyTask, micro_batch: int = 20) -> CopyEval:
    """Copy accuracy and loss of the unmodified model on ``task``'s own sequences (every setting pooled).

    Run in micro-batches: the copy-half logits of a reference batch (100 sequences) over a 262k
    vocabulary would take gigabytes at once.
    """
    def outputs():
        for b in task.batches(model):
            for rows in b.tokens.split(micro_batch):
                tokens, targets, keep = copy_inputs(TaskBatch(rows, b.n, b.offset))
                yield model.bridge(tokens, logits_to_keep=keep), targets

    with torch.no_grad():
        return CopyEval.of(outputs())


def copy_task_record(task: ProxyTask, result: "CopyEval", seconds: float) -> dict:
    """What ``discovery.json`` (and evaluate_all) record of a clean copy check."""
    # the check's accuracy leaves out the first copy-half position: it predicts the start of the repeat,
    # which no model can know, and would cap a perfect copier at (n-1)/n (90 % at the reference n = 10)
    return {"prepend_bos": task.prepend_bos, "clean_copy_accuracy": round(result.copyable_accuracy, 6),
            "clean_copy_accuracy_all_positions": round(result.accuracy, 6),
            "clean_copy_loss": round(result.loss, 6), "n_sequences": result.n_sequences,
            "n_predictions": result.n_predictions, "settings": [list(s) for s in task.settings],
            "seed": task.seed, "seconds": round(seconds, 2)}


def weak_copy_message(model_name: str, record: dict, python: bool = False) -> str | None:
    """The one line that says the model copies below :data:`MIN_COPY_ACCURACY` (None when it does not), naming
    the command line's options or, with ``python``, the Python arguments."""
    acc = record["clean_copy_accuracy"]
    if acc >= MIN_COPY_ACCURACY:
        return None
    bos = record["prepend_bos"]
    if python:
        fix = (f"{'try ProxyTask(prepend_bos=False)' if bos else 'use ProxyTask(prepend_bos=True)'}, or pass "
               "copy_check='off' to score anyway")
    else:
        fix = (f"{'try without --prepend-bos' if bos else 'rerun with --prepend-bos'}, or pass "
               "--allow-weak-copy-task to score anyway")
    return (f"{model_name} copies only {acc:.1%} of the proxy task's tokens {'with' if bos else 'without'} BOS "
            f"(below {MIN_COPY_ACCURACY:.0%}), so its heads would be ranked on a task it cannot do; {fix}")


def check_copy_task(model_name: str, record: dict, allow_weak: bool = False) -> None:
    """Stop (one line naming ``--prepend-bos``) when the model copies below :data:`MIN_COPY_ACCURACY`."""
    message = weak_copy_message(model_name, record)
    if message and not allow_weak:
        raise CopyTaskTooWeak(message)
