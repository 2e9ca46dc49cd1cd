"""The answer kinds (correct, empty, another item's answer, memorised, looping, other) on hand-made items; "correct"
agrees exactly with the accuracy's scoring, and the MDQA distractors are the generator's own."""
from dataclasses import replace

import pandas as pd
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import mdqa as mdqa_mod
from pear_lens.evaluation.tasks.facts import ClosedBookItem, CounterfactualItem, fact_clusters, generate_counterfactual, load_facts
from pear_lens.evaluation.tasks.kv import KVItem, generate_kv
from pear_lens.evaluation.tasks.mdqa import Document, MDQAItem, distractor_answers, generate_mdqa
from pear_lens.evaluation.outcomes import (AnswerKind, classify_answer, error_breakdown, looping_rate,
                                           memorised_answer_rate, outputs_by_condition, read_items_table)
from pear_lens.evaluation.runner import score_items

KV = KVItem("kv-0", (("123", "456"), ("789", "012"), ("345", "678")), key="789")


def _mdqa() -> MDQAItem:
    town = mdqa_mod._KINDS[0]
    ents = [{"name": "Brava", "region": "Kelmo", "founder": "Tor Vask", "year": "1700", "river": "Zelta"},
            {"name": "Drun", "region": "Pelsa", "founder": "Mira Holt", "year": "1650", "river": "Quel"},
            {"name": "Stoa", "region": "Nimra", "founder": "Ada Fenn", "year": "1820", "river": "Oru"}]
    docs = tuple(Document(e["name"], town.text.format(**e), isgold=(j == 1), hasanswer=(j == 1))
                 for j, e in enumerate(ents))
    return MDQAItem("mdqa-0", "Who founded the town of Drun?", ("Mira Holt",), docs)


CF = CounterfactualItem("cf-0", "What is the capital of France?", ("Lyon",), ("Paris",),
                        ("The capital of France is Lyon.",), gold_position=0, category="capital")
CB = ClosedBookItem("cb-0", "What is the capital of France?", ("Paris",), category="capital")


@pytest.mark.parametrize("item, output, kind", [
    (KV, '012"', "correct"),
    (KV, "", "empty"),
    (KV, ' " . ', "empty"),
    (KV, '456"', "other_item"),            # the value of key 123: the wrong pair
    (KV, '678', "other_item"),
    (KV, '789', "other"),                  # the queried key itself is no pair's value
    (KV, '999"', "other"),
    (KV, '012 or 456', "correct"),         # gold present: correct, as the accuracy has it
    (_mdqa(), "Mira Holt", "correct"),
    (_mdqa(), "Tor Vask founded it", "other_item"),
    (_mdqa(), "Ada Fenn.", "other_item"),
    (_mdqa(), "Zelta", "other"),           # another document's river: not an answer to this question
    (_mdqa(), "the", "empty"),
    (CF, "Lyon", "correct"),
    (CF, "Paris", "memorised"),
    (CF, "Paris, not Lyon", "correct"),
    (CF, "Marseille", "other"),
    (CB, "Paris", "correct"),
    (CB, "Lyon", "other"),
    (CB, "Iceland is a Nordic Nordic Nordic Nordic", "looping"),
    (CB, "It is Paris Paris Paris", "correct"),      # a loop holding the answer is still correct
    (CB, "pesungo pesungo pesung", "other"),        # twice, then cut off: not three times
    (CB, "very very good", "other"),
    (CB, "of the city of the city of the city", "looping"),  # "of city" after dropping articles, three times
    (CB, "Mn is a metal element. Mn is a metal element.", "looping"),  # four words, twice
    (CB, "x y x y", "other"),                      # two words twice: an echoed title, not yet a loop
    (CB, "p q r s p q", "other"),
    (CB, "p q r s t u v w x p q r s t u v w x p q r s t u v w x", "other"),  # nine words > LOOP_MAX_WORDS
    (KV, '456 456 456', "other_item"),     # a retrieval error first, however it loops
    (CF, "Paris Paris Paris", "memorised"),
])
def test_classify_answer(item, output, kind):
    assert classify_answer(item, output) is AnswerKind(kind)


def test_mdqa_distractors_of_a_hand_made_item_and_of_foreign_items():
    assert distractor_answers(_mdqa()) == ("Tor Vask", "Ada Fenn")
    foreign = MDQAItem("nq", "who wrote hamlet", ("Shakespeare",),
                       (Document("Hamlet", "Hamlet is a tragedy by Shakespeare.", isgold=True),
                        Document("Macbeth", "Macbeth is a play.")))
    assert distractor_answers(foreign) == ()
    assert classify_answer(foreign, "Macbeth") is AnswerKind.OTHER


def test_mdqa_distractors_are_the_generators_entities(monkeypatch):
    made = []
    real = mdqa_mod._entity

    def record(kind, rng, used):
        made.append(real(kind, rng, used))
        return made[-1]

    monkeypatch.setattr(mdqa_mod, "_entity", record)
    n_docs = 4
    items = generate_mdqa(60, n_docs, seed=5)
    asked = set()
    for i, it in enumerate(items):
        ents = made[i * n_docs:(i + 1) * n_docs]
        gold = ents[it.gold_position]
        attr = next(a for a, v in gold.items() if v == it.answers[0])
        asked.add(attr)
        expected = tuple(e[attr] for j, e in enumerate(ents) if j != it.gold_position)
        assert distractor_answers(it) == expected
    assert len(asked) >= 8  # of the 10 attributes the four kinds ask about: persons, places and things alike


