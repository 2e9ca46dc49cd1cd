"""The context-use study's fact bank: new facts, disjoint from every earlier fact and item set, rebuilt exactly."""
from __future__ import annotations

import json

import pytest

from pear_lens.evaluation.tasks.facts import generate_counterfactual, load_facts
from studies.context_use import fact_bank


def test_the_bank_loads_as_facts_and_makes_counterfactual_items():
    facts = load_facts(fact_bank.OUT)
    assert len(facts) > 1000 and len({f.fact_id for f in facts}) == len(facts)
    items = generate_counterfactual(facts[:200], 50, n_context=3, seed=0)
    assert len(items) == 50 and all(set(it.answers).isdisjoint(it.parametric_answers) for it in items)


def test_the_bank_shares_no_subject_or_question_with_any_earlier_fact_or_item():
    facts = load_facts(fact_bank.OUT)
    earlier = fact_bank.earlier_texts()
    assert len(fact_bank.earlier_item_files()) >= 4  # the two models' counterfactual and closed-book item sets
    assert "what is the capital of france?" in earlier  # the earlier bank is read
    questions = {f.question.lower() for f in facts}
    assert not questions & set(earlier)
    mentioned = [f.subject for f in facts if fact_bank._mentioned(f.subject, earlier)]
    assert mentioned == []
    # and the check itself finds a subject that is in the earlier bank
    assert fact_bank._mentioned("Berlin", earlier)


def test_every_fact_has_a_probe_question_other_than_its_test_question():
    bank = json.loads(fact_bank.OUT.read_text(encoding="utf-8"))
    for c in bank["categories"]:
        assert c["probe_question"] != c["question"] and "{subject}" in c["probe_question"]


def test_the_committed_bank_is_what_the_builder_writes():
    pytest.importorskip("pycountry")
    assert fact_bank.main(["--check"]) == 0
