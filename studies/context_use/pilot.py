"""The pilot of the context-use study: on dev items only, the spread of the paired differences and the cost per item.

The plan sizes the study and states its power from two measured numbers per model and endpoint: the standard
deviation of the per-item difference PEAR − baseline (of cluster means, where items share a fact), and the
seconds per item of one condition's likelihood pass. Both are measured here on dev items (dev KV and MDQA seed,
the dev half of the new fact bank), never on the test facts or the test seed.

Run: ``python -m studies.context_use.pilot --model smollm2-135m-instruct`` (resumes from its per-condition cache
in ``figures/results/context_use/pilot/MODEL/``); writes ``pilot.json`` there.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pear_lens.evaluation import conditions as cond_mod
from pear_lens.evaluation.runner import evaluate_likelihood
from pear_lens.evaluation.tasks import TaskName, generate_items
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.facts import fact_clusters, generate_counterfactual
from pear_lens.io import atomic_write_json
from pear_lens.models import load_model
from studies.confirmatory.ledger import claim_test_seed
from studies.context_use.design import (DEV, DEV_SEED, REGISTRY, RESULTS, bank_facts, closed_book,
                                        known_bank_facts)

ROOT = Path(__file__).resolve().parents[2]


def known_dev_facts(model, folder: Path, batch_size: int, on_mismatch: str = "recompute") -> tuple[list, float]:
    return known_bank_facts(model, DEV, folder / "known_facts.json", batch_size, on_mismatch=on_mismatch)


def task_items(task: TaskName, model, n: int, facts: list) -> tuple[list, list[str] | None]:
    settings = settings_for(model.name, task, model.tokenizer)
    if task is TaskName.COUNTERFACTUAL:
        items = generate_counterfactual(facts, n, n_context=settings.n_context, seed=DEV_SEED)
        return items, fact_clusters(items)
    if task is TaskName.CLOSED_BOOK:
        return closed_book(facts)[:n], None
    return generate_items(task, settings, n, seed=DEV_SEED), None


def spread(frame, endpoint: str, label: str) -> dict[str, Any]:
    """Mean and SD of PEAR − baseline per item and per cluster (the cluster mean of the items' differences)."""
    wide = frame.pivot_table(index=["item_id", "cluster"], columns="condition", values=endpoint).dropna()
    if wide.empty or label not in wide:
        return {"n": 0}
    d = (wide[label] - wide[cond_mod.BASELINE]).rename("d").reset_index()
    by_cluster = d.groupby("cluster")["d"].mean()
    return {"n": int(len(d)), "n_clusters": int(by_cluster.size), "mean_diff": float(d["d"].mean()),
            "sd_item": float(d["d"].std(ddof=1)), "sd_cluster": float(by_cluster.std(ddof=1)),
            "baseline_mean": float(wide[cond_mod.BASELINE].mean()), "baseline_sd": float(wide[cond_mod.BASELINE].std())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=100, help="dev items per task (default 100)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    model = load_model(args.model)
    folder = RESULTS / "pilot" / args.model
    # the dev seed goes on record beside every test seed, so no later study draws its test items from it
    claim_test_seed(REGISTRY, DEV_SEED, "dev items of the context-use pilot (issue 33): KV and MDQA",
                    record="figures/results/context_use/pilot", study="context-use pilot")
    facts, probe_seconds = known_dev_facts(model, folder, args.batch_size)
    print(f"{args.model}: knows {len(facts)} of {len(bank_facts(DEV))} dev facts (probe question)", flush=True)
    pear = cond_mod.from_artifact(model, ROOT / "artifacts" / args.model)
    record: dict[str, Any] = {"model": args.model, "fingerprint": model.fingerprint, "dev_seed": DEV_SEED,
                              "n_dev_facts": len(bank_facts(DEV)), "n_known_dev_facts": len(facts),
                              "probe_seconds_per_fact": probe_seconds, "tasks": {}}
    for task in (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK):
        items, clusters = task_items(task, model, args.n, facts)
        conds = [cond_mod.baseline(model), pear]
        if task is not TaskName.CLOSED_BOOK:
            conds.append(cond_mod.context_aware(model))
        settings = settings_for(args.model, task, model.tokenizer)
        start = time.perf_counter()
        res = evaluate_likelihood(args.model, task.value, items, conds, model.tokenizer, settings, n_ctx=model.n_ctx,
                                  batch_size=args.batch_size, clusters=clusters, cache_dir=folder / task.value,
                                  cache_key={"fingerprint": model.fingerprint})
        secs = res.info["seconds_per_condition"]
        record["tasks"][task.value] = {
            "n_items": len(items), "settings": settings.to_dict(),
            "seconds_per_item": {k: v / len(items) for k, v in secs.items()},
            "endpoints": {e: {lab: spread(res.items, e, lab) for lab in (pear.label, *(
                [conds[2].label] if len(conds) > 2 else []))} for e in ("logp_gold", "contrast")},
            "summary": res.summary.to_dict(orient="records")}
        print(f"  {task.value}: {len(items)} items in {time.perf_counter() - start:.0f} s", flush=True)
    atomic_write_json(folder / "pilot.json", record)
    print(f"wrote {(folder / 'pilot.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