def test_kv_distractor_values():
    assert KV.distractor_values == ("456", "678")
    it = generate_kv(1, 5, seed=0)[0]
    assert len(it.distractor_values) == 4 and it.value not in it.distractor_values


def test_correct_agrees_with_the_accuracy_on_generated_items():
    items = generate_kv(30, 5, seed=3) + generate_mdqa(30, 4, seed=3)
    # outputs of every kind: gold, another item's answer, garbage, empty
    outputs = []
    for i, it in enumerate(items):
        others = it.distractor_values if isinstance(it, KVItem) else distractor_answers(it)
        outputs.append([it.answers[0] + '"', others[0], "zzz", ""][i % 4])
    kinds = [classify_answer(it, out) for it, out in zip(items, outputs)]
    assert [k is AnswerKind.CORRECT for k in kinds] == score_items(items, outputs)
    assert kinds[1::4] == [AnswerKind.OTHER_ITEM] * len(kinds[1::4])


def test_error_breakdown_counts_and_shares():
    items = [KV, KVItem("kv-1", (("1", "2"), ("3", "4")), key="1")]
    frame = error_breakdown(items, {"baseline": ['012"', '4'], "PEAR": ["", "2"]})
    assert list(frame.columns) == ["condition", "kind", "count", "n", "share"]
    assert frame["kind"].tolist()[:5] == ["correct", "empty", "other_item", "looping", "other"]  # no "memorised" for KV
    table = frame.set_index(["condition", "kind"])
    assert table.loc[("baseline", "correct"), "count"] == 1 and table.loc[("baseline", "other_item"), "count"] == 1
    assert table.loc[("PEAR", "empty"), "share"] == 0.5 and table.loc[("PEAR", "other"), "count"] == 0
    assert frame.groupby("condition")["share"].sum().tolist() == [1.0, 1.0]
    with pytest.raises(PearLensError, match="1 outputs for 2 items"):
        error_breakdown(items, {"baseline": ["x"]})


def test_looping_rate_counts_loops_of_every_kind():
    """The looping kind leaves out a loop that holds the gold answer; the rate does not."""
    outputs = ["Paris Paris Paris", "Nordic Nordic Nordic", "Paris", ""]
    assert [classify_answer(CB, o).value for o in outputs] == ["correct", "looping", "correct", "empty"]
    assert looping_rate(outputs) == 0.5
    with pytest.raises(PearLensError, match="no outputs"):
        looping_rate([])


def test_memorised_answer_rate():
    cf2 = CounterfactualItem("cf-1", "What is the currency of Japan?", ("peso",), ("yen",),
                             ("The currency of Japan is the peso.",), gold_position=0, category="currency")
    items = [CF, cf2, replace(CF, item_id="cf-2"), replace(cf2, item_id="cf-3")]
    assert memorised_answer_rate(items, ["Paris", "peso", "Lyon", "yen"]) == 0.5
    assert memorised_answer_rate(items, ["Paris", "yen", "Paris", "the yen"]) == 1.0
    assert memorised_answer_rate(items, ["Paris and Lyon", "", "Nice", "dollar"]) == 0.0  # both named = context
    with pytest.raises(PearLensError, match="counterfactual items"):
        memorised_answer_rate([CB], ["Paris"])


def test_fact_clusters_group_the_items_of_one_fact():
    items = generate_counterfactual(load_facts()[:20], 40, n_context=2, alternatives_per_fact=2, seed=0)
    labels = fact_clusters(items)
    assert len(labels) == len(items) and len(set(labels)) == 20  # two counterfactual answers per fact
    for label, it in zip(labels, items):
        assert all(other.parametric_answers == it.parametric_answers
                   for other, lab in zip(items, labels) if lab == label)


def test_outputs_from_an_items_table_round_trip(tmp_path):
    items = [KV, KVItem("kv-1", (("1", "2"), ("3", "4")), key="1")]
    outs = {"baseline": ["NA", '2"'], "PEAR": ["", "null"]}
    rows = [{"condition": c, "item_id": it.item_id, "output": o, "correct": ok}
            for c, os_ in outs.items() for it, o, ok in zip(items, os_, score_items(items, os_))]
    frame = pd.DataFrame(rows[::-1])  # any row order
    frame.to_csv(tmp_path / "items.csv", index=False)
    back = read_items_table(tmp_path / "items.csv")
    assert outputs_by_condition(back, items) == {"PEAR": ["", "null"], "baseline": ["NA", '2"']}
    table = error_breakdown(items, outputs_by_condition(back, items)).set_index(["condition", "kind"])
    for cond, sub in back.groupby("condition"):
        assert table.loc[(cond, "correct"), "count"] == sub["correct"].astype(bool).sum()
    with pytest.raises(PearLensError, match="no output for item"):
        outputs_by_condition(back[back["item_id"] != "kv-1"], items)
