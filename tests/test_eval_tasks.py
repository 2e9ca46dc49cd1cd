"""Task generators and loaders: seeded, gold position honoured, JSONL round trips, bad input named."""
from pathlib import Path

import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.facts import (closed_book_items, generate_counterfactual,
                                        load_closed_book_jsonl, load_counterfactual_jsonl, load_facts)
from pear_lens.evaluation.tasks.items import write_jsonl
from pear_lens.evaluation.tasks.kv import generate_kv, load_kv_jsonl
from pear_lens.evaluation.tasks.mdqa import generate_mdqa, load_mdqa_jsonl
from pear_lens.evaluation.tasks.scoring import normalize_answer

DATA = Path(__file__).parent / "data"


def test_kv_generator_is_seeded_and_places_the_gold_pair():
    a, b, c = generate_kv(12, 5, seed=3), generate_kv(12, 5, seed=3), generate_kv(12, 5, seed=4)
    assert a == b and a != c
    assert [it.gold_position for it in a] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    for it in generate_kv(9, 7, positions=[6, 2], key_format="hex8", value_format="uuid", seed=0):
        assert it.gold_position in (6, 2)
        assert it.records[it.gold_position][0] == it.key
        keys, values = zip(*it.records)
        assert len(set(keys)) == 7 and len(set(values)) == 7
        assert all(len(k) == 8 and int(k, 16) >= 0 for k in keys)
        assert f'Key: "{it.key}"' in it.prompt().body and it.prompt().answer_prefix == '"'


def test_kv_values_never_contain_each_other():
    # a value inside another would let a wrong pair's value pass best_subspan_em
    for it in generate_kv(50, 10, value_format="digits2", seed=1):
        values = [v for _, v in it.records]
        assert all(x not in y for x in values for y in values if x != y)


def test_mdqa_generator_uses_invented_entities_and_moves_the_gold_document():
    items = generate_mdqa(8, 4, seed=5)
    assert items == generate_mdqa(8, 4, seed=5) and items != generate_mdqa(8, 4, seed=6)
    assert [it.gold_position for it in items] == [0, 1, 2, 3] * 2
    for it in items:
        gold = it.ctxs[it.gold_position]
        assert gold.isgold and gold.title in it.question
        answer = normalize_answer(it.answers[0])
        assert answer in normalize_answer(gold.text)
        # only the gold document holds the answer: distractors are about other invented entities
        assert all(answer not in normalize_answer(d.text) for j, d in enumerate(it.ctxs) if j != it.gold_position)
        assert sum(d.isgold for d in it.ctxs) == 1
    assert all(it.gold_position == 3 for it in generate_mdqa(5, 4, positions=[3], seed=0))


def test_counterfactual_items_contradict_the_fact_at_the_gold_position():
    facts = load_facts()
    items = generate_counterfactual(facts[:60], 40, n_context=3, seed=2)
    assert items == generate_counterfactual(facts[:60], 40, n_context=3, seed=2)
    assert len(items) == 40
    for it in items:
        stated = it.context[it.gold_position]
        assert normalize_answer(it.answers[0]) in normalize_answer(stated)
        assert not any(normalize_answer(p) in normalize_answer(" ".join(it.context)) for p in it.parametric_answers)
        assert it.closed_book().answers == it.parametric_answers


def test_fact_list_is_large_and_well_formed():
    facts = load_facts()
    assert len(facts) >= 300
    assert len({f.fact_id for f in facts}) == len(facts)
    for f in facts:
        assert f.question.endswith("?") and "{" not in f.question
        for alt in f.alternatives:
            assert normalize_answer(alt) not in [normalize_answer(a) for a in f.answers]
    assert len(closed_book_items(facts)) == len(facts)


@pytest.mark.parametrize("make, load", [
    (lambda: generate_kv(5, 4, key_format="uuid", seed=1), load_kv_jsonl),
    (lambda: generate_mdqa(5, 3, seed=1), load_mdqa_jsonl),
    (lambda: generate_counterfactual(load_facts()[:30], 5, n_context=2, seed=1), load_counterfactual_jsonl),
    (lambda: closed_book_items(load_facts()[:5]), load_closed_book_jsonl),
])
def test_jsonl_round_trip(tmp_path, make, load):
    items = make()
    path = write_jsonl(items, tmp_path / "items.jsonl")
    assert load(path) == items


def test_handmade_lost_in_the_middle_files_load():
    mdqa = load_mdqa_jsonl(DATA / "mdqa_handmade.jsonl")
    assert [it.gold_position for it in mdqa] == [1, 0, 2]  # hasanswer only, isgold, explicit gold_position
    assert mdqa[0].answers == ("Ilse Marrow", "Marrow")
    kv = load_kv_jsonl(DATA / "kv_handmade.jsonl")
    assert [(it.gold_position, it.value) for it in kv] == [(2, "1b90"), (0, "harbour")]
    cf = load_counterfactual_jsonl(DATA / "counterfactual_handmade.jsonl")
    assert cf[0].closed_book().answers == ("Paris",)


def _write(tmp_path, lines):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("loader, lines, message", [
    (load_mdqa_jsonl, ['{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "a", "hasanswer": true}]}',
                       '{"question": "q?", "ctxs": [{"title": "t", "text": "x"}]}'], r"bad\.jsonl:2: missing field 'answers'"),
    (load_mdqa_jsonl, ['{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "a", "isgold": true}]}',
                       '{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "a"}]}'],
     r"bad\.jsonl:2: no document is the gold one"),
    (load_mdqa_jsonl, ['{"question": "q?", "answers": [], "ctxs": [{"title": "t", "text": "x"}]}'],
     r"bad\.jsonl:1: .*answer list is empty"),
    (load_mdqa_jsonl, ['{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t"}]}'],
     r"bad\.jsonl:1: missing field 'ctxs\[0\]\.text'"),
    (load_mdqa_jsonl, ['{"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}], "gold_position": 4}'],
     r"bad\.jsonl:1: gold position 4 is beyond the 1 context units"),
    (load_kv_jsonl, ['{"ordered_kv_records": [["k", "v"]], "key": "z", "value": "v"}'], r"bad\.jsonl:1: .*occurs 0 times"),
    (load_kv_jsonl, ['{"ordered_kv_records": [["k", "v"]], "key": "k"}'], r"bad\.jsonl:1: missing field 'value'"),
    (load_kv_jsonl, ['not json'], r"bad\.jsonl:1: malformed item"),
    (load_counterfactual_jsonl, ['{"question": "q?", "answers": ["Lyon"], "parametric_answers": ["Paris"], '
                                 '"context": ["x"], "gold_position": 1}'], r"bad\.jsonl:1: gold position 1"),
    (load_closed_book_jsonl, ['{"question": "q?", "answers": [""]}'], r"bad\.jsonl:1: .*empty string"),
])
def test_bad_dataset_files_name_the_line(tmp_path, loader, lines, message):
    with pytest.raises(PearLensError, match=message):
        loader(_write(tmp_path, lines))


def test_generators_reject_impossible_positions():
    with pytest.raises(PearLensError, match="gold position 5 is beyond the 5"):
        generate_mdqa(3, 5, positions=[5])
    with pytest.raises(PearLensError, match="gold position 9"):
        generate_kv(3, 4, positions=[9])
    with pytest.raises(PearLensError, match="too short"):
        generate_kv(1, 20, value_format="digits1")
