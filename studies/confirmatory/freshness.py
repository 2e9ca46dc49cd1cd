"""Which of the confirmatory study's test items had been asked before, under the exploratory run's test seed 0.

KV and MDQA items are drawn afresh from a seed, so a new seed gives new items. Closed-book and counterfactual
items are questions about the facts of one 393-fact bank, so a new seed mostly re-asks the same questions. This
script says how many, without a model: the exploratory items are redrawn from their seed exactly as the
exploratory run drew them (the calibrated settings, which drew the confirmatory items too; n = the run's n); the facts the baseline knew closed-book
(which counterfactual items are drawn from) are read off the confirmatory counterfactual items themselves (each
item names one known fact in its question and others in its context) and checked against the count the run
recorded (the exploratory summary records the same count for the same model and weights).

Run: ``python -m studies.confirmatory.freshness`` (seconds) → ``figures/results/confirm/freshness.json``;
``--check`` compares instead of writing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pear_lens.evaluation.splits import prompt_key
from pear_lens.evaluation.tasks import TaskName, TaskSettings, generate_items
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.facts import Fact, load_facts
from pear_lens.io import atomic_write_text
from studies.confirmatory.run import load_items

ROOT = Path(__file__).resolve().parents[2]
CONFIRM = ROOT / "figures" / "results" / "confirm"
OUT = CONFIRM / "freshness.json"
EXPLORATORY_SEED = 0
EXPLORATORY_N = 300
"""The exploratory run's items per task for the models of the confirmatory study (figures/results/summary.csv)."""


def known_from_items(items: list, facts: list[Fact]) -> list[Fact]:
    """The facts a counterfactual item set shows the baseline knew: each item's question, and every true
    statement in its contexts (fillers are drawn from the known facts only), in the bank's order."""
    questions = {it.question for it in items}
    statements = {s for it in items for s in it.context}
    return [f for f in facts if f.question in questions or f.state(f.answers[0]) in statements]


def model_freshness(model: str) -> dict[str, Any]:
    facts = load_facts()
    by_question = {f.question: f for f in facts}
    out: dict[str, Any] = {}
    cf_items, cf_meta = load_items(CONFIRM / model / "items" / "counterfactual.jsonl.gz", TaskName.COUNTERFACTUAL)
    known = known_from_items(cf_items, facts)
    if len(known) != cf_meta["known_facts"]:
        raise SystemExit(f"{model}: the counterfactual items show {len(known)} known facts, the run recorded "
                         f"{cf_meta['known_facts']}; the known set cannot be read off the items")
    for task in (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK):
        test, meta = load_items(CONFIRM / model / "items" / f"{task.value}.jsonl.gz", task)
        settings = TaskSettings(**meta["settings"])
        if settings != settings_for(model, task, None):  # the exploratory run drew with the calibrated settings
            raise SystemExit(f"{model} {task.value}: the confirmatory items' settings are not the calibrated ones")
        earlier = generate_items(task, settings, EXPLORATORY_N, seed=EXPLORATORY_SEED,
                                 known_facts=known if task is TaskName.COUNTERFACTUAL else None)
        same_prompt = {prompt_key(it) for it in earlier}
        entry = {"n_items": len(test), "same_item_as_seed_0": sum(prompt_key(it) in same_prompt for it in test)}
        if task in (TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK):
            asked = {by_question[it.question].fact_id for it in earlier}
            ids = [by_question[it.question].fact_id for it in test]
            entry.update(n_facts=len(set(ids)), facts_asked_at_seed_0=len(set(ids) & asked),
                         items_on_a_fact_asked_at_seed_0=sum(i in asked for i in ids))
        out[task.value] = entry
    return {"known_facts": len(known), "tasks": out}


def build() -> dict[str, Any]:
    models = sorted(p.parent.parent.name for p in CONFIRM.glob("*/items/kv.jsonl.gz"))
    return {"what": "confirmatory test items already asked under the exploratory test seed 0 (same prompt; for the "
                    "fact tasks also the same fact asked)", "exploratory_seed": EXPLORATORY_SEED,
            "exploratory_n": EXPLORATORY_N, "script": "python -m studies.confirmatory.freshness",
            "models": {m: model_freshness(m) for m in models}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing it")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == text
        print(f"{OUT.relative_to(ROOT)}: {'up to date' if same else 'differs; rerun without --check'}")
        return 0 if same else 1
    atomic_write_text(OUT, text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
