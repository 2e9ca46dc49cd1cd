"""The fixed parts of the context-use study, shared by its pilot, its plan and its run.

- **Fact splits.** The new bank (:mod:`studies.context_use.fact_bank`) is split once by a hash of each fact's id:
  ``dev`` facts feed the pilot, ``test`` facts the confirmatory items. No test fact is asked before the plan is
  committed.
- **Who knows what.** A fact is *known* to a model when its baseline greedy answer to the fact's **probe**
  question (another phrasing than the test question) is correct; only known facts make counterfactual items.
- **Seeds.** Dev items (KV, MDQA) use :data:`DEV_SEED`; test items use the seed the plan claims.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from pear_lens.evaluation.tasks.facts import ClosedBookItem, Fact, load_facts
from studies.context_use.fact_bank import OUT as BANK

DEV_SEED = 20261206
"""Seed of the pilot's (dev) KV and MDQA items; never a test seed."""
DEV, TEST = "dev", "test"
RESULTS = Path(__file__).resolve().parents[2] / "figures" / "results" / "context_use"
REGISTRY = RESULTS.parent / "test_seeds.json"
"""The record of every seed used for items (:mod:`studies.confirmatory.ledger`)."""


def split_of(fact: Fact) -> str:
    """``dev`` or ``test``, fixed by the SHA-256 of the fact's id (about half each)."""
    return DEV if hashlib.sha256(fact.fact_id.encode()).digest()[0] % 2 == 0 else TEST


def bank_facts(split: str, path: Path = BANK) -> list[Fact]:
    return [f for f in load_facts(path) if split_of(f) == split]


def probe_items(facts: Sequence[Fact], path: Path = BANK) -> list[ClosedBookItem]:
    """Closed-book items asking each fact's probe question (for deciding which facts a model knows)."""
    probes = {c["category"]: c["probe_question"] for c in json.loads(path.read_text(encoding="utf-8"))["categories"]}
    return [ClosedBookItem(item_id=f.fact_id, question=probes[f.category].format(subject=f.subject),
                           answers=f.answers, category=f.category) for f in facts]


def closed_book(facts: Sequence[Fact]) -> list[ClosedBookItem]:
    """Closed-book items asking each fact's test question."""
    return [ClosedBookItem(item_id=f.fact_id, question=f.question, answers=f.answers, category=f.category)
            for f in facts]


def known(facts: Sequence[Fact], known_ids: set[str]) -> list[Fact]:
    return [replace(f) for f in facts if f.fact_id in known_ids]


def known_bank_facts(model, split: str, cache: Path, batch_size: int, on_mismatch: str = "recompute"
                     ) -> tuple[list[Fact], float]:
    """The facts of ``split`` the baseline knows (:func:`probe_items`, greedy, the model's closed-book settings),
    kept in ``cache`` under the model, its weights, the facts and the settings; and the probe's seconds per fact."""
    from pear_lens.evaluation.runner import known_facts
    from pear_lens.evaluation.tasks import TaskName
    from pear_lens.evaluation.tasks.calibration import settings_for
    from pear_lens.stage_cache import cached_stage

    facts = bank_facts(split)
    settings = settings_for(model.name, TaskName.CLOSED_BOOK, model.tokenizer)

    def probe() -> list[str]:
        return sorted(known_facts(model.fresh_hf(), model.tokenizer, probe_items(facts), settings, n_ctx=model.n_ctx,
                                  batch_size=batch_size, progress=True))

    ids, seconds, _ = cached_stage(cache, {"model": model.name, "fingerprint": model.fingerprint,
                                           "facts": [f.fact_id for f in facts], "settings": settings.to_dict()},
                                   probe, on_mismatch=on_mismatch)
    return known(facts, set(ids)), seconds / len(facts)
