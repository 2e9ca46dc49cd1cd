"""``head_atlas``: run every chosen detector on a model whose heads a discovery run has scored.

Each prompt set is recorded once, batch by batch (one forward keeps every layer's attention
pattern, per-head output and the final residual stream), and every detector that reads the set
scores that batch before the next is recorded, so memory holds one batch at a time.
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from pear_lens.atlas import detectors as _builtin  # noqa: F401  (registers the shipped detectors)
from pear_lens.atlas.base import DETECTORS, PromptSet, Recording, detector_options, record
from pear_lens.atlas.needle import NeedleConfig, build_prompts, copied, greedy_answers
from pear_lens.atlas.result import HeadAtlas
from pear_lens.errors import PearLensError
from pear_lens.proxy_task import ProxyTask

if TYPE_CHECKING:
    from pear_lens.models.loaded import ModelLike
    from pear_lens.results import HeadScores

ANSWER_EXTRA_TOKENS = 3
"""Tokens generated past the needle's length (a model may restate a word before the value)."""


def check_detectors(names: Sequence[str] | None, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{name: options}`` for the chosen detectors (default: all); an unknown name or an option for a
    detector not chosen is one clear error."""
    names = list(dict.fromkeys(names)) if names else list(DETECTORS)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise PearLensError(f"unknown head detector {unknown[0]!r}; choose from: {', '.join(DETECTORS)}")
    options = dict(options or {})
    stray = [n for n in options if n not in names]
    if stray:
        raise PearLensError(f"options were given for detector {stray[0]!r}, which is not among the chosen detectors "
                            f"({', '.join(names)})")
    out = {}
    for n in names:
        given = options.get(n)
        if given is None or dataclasses.is_dataclass(given):
            out[n] = detector_options(n, given)
        else:
            out[n] = detector_options(n, **dict(given))
    return out


def _plain(options: Any) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def head_atlas(
    model: "ModelLike",
    delta_pi: "HeadScores",
    detectors: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    *,
    needle: NeedleConfig = NeedleConfig(),
    proxy_settings: Sequence[tuple[int, int]] | None = None,
    progress: bool = False,
    pattern_hook: Callable | None = None,
) -> HeadAtlas:
    """Score every head of ``model`` with each detector (default: all registered) beside its Δπ.

    ``delta_pi`` is a discovery run's scores of the same weights; the proxy-task detectors read that
    run's own sequences (``proxy_settings`` replaces its (batch, n) settings, same seed and BOS: fewer
    sequences for a quick look). ``options`` maps a detector's name to its options (an options dataclass or a
    mapping). ``pattern_hook(layer, pattern) -> pattern`` may edit attention while recording (tests).
    ``model`` is any form :func:`~pear_lens.models.loaded.as_loaded` accepts.

    >>> import pear_lens as pl
    >>> m = pl.load_model("tiny-llama")
    >>> run = pl.score_heads(m, pl.ProxyTask(settings=((4, 6),)), "logit_minus_mean", "path")
    >>> atlas = head_atlas(m, run, ["previous_token", "sink"])
    >>> list(atlas.to_dataframe().columns)[:5]
    ['layer', 'head', 'relative_depth', 'delta_pi', 'delta_pi_rank']
    """
    from pear_lens.models.loaded import as_loaded

    model = as_loaded(model)
    chosen = check_detectors(detectors, options)
    # compared as the scoring computed it: of the weights in the dtype they were scored in
    same = model.fingerprint_as(delta_pi.extra.get("dtype")) if delta_pi.fingerprint else ""
    if delta_pi.fingerprint and delta_pi.fingerprint != same:
        raise PearLensError(f"the Δπ scores were computed on other weights ({delta_pi.model}, fingerprint "
                            f"{delta_pi.fingerprint[:16]}…) than {model.name} ({same[:16]}…); "
                            "load the model the discovery run scored")
    if tuple(delta_pi.scores.shape) != (model.n_layers, model.n_heads):
        raise PearLensError(f"the Δπ scores cover {delta_pi.n_layers} × {delta_pi.n_heads} heads but {model.name} "
                            f"has {model.n_layers} × {model.n_heads}")
    by_set: dict[PromptSet, list[str]] = {}
    for name in chosen:
        by_set.setdefault(DETECTORS[name].prompts, []).append(name)
    task = ProxyTask.from_dict(delta_pi.task)
    if proxy_settings:
        task = dataclasses.replace(task, settings=tuple(proxy_settings))
    # everything that can be refused is refused before the first forward
    batches = task.batches(model) if PromptSet.PROXY in by_set else []
    needle_prompts = build_prompts(model, needle, ANSWER_EXTRA_TOKENS) if PromptSet.NEEDLE in by_set else []

    per_batch: dict[str, list[torch.Tensor]] = {n: [] for n in chosen}
    seconds = {n: 0.0 for n in chosen}
    extra: dict[str, Any] = {"seconds_recording": {}}
    prompts: dict[str, Any] = {}
    diagnostics: dict[str, dict[str, Any]] = {n: {} for n in chosen}

    def score(names: list[str], rec: Recording) -> None:
        for n in names:
            t0 = time.perf_counter()
            per_batch[n].append(DETECTORS[n].fn(model, rec, chosen[n]).float().cpu())
            seconds[n] += time.perf_counter() - t0

    if batches:
        names = by_set[PromptSet.PROXY]
        t_rec = 0.0
        for batch in tqdm(batches, desc="atlas: proxy prompts", disable=not progress, leave=False):
            t0 = time.perf_counter()
            rec = record(model, batch.tokens, pattern_hook=pattern_hook, offset=batch.offset, n=batch.n)
            t_rec += time.perf_counter() - t0
            score(names, rec)
            del rec
        extra["seconds_recording"]["proxy"] = t_rec
        prompts["proxy"] = {"task": task.to_dict(), "n_prompts": sum(b.batch_size for b in batches),
                            "note": "the discovery run's own sequences" if not proxy_settings
                            else "the discovery run's task (seed, BOS, vocabulary) with other settings"}
    if needle_prompts:
        names = by_set[PromptSet.NEEDLE]
        t0 = time.perf_counter()
        answers = greedy_answers(model, needle_prompts, ANSWER_EXTRA_TOKENS)
        extra["seconds_generation"] = time.perf_counter() - t0
        t_rec = 0.0
        n_copied = 0
        for p, answer in tqdm(list(zip(needle_prompts, answers)), desc="atlas: needle prompts", disable=not progress,
                              leave=False):
            ok = copied(p, answer)
            n_copied += ok
            t0 = time.perf_counter()
            rec = record(model, torch.tensor([p.ids + answer]), pattern_hook=pattern_hook,
                         needle=[{"prompt_len": len(p.ids), "needle_start": p.needle_start,
                                  "needle_end": p.needle_end, "copied": ok}])
            t_rec += time.perf_counter() - t0
            score(names, rec)
            del rec
        extra["seconds_recording"]["needle"] = t_rec
        prompts["needle"] = {**dataclasses.asdict(needle), "n_copied": n_copied,
                             "copy_rate": n_copied / len(needle_prompts),
                             "prompt_tokens": [len(p.ids) for p in needle_prompts],
                             "note": "invented facts; the prompt ends by restating the needle's subject"}
        for n in names:
            diagnostics[n].update(n_copied=n_copied, n_prompts=len(needle_prompts))
        if n_copied == 0 and not all(getattr(chosen[n], "all_prompts", False) for n in names):
            raise PearLensError(f"{model.name} reproduced the needle in none of {len(needle_prompts)} prompts, so no "
                                "head can be scored as retrieving it; try a smaller --needle.haystack-tokens")

    described = {}
    for n, opts in chosen.items():
        d = DETECTORS[n]
        described[n] = {"short": d.short, "definition": d.definition, "source": d.source, "prompts": d.prompts.value,
                        "options": _plain(opts), "higher_is_role": d.higher_is_role,
                        "seconds": round(seconds[n], 3), "diagnostics": diagnostics[n]}
    extra["seconds"] = round(sum(seconds.values()) + sum(extra["seconds_recording"].values())
                             + extra.get("seconds_generation", 0.0), 3)
    return HeadAtlas(delta_pi=delta_pi, per_prompt={n: torch.cat(per_batch[n]) for n in chosen},
                     detectors=described, prompts=prompts, extra=extra)
