"""The K sweep: how many heads to re-weight (top-K vs random-K heads, retrained for each K; `pear-lens ablate`).

For each K the top-K heads by Δπ are retrained, and so are K heads drawn at
random (several draws) as a control; each τ is then scored on held-out proxy
sequences (a fixed evaluation seed distinct from the training seed): copy
accuracy and copy loss. Every run uses the same training sequences, so rows
differ only in which heads were re-weighted (and, where stated in the
``steps`` column, in the training budget).

A full curve is 1 + len(K) × (1 + seeds) trainings. The command's defaults
(30 steps at batch 10 in bf16, 2 random draws) halve the reference budget on
both sides: the six default K values on SmolLM2 took 37 minutes on a shared
2-core CPU; ``--steps 60 --control-steps 60 --batch-size 20 --seeds 3 --precision
fp32`` is the full reference budget. With Adam, τ moves about ``lr`` per step,
so fewer steps also bound how far τ can go: compare top-K and random heads at
equal steps.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from pear_lens.errors import PearLensError
from pear_lens.proxy_task import ProxyTask, TaskBatch
from pear_lens.controls import random_heads
from pear_lens.reweight import CopyEval, Head, evaluate_copy, train_coefficients
from pear_lens.recipe import Recipe

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.results import HeadScores

COLUMNS = ["k", "selection", "seed", "steps", "copy_accuracy", "copy_loss", "n_eval"]
EVAL_SEED = 104_729
"""Default seed of the held-out evaluation sequences (training seeds are small integers)."""


def choose_k(df: pd.DataFrame, fraction: float = 0.9) -> int:
    """The K a K-sweep table recommends: the smallest K whose top-K heads reach ``fraction`` of the
    largest reduction of held-out copy loss over the original model (the ``none`` row)."""
    if not 0 < fraction <= 1:
        raise PearLensError(f"fraction must be in (0, 1], got {fraction}")
    base, top = df[df["selection"] == "none"], df[df["selection"] == "top"].sort_values("k")
    if base.empty or top.empty:
        raise PearLensError("the K-sweep table needs the original model's row and top-K rows; rerun `pear-lens ablate`")
    gain = float(base["copy_loss"].iloc[0]) - top["copy_loss"]
    if gain.max() <= 0:
        raise PearLensError("re-weighting lowered the held-out copy loss for no K; there is no K to recommend")
    return int(top.loc[gain >= fraction * gain.max(), "k"].iloc[0])


def eval_batches(model: "LoadedModel", n_eval: int, n: int, seed: int, batch: int, prepend_bos: bool = False,
                 min_token_id: int = 2) -> list[TaskBatch]:
    """``n_eval`` held-out proxy sequences in batches of ``batch``."""
    sizes = [min(batch, n_eval - i) for i in range(0, n_eval, batch)]
    task = ProxyTask(settings=tuple((b, n) for b in sizes), min_token_id=min_token_id,
                     prepend_bos=prepend_bos, seed=seed)
    return task.batches(model)


def k_sweep(
    model: "LoadedModel",
    scores: "HeadScores",
    ks: Sequence[int],
    *,
    train: Recipe | None = None,
    control_steps: int | None = None,
    seeds: int = 3,
    n_eval: int = 100,
    eval_seed: int = EVAL_SEED,
    progress: bool = True,
) -> pd.DataFrame:
    """Retrain for every K (top-K and ``seeds`` random draws) and score on held-out sequences.

    Returns one row per trained τ plus a ``none`` row (k = 0, the original
    model), with the columns of :data:`COLUMNS` and ``heads``, ``lowest_layer``,
    ``seconds``, ``train_seed``, ``eval_seed``, ``batch_size``, ``precision``, ``prepend_bos``. ``seed`` is the random draw of
    the heads (``random`` rows; 0 otherwise). ``control_steps`` trains the
    random controls for fewer steps to save time; the ``steps`` column records it.
    """
    train = train or Recipe()
    if eval_seed == train.seed:
        raise PearLensError(f"eval_seed {eval_seed} equals the training seed; held-out sequences need another seed")
    total = scores.n_layers * scores.n_heads
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1 or ks[-1] > total:
        raise PearLensError(f"every K must be between 1 and {total} (the number of heads), got {ks}")
    if seeds < 0 or n_eval < 1:
        raise PearLensError("seeds must be >= 0 and n_eval >= 1")
    control = replace(train, steps=control_steps) if control_steps else train
    batches = eval_batches(model, n_eval, train.n, eval_seed, train.micro_batch, train.prepend_bos,
                           train.min_token_id)

    def row(k: int, selection: str, seed: int, steps: int, heads: list[Head], result: CopyEval,
            seconds: float) -> dict:
        return {"k": k, "selection": selection, "seed": seed, "steps": steps, "copy_accuracy": result.accuracy,
                "copy_loss": result.loss, "n_eval": result.n_sequences,
                "heads": " ".join(f"{l}.{h}" for l, h in heads),
                "lowest_layer": min((l for l, _ in heads), default=None), "seconds": round(seconds, 2),
                "train_seed": train.seed, "eval_seed": eval_seed, "batch_size": train.batch_size,
                "precision": train.precision, "prepend_bos": train.prepend_bos}

    jobs = [(k, "top", 0) for k in ks] + [(k, "random", s) for k in ks for s in range(seeds)]
    rows = [row(0, "none", 0, 0, [], evaluate_copy(model, batches), 0.0)]
    bar = tqdm(jobs, desc="K sweep", unit="run", disable=not progress)
    for k, selection, seed in bar:
        bar.set_postfix_str(f"K={k} {selection}{'' if selection == 'top' else f' seed {seed}'}")
        heads = scores.top_k(k) if selection == "top" else random_heads(scores.n_layers, scores.n_heads, k, seed)
        cfg = train if selection == "top" else control
        t0 = time.perf_counter()
        result = train_coefficients(model, heads, cfg, progress=False)
        rows.append(row(k, selection, seed, cfg.steps, heads, evaluate_copy(model, batches, heads, result.tau),
                        time.perf_counter() - t0))
    df = pd.DataFrame(rows)
    df["lowest_layer"] = df["lowest_layer"].astype("Int64")  # empty for the baseline row
    return df
