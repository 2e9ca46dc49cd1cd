"""The exploratory protocol's design: the K grid, the rule that chooses K on dev items, the dev table."""
from __future__ import annotations

import pandas as pd
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import TaskName
from studies.exploratory.design import SELECTION_RULE, dev_table, k_grid, select_k, selection_rule


def test_the_k_phrase_says_when_percentages_round_to_one_k():
    from studies.exploratory.stages import k_selection_phrase

    sel = dict(split="dev", rule="best dev accuracy", grid=list(k_grid(72)), grid_percents=[1, 2, 5, 10, 20],
               dev_steps=20, dev_seed=1, test_seed=0)
    assert "K = 1, 4, 7, 14 (1, 2, 5, 10, 20 % of the heads, rounded half up, at least 1; percentages that give " \
           "the same K tried once), 20 training steps" in k_selection_phrase(sel)
    sel.update(grid=list(k_grid(270)))
    assert "tried once" not in k_selection_phrase(sel) and "K = 3, 5, 14, 27, 54 (" in k_selection_phrase(sel)


def test_k_grid_is_relative_to_the_head_count():
    assert k_grid(270) == (3, 5, 14, 27, 54)  # SmolLM2-135M: 30 layers × 9 heads
    assert k_grid(72) == (1, 4, 7, 14)  # Gemma-3-270m: 18 × 4, duplicates dropped
    assert k_grid(4, (1, 200)) == (1, 4)  # at least one head, at most all
    with pytest.raises(PearLensError):
        k_grid(10, ())


def _dev(rows):
    return pd.DataFrame(rows, columns=["selection", "k", "task", "accuracy"])


def test_the_selection_rule_takes_the_best_mean_of_kv_and_mdqa_and_the_smaller_k_on_ties():
    dev = _dev([("top", 1, "kv", 0.5), ("top", 1, "mdqa", 0.3), ("top", 5, "kv", 0.6), ("top", 5, "mdqa", 0.3),
                ("top", 10, "kv", 0.3), ("top", 10, "mdqa", 0.6),
                ("layer_matched", 1, "kv", 0.9), ("layer_matched", 1, "mdqa", 0.9)])  # controls never choose
    assert select_k(dev) == 5
    tie = _dev([("top", 2, "kv", 0.4), ("top", 2, "mdqa", 0.4), ("top", 8, "kv", 0.5), ("top", 8, "mdqa", 0.3)])
    assert select_k(tie) == 2
    assert "ties go to the smaller K" in SELECTION_RULE
    with pytest.raises(PearLensError, match="dev sweep"):
        select_k(_dev([("layer_matched", 1, "kv", 0.5)]))


def test_the_selection_rule_on_kv_alone_ignores_mdqa_and_says_so():
    dev = _dev([("top", 1, "kv", 0.5), ("top", 1, "mdqa", 0.9), ("top", 5, "kv", 0.6), ("top", 5, "mdqa", 0.1)])
    assert select_k(dev) == 1  # KV and MDQA: means 0.7 against 0.35
    assert select_k(dev, [TaskName.KV]) == 5
    assert selection_rule([TaskName.KV]) == ("the K with the highest mean dev accuracy of top-K over KV; "
                                              "ties go to the smaller K")
    assert selection_rule() == SELECTION_RULE and "over KV and MDQA;" in SELECTION_RULE
    with pytest.raises(PearLensError, match="no top-K rows on mdqa"):
        select_k(_dev([("top", 1, "kv", 0.5)]), [TaskName.MDQA])


def test_dev_table_pools_draws_with_a_confidence_interval():
    rows = [{"selection": "layer_matched", "k": 2, "seed": s, "task": "kv", "steps": 20, "correct": c}
            for s, c in ((0, [True, False]), (1, [True, True]))]
    table = dev_table(rows)
    assert table.loc[0, "n"] == 4 and table.loc[0, "accuracy"] == 0.75 and table.loc[0, "seeds"] == [0, 1]
    assert table.loc[0, "ci_low"] <= 0.75 <= table.loc[0, "ci_high"]
