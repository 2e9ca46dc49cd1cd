"""How stable are PEAR's heads? The published discovery run's scan, repeated on new proxy-task seeds.

For each model, the path scan of its published discovery run (``artifacts/MODEL/discovery.json``: the same
method, metric, settings, vocabulary and BOS) runs again on the CPU with proxy-task seeds 0, 1, ... (new random
sequences each). Each seed's scores are saved whole (``HeadScores.save``: per-prompt values included) under
``figures/results/stability/MODEL/seed_S/``; a seed already saved is read back, not rescored, so the run resumes.
From them: each head's probability of being in the top K over the seeds (K: the number of heads the published
artifact trained), the top-K overlap between seeds, and seed 0's bootstrap intervals and FDR-corrected tests.

    python -m studies.stability                        # both models, seeds 0-4 (~25 min on 2 CPU cores)
    python -m studies.stability --report-only          # rewrite the summaries from the saved seeds

Writes ``figures/results/stability/MODEL/summary.json``, ``figures/stability_MODEL.csv`` and the caterpillar
figure ``figures/caterpillar_MODEL.{html,png}``; ``studies/update_readme.py`` puts the summary in the README.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pear_lens import HeadScores, ProxyTask, load_model, score_heads
from pear_lens.errors import PearLensError
from pear_lens.heads import Head, head_label
from pear_lens.io import atomic_write_json, atomic_write_text
from pear_lens.figure_files import save_figure

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "figures" / "results" / "stability"
FIGURES = ROOT / "figures"
MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
SEEDS = (0, 1, 2, 3, 4)
LEVEL, N_BOOT, BOOT_SEED, ALPHA = 0.95, 2000, 0, 0.05


def published(model: str) -> tuple[dict, list[Head]]:
    """The published discovery run's settings and the heads its artifact trained."""
    discovery = json.loads((ROOT / "artifacts" / model / "discovery.json").read_text())
    pear = json.loads((ROOT / "artifacts" / model / "pear.json").read_text())
    return discovery["config"], [(h["layer"], h["head"]) for h in pear["heads"]]


def seed_scores(model: str, config: dict, seeds: list[int], score: bool) -> list[HeadScores]:
    out, loaded = [], None
    for seed in seeds:
        folder = OUT / model / f"seed_{seed}"
        if (folder / "scores.json").exists():
            out.append(HeadScores.load(folder))
            continue
        if not score:
            raise PearLensError(f"{folder} is missing: run without --report-only to score it")
        loaded = loaded or load_model(model)
        task = ProxyTask(settings=tuple(map(tuple, config["settings"])), vocab=config["vocab"],
                         min_token_id=config.get("min_token_id", 0), prepend_bos=config["prepend_bos"], seed=seed)
        scores = score_heads(loaded, task, config["metric"], config["method"], difference=config["difference"],
                             seed=seed, progress=False, ablation=config["ablation"])
        scores.save(folder)
        print(f"{model} seed {seed}: {scores.extra['seconds']:.0f} s", flush=True)
        out.append(scores)
    return out


def summarise(model: str, runs: list[HeadScores], pear_heads: list[Head]) -> dict:
    k = len(pear_heads)
    first = runs[0]
    stability = first.stability(runs[1:], k)
    lo, hi = first.ci(level=LEVEL, n_boot=N_BOOT, seed=BOOT_SEED)
    q = first.qvalues()
    table = stability.to_dataframe()
    table["seed0_score"] = [float(first.scores[l, h]) for l, h in zip(table["layer"], table["head"])]
    table["seed0_ci_low"] = [float(lo[l, h]) for l, h in zip(table["layer"], table["head"])]
    table["seed0_ci_high"] = [float(hi[l, h]) for l, h in zip(table["layer"], table["head"])]
    table["seed0_q_value"] = [float(q[l, h]) for l, h in zip(table["layer"], table["head"])]
    table["in_pear"] = [(l, h) in pear_heads for l, h in zip(table["layer"], table["head"])]
    table = table.sort_values(["top_k_probability", "mean_score"], ascending=False)
    atomic_write_text(FIGURES / f"stability_{model}.csv", table.to_csv(index=False, float_format="%.6g"))
    save_figure(first.caterpillar(top=20, level=LEVEL, n_boot=N_BOOT, seed=BOOT_SEED), FIGURES / f"caterpillar_{model}.html",
                formats=["html", "png"])
    prob = {head_label(h): float(stability.top_k_probability[h]) for h in pear_heads}
    excludes_zero = [(l, h) for l, h in pear_heads if lo[l, h] > 0 or hi[l, h] < 0]
    significant = first.significant(ALPHA)
    summary = {
        "model": model, "k": k, "seeds": [r.task["seed"] for r in runs], "n_heads": first.scores.numel(),
        "method": first.method, "metric": first.metric, "difference": first.difference,
        "n_prompts_per_seed": int(first.per_prompt.shape[0]),
        "pear_heads": [head_label(h) for h in pear_heads],
        "pear_top_k_probability": prob,
        "pear_heads_in_every_top_k": sum(p == 1.0 for p in prob.values()),
        "stable_heads": [head_label(h) for h in stability.stable_heads(1.0)],
        "mean_top_k_overlap": float(stability.mean_overlap),
        "min_top_k_overlap": float(stability.overlap[~_eye(len(runs))].min()),
        "seed0": {"level": LEVEL, "n_boot": N_BOOT, "bootstrap_seed": BOOT_SEED, "alpha": ALPHA,
                  "pear_heads_ci_excluding_zero": len(excludes_zero),
                  "significant_suppressors": [head_label(h) for h in significant if first.scores[h] > 0],
                  "significant_helpers": [head_label(h) for h in significant if first.scores[h] < 0]},
    }
    atomic_write_json(OUT / model / "summary.json", summary)
    return summary


def _eye(n: int):
    import numpy as np

    return np.eye(n, dtype=bool)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report-only", action="store_true", help="only summarise the saved seeds")
    args = parser.parse_args(argv)
    if len(args.seeds) < 3:
        parser.error("a stability report needs at least 3 seeds")
    for model in args.models:
        config, pear_heads = published(model)
        runs = seed_scores(model, config, args.seeds, score=not args.report_only)
        s = summarise(model, runs, pear_heads)
        print(f"{model}: {s['pear_heads_in_every_top_k']} of PEAR's {s['k']} heads in the top {s['k']} of every "
              f"seed; mean top-{s['k']} overlap {s['mean_top_k_overlap']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
