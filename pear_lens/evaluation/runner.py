"""Evaluate conditions side by side on identical items and summarise with intervals and paired tests.

Items are encoded once (every condition sees the same token ids, in the same
batches) and checked against the model's context length before any model
runs. Each condition's model is built fresh, used for greedy generation and
dropped. The summary has one row per condition and gold position plus an
overall row (``gold_position = "all"``) carrying the exact McNemar p-value
against the baseline on the same items. :func:`evaluate_likelihood` does the
same with teacher-forced answer log-probabilities instead of greedy answers.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from pear_lens.errors import PearLensError
from pear_lens.evaluation.conditions import BASELINE, Condition
from pear_lens.evaluation.decoding import CAD_ALPHA
from pear_lens.evaluation.generate import greedy_generate
from pear_lens.evaluation.likelihood import ENDPOINT_COLUMNS, score_candidates
from pear_lens.evaluation.tasks.candidates import answer_candidates, without_context
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.prompts import PromptStyle, encode
from pear_lens.evaluation.tasks.scoring import best_subspan_em
from pear_lens.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_cluster_bootstrap_diff
from pear_lens.evaluation.tasks import TaskSettings

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ITEM_COLUMNS = ["model", "task", "condition", "item_id", "gold_position", "n_context", "correct", "output",
                "answers", "prompt_style"]
SUMMARY_COLUMNS = ["model", "task", "condition", "gold_position", "n", "accuracy", "ci_low", "ci_high",
                   "delta_vs_baseline", "p_vs_baseline"]
ALL = "all"


@dataclass
class EvalResult:
    """Per-item outcomes and their summary for one model and task."""

    items: pd.DataFrame
    """Tidy: one row per (condition, item), columns :data:`ITEM_COLUMNS`."""
    summary: pd.DataFrame
    """One row per (condition, gold position) plus overall rows, columns :data:`SUMMARY_COLUMNS`."""
    info: dict[str, Any] = field(default_factory=dict)
    """Settings, conditions and timings, for ``eval.json``."""

    def to_dataframe(self) -> pd.DataFrame:
        return self.summary


def encode_items(items: Sequence[Item], style: PromptStyle, tokenizer: "PreTrainedTokenizerBase", *,
                 n_ctx: int, max_new_tokens: int) -> list[list[int]]:
    """Token ids of every prompt; a prompt that leaves no room for the answer is an error naming the item."""
    if not items:
        raise PearLensError("no items to evaluate")
    seen: set[str] = set()
    prompts = []
    for it in items:
        if it.item_id in seen:
            raise PearLensError(f"item id {it.item_id!r} occurs twice; item ids must be unique")
        seen.add(it.item_id)
        ids = encode(it.prompt(), style, tokenizer)
        if len(ids) + max_new_tokens > n_ctx:
            raise PearLensError(
                f"item {it.item_id}: the prompt has {len(ids)} tokens, and with {max_new_tokens} new tokens it "
                f"exceeds the model's context of {n_ctx}; shorten the item or use fewer documents/pairs"
            )
        prompts.append(ids)
    return prompts


def score_items(items: Sequence[Item], outputs: Sequence[str]) -> list[bool]:
    return [best_subspan_em(out, it.answers) for it, out in zip(items, outputs, strict=True)]


def generate_outputs(hf: "PreTrainedModel", tokenizer, prompts: list[list[int]], settings: TaskSettings, *,
                     batch_size: int, progress: bool, desc: str, items: Sequence[Item] | None = None,
                     cad_alpha: float | None = None, no_empty: bool = False) -> list[str]:
    """Greedy answers; with ``cad_alpha`` decoded context-aware (needs ``items`` for their context-free prompts)."""
    free = None
    if cad_alpha is not None:
        if items is None:
            raise PearLensError("context-aware decoding needs the items, to ask each without its context")
        free = [encode(without_context(it), PromptStyle.parse(settings.prompt_style), tokenizer) for it in items]
    return greedy_generate(hf, tokenizer, prompts, max_new_tokens=settings.max_new_tokens, batch_size=batch_size,
                           progress=progress, desc=desc, context_free=free,
                           cad_alpha=cad_alpha if cad_alpha is not None else CAD_ALPHA, no_empty=no_empty)


def known_facts(hf, tokenizer, probes: Sequence[Item], settings: TaskSettings, *, n_ctx: int,
                batch_size: int, progress: bool) -> set[str]:
    """Item ids of the closed-book ``probes`` the (baseline) model answers correctly."""
    prompts = encode_items(probes, PromptStyle.parse(settings.prompt_style), tokenizer, n_ctx=n_ctx,
                           max_new_tokens=settings.max_new_tokens)
    outputs = generate_outputs(hf, tokenizer, prompts, settings, batch_size=batch_size, progress=progress,
                               desc="closed-book check (baseline)")
    return {p.item_id for p, ok in zip(probes, score_items(probes, outputs)) if ok}


def evaluate(model_name: str, task: str, items: Sequence[Item], conditions: Sequence[Condition], tokenizer,
             settings: TaskSettings, *, n_ctx: int, batch_size: int = 16, progress: bool = True,
             seed: int = 0, cache_dir: Path | None = None, cache_key: dict[str, Any] | None = None,
             no_empty: bool = False) -> EvalResult:
    """Run every condition on ``items`` and summarise; the first condition labelled ``baseline`` is the reference.

    ``no_empty`` is the sensitivity arm in which the end of sequence is forbidden until an answer holds text
    (:class:`pear_lens.evaluation.decoding.NoEmptyAnswer`), so accuracy cannot move by empty answers alone.

    With ``cache_dir`` each condition's outputs are kept there (one JSON file per condition) and reused
    while the condition (heads, τ, metadata), the items, the settings, the batch size and ``cache_key``
    (e.g. the weights' fingerprint) are the same: an interrupted evaluation resumes condition by condition.
    """
    labels = [c.label for c in conditions]
    if len(set(labels)) != len(labels):
        raise PearLensError(f"condition labels must be unique, got {labels}")
    style = PromptStyle.parse(settings.prompt_style)
    prompts = encode_items(items, style, tokenizer, n_ctx=n_ctx, max_new_tokens=settings.max_new_tokens)
    rows, timings = [], {}
    for cond in conditions:
        def run(cond: Condition = cond) -> list[str]:
            hf = cond.build()
            return generate_outputs(hf, tokenizer, prompts, settings, batch_size=batch_size, progress=progress,
                                    desc=f"{task} · {cond.label}", items=items, cad_alpha=cond.cad_alpha,
                                    no_empty=no_empty)

        if cache_dir is None:
            start = time.perf_counter()
            outputs = run()
            timings[cond.label] = time.perf_counter() - start
        else:
            from pear_lens.evaluation.splits import items_digest
            from pear_lens.stage_cache import cached_stage

            key = {**(cache_key or {}), "model": model_name, "task": task, "condition": cond.describe(),
                   "items": items_digest(items), "settings": settings.to_dict(), "batch_size": batch_size,
                   **({"no_empty": True} if no_empty else {})}
            outputs, timings[cond.label], _ = cached_stage(Path(cache_dir) / record_names(cond.label)[0], key, run)
        for it, out, ok in zip(items, outputs, score_items(items, outputs)):
            rows.append({"model": model_name, "task": task, "condition": cond.label, "item_id": it.item_id,
                         "gold_position": it.gold_position, "n_context": it.n_context, "correct": bool(ok),
                         "output": out, "answers": " | ".join(it.answers), "prompt_style": style.value})
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    frame["gold_position"] = frame["gold_position"].astype("Int64")
    info = {"n_items": len(items), "settings": settings.to_dict(), "conditions": [c.describe() for c in conditions],
            "seconds_per_condition": timings, "prompt_tokens_mean": float(np.mean([len(p) for p in prompts])),
            "seed": seed, "batch_size": batch_size, **({"no_empty": True} if no_empty else {})}
    return EvalResult(items=frame, summary=summarize(frame, seed=seed), info=info)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def record_names(label: str) -> tuple[str, str]:
    """The file names a condition's records take in a ``cache_dir``: ``(greedy, likelihood)``."""
    return f"{_slug(label)}.json", f"{_slug(label)}.likelihood.json.gz"


def _row(keys: dict[str, Any], correct: np.ndarray, seed: int) -> dict[str, Any]:
    low, high = bootstrap_ci(correct, seed=seed)
    return {**keys, "n": int(correct.size), "accuracy": float(correct.mean()), "ci_low": low, "ci_high": high,
            "delta_vs_baseline": np.nan, "p_vs_baseline": np.nan}


def summarize(items: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Accuracy with a 95% bootstrap CI per (model, task, condition, gold position) and overall.

    Overall rows of non-baseline conditions also carry the accuracy difference
    and the exact McNemar p-value against ``baseline`` on the same item ids.
    """
    out = []
    for (model, task), frame in items.groupby(["model", "task"], sort=False):
        base = frame[frame["condition"] == BASELINE].set_index("item_id")["correct"]
        for cond, sub in frame.groupby("condition", sort=False):
            keys = {"model": model, "task": task, "condition": cond}
            overall = _row({**keys, "gold_position": ALL}, sub["correct"].to_numpy(bool), seed)
            if cond != BASELINE and len(base):
                mine = sub.set_index("item_id")["correct"]
                if set(mine.index) != set(base.index):
                    raise PearLensError(f"condition {cond!r} was scored on other items than the baseline; "
                                        "paired tests need identical items")
                paired = base.loc[mine.index].to_numpy(bool)
                overall["delta_vs_baseline"] = float(mine.mean() - paired.mean())
                overall["p_vs_baseline"] = mcnemar_exact(mine.to_numpy(bool), paired).p_value
            out.append(overall)
            positions = sub["gold_position"].dropna()
            for pos in sorted(positions.unique()):
                at = sub[sub["gold_position"] == pos]["correct"].to_numpy(bool)
                out.append(_row({**keys, "gold_position": str(int(pos))}, at, seed))
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


LIKELIHOOD_COLUMNS = ["model", "task", "condition", "item_id", "gold_position", "cluster", "competitor",
                      *ENDPOINT_COLUMNS, "prompt_style"]
LIKELIHOOD_SUMMARY_COLUMNS = ["model", "task", "condition", "endpoint", "n", "n_clusters", "mean",
                              "delta_vs_baseline", "ci_low", "ci_high", "p_vs_baseline"]
ENDPOINTS = ("logp_gold", "contrast")


@dataclass
class LikelihoodResult:
    """Per-item likelihood endpoints of every condition, and their paired comparison with the baseline."""

    items: pd.DataFrame
    """One row per (condition, item), columns :data:`LIKELIHOOD_COLUMNS`."""
    summary: pd.DataFrame
    """One row per (condition, endpoint), columns :data:`LIKELIHOOD_SUMMARY_COLUMNS`."""
    info: dict[str, Any] = field(default_factory=dict)

    def to_dataframe(self) -> pd.DataFrame:
        return self.summary


def evaluate_likelihood(model_name: str, task: str, items: Sequence[Item], conditions: Sequence[Condition],
                        tokenizer, settings: TaskSettings, *, n_ctx: int, batch_size: int = 16,
                        progress: bool = True, seed: int = 0, clusters: Sequence[str] | None = None,
                        cache_dir: Path | None = None, cache_key: dict[str, Any] | None = None) -> LikelihoodResult:
    """Teacher-forced endpoints (:mod:`pear_lens.evaluation.likelihood`) of every condition on ``items``.

    One pass over each item's prompt, then one short pass per candidate answer; CAD conditions add the pass
    over the context-free prompt. ``clusters`` (one label per item, e.g. the fact a counterfactual item asks
    about) keeps items that share a fact together in the bootstrap. ``cache_dir`` keeps each condition's
    scores (resumable), as :func:`evaluate` does.
    """
    labels = [c.label for c in conditions]
    if len(set(labels)) != len(labels):
        raise PearLensError(f"condition labels must be unique, got {labels}")
    style = PromptStyle.parse(settings.prompt_style)
    prompts = encode_items(items, style, tokenizer, n_ctx=n_ctx, max_new_tokens=settings.max_new_tokens)
    clusters = list(clusters) if clusters is not None else [it.item_id for it in items]
    if len(clusters) != len(items):
        raise PearLensError(f"clusters must name one cluster per item ({len(items)} items), got {len(clusters)}")
    cands = [answer_candidates(it) for it in items]
    rows, timings = [], {}
    for cond in conditions:
        def run(cond: Condition = cond) -> list[dict[str, Any]]:
            return score_candidates(cond.build(), tokenizer, items, prompts, style, batch_size=batch_size,
                                    cad_alpha=cond.cad_alpha, progress=progress, desc=f"{task} · {cond.label}")

        if cache_dir is None:
            start = time.perf_counter()
            scores = run()
            timings[cond.label] = time.perf_counter() - start
        else:
            from pear_lens.evaluation.splits import items_digest
            from pear_lens.stage_cache import cached_stage

            key = {**(cache_key or {}), "endpoint": "likelihood", "model": model_name, "task": task,
                   "condition": cond.describe(), "items": items_digest(items), "settings": settings.to_dict(),
                   "batch_size": batch_size}
            scores, timings[cond.label], _ = cached_stage(Path(cache_dir) / record_names(cond.label)[1],
                                                          key, run)
        for it, c, cl, sc in zip(items, cands, clusters, scores, strict=True):
            rows.append({"model": model_name, "task": task, "condition": cond.label, "item_id": it.item_id,
                         "gold_position": it.gold_position, "cluster": cl, "competitor": c.competitor,
                         **{k: sc[k] for k in ENDPOINT_COLUMNS}, "prompt_style": style.value})
    frame = pd.DataFrame(rows, columns=LIKELIHOOD_COLUMNS)
    frame["gold_position"] = frame["gold_position"].astype("Int64")
    info = {"n_items": len(items), "settings": settings.to_dict(), "conditions": [c.describe() for c in conditions],
            "seconds_per_condition": timings, "seed": seed, "batch_size": batch_size,
            "n_clusters": len(set(clusters))}
    return LikelihoodResult(items=frame, summary=summarize_likelihood(frame, seed=seed), info=info)


def summarize_likelihood(items: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Mean of each endpoint per condition; for non-baseline conditions the paired difference from the baseline
    on the same items, with a cluster-bootstrap 95 % interval and p-value
    (:func:`pear_lens.evaluation.stats.paired_cluster_bootstrap_diff`). An endpoint undefined on the task (a
    contrast where no item has an alternative) gets no row; items where it is undefined are left out, and
    ``n`` says how many remain."""
    out = []
    for (model, task), frame in items.groupby(["model", "task"], sort=False):
        base = frame[frame["condition"] == BASELINE].set_index("item_id")
        for cond, sub in frame.groupby("condition", sort=False):
            sub = sub.set_index("item_id")
            for endpoint in ENDPOINTS:
                values = sub[endpoint].astype(float)
                keep = values.notna()
                if cond != BASELINE and len(base):
                    if set(sub.index) != set(base.index):
                        raise PearLensError(f"condition {cond!r} was scored on other items than the baseline; "
                                            "paired comparisons need identical items")
                    keep &= base.loc[sub.index, endpoint].astype(float).notna()
                if not keep.any():
                    continue
                row = {"model": model, "task": task, "condition": cond, "endpoint": endpoint, "n": int(keep.sum()),
                       "n_clusters": int(sub.loc[keep, "cluster"].nunique()), "mean": float(values[keep].mean()),
                       "delta_vs_baseline": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_vs_baseline": np.nan}
                if cond != BASELINE and len(base):
                    ref = base.loc[sub.index[keep], endpoint].astype(float).to_numpy()
                    diff = paired_cluster_bootstrap_diff(values[keep].to_numpy(), ref,
                                                         sub.loc[keep, "cluster"].to_numpy(), seed=seed)
                    row.update(delta_vs_baseline=diff.estimate, ci_low=diff.ci_low, ci_high=diff.ci_high,
                               p_vs_baseline=diff.p_value)
                out.append(row)
    return pd.DataFrame(out, columns=LIKELIHOOD_SUMMARY_COLUMNS)
