"""The fair-experiment protocol: layer-matched controls, the K grid and rule, dev/test items, stage caches,
and discovery's refusal of a copy task the model cannot do."""
from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation import protocol as P
from pear_lens.evaluation.stats import empirical_p
from pear_lens.evaluation.tasks import TASKS, TaskName
from pear_lens.k_sweep import layer_matched_heads

PEAR = [(0, 1), (2, 3), (2, 0), (5, 4), (5, 5), (5, 6)]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_layer_matched_draws_keep_the_count_per_layer_and_avoid_the_reference(seed):
    draw = layer_matched_heads(8, PEAR, seed)
    assert Counter(l for l, _ in draw.heads) == Counter(l for l, _ in PEAR)
    assert not set(draw.heads) & set(PEAR) and not draw.partial
    assert len(set(draw.heads)) == len(draw.heads)
    assert draw == layer_matched_heads(8, list(reversed(PEAR)), seed)  # the seed decides, not the order given


def test_layer_matched_draws_differ_between_seeds():
    assert len({tuple(layer_matched_heads(8, PEAR, s).heads) for s in range(5)}) > 1


def test_a_layer_with_too_few_other_heads_is_filled_from_the_reference_and_flagged():
    crowded = [(1, 0), (1, 1), (1, 2), (3, 0)]  # 3 of layer 1's 4 heads: only one other head there
    draw = layer_matched_heads(4, crowded, seed=0)
    assert Counter(l for l, _ in draw.heads) == Counter(l for l, _ in crowded)
    assert draw.partial_layers == (1,) and (1, 3) in draw.heads
    assert (3, 0) not in draw.heads


def test_control_draws_record_how_they_relate_to_pear():
    uniform = P.draw_control("uniform", 6, 8, PEAR, seed=0)
    assert uniform.note == {"avoids_pear_heads": True} and not set(uniform.heads) & set(PEAR)
    crowded = P.draw_control("uniform", 2, 2, [(0, 0), (0, 1), (1, 0)], seed=0)  # 3 of 4 heads: cannot avoid
    assert crowded.note == {"avoids_pear_heads": False} and len(crowded.heads) == 3
    matched = P.draw_control(P.ControlKind.LAYER_MATCHED, 6, 8, PEAR, seed=0)
    assert matched.note == {"partial": False, "partial_layers": []}


def test_the_k_phrase_says_when_percentages_round_to_one_k():
    from pear_lens.evaluation.protocol_run import k_selection_phrase

    sel = dict(split="dev", rule="best dev accuracy", grid=list(P.k_grid(72)), grid_percents=[1, 2, 5, 10, 20],
               dev_steps=20, dev_seed=1, test_seed=0)
    assert "K = 1, 4, 7, 14 (1, 2, 5, 10, 20 % of the heads, rounded half up, at least 1; percentages that give " \
           "the same K tried once), 20 training steps" in k_selection_phrase(sel)
    sel.update(grid=list(P.k_grid(270)))
    assert "tried once" not in k_selection_phrase(sel) and "K = 3, 5, 14, 27, 54 (" in k_selection_phrase(sel)


def test_k_grid_is_relative_to_the_head_count():
    assert P.k_grid(270) == (3, 5, 14, 27, 54)  # SmolLM2-135M: 30 layers × 9 heads
    assert P.k_grid(72) == (1, 4, 7, 14)  # Gemma-3-270m: 18 × 4, duplicates dropped
    assert P.k_grid(4, (1, 200)) == (1, 4)  # at least one head, at most all
    with pytest.raises(PearLensError):
        P.k_grid(10, ())


def _dev(rows):
    return pd.DataFrame(rows, columns=["selection", "k", "task", "accuracy"])


def test_the_selection_rule_takes_the_best_mean_of_kv_and_mdqa_and_the_smaller_k_on_ties():
    dev = _dev([("top", 1, "kv", 0.5), ("top", 1, "mdqa", 0.3), ("top", 5, "kv", 0.6), ("top", 5, "mdqa", 0.3),
                ("top", 10, "kv", 0.3), ("top", 10, "mdqa", 0.6),
                ("layer_matched", 1, "kv", 0.9), ("layer_matched", 1, "mdqa", 0.9)])  # controls never choose
    assert P.select_k(dev) == 5
    tie = _dev([("top", 2, "kv", 0.4), ("top", 2, "mdqa", 0.4), ("top", 8, "kv", 0.5), ("top", 8, "mdqa", 0.3)])
    assert P.select_k(tie) == 2
    assert "ties go to the smaller K" in P.SELECTION_RULE
    with pytest.raises(PearLensError, match="dev sweep"):
        P.select_k(_dev([("layer_matched", 1, "kv", 0.5)]))


def test_the_selection_rule_on_kv_alone_ignores_mdqa_and_says_so():
    dev = _dev([("top", 1, "kv", 0.5), ("top", 1, "mdqa", 0.9), ("top", 5, "kv", 0.6), ("top", 5, "mdqa", 0.1)])
    assert P.select_k(dev) == 1  # KV and MDQA: means 0.7 against 0.35
    assert P.select_k(dev, [TaskName.KV]) == 5
    assert P.selection_rule([TaskName.KV]) == ("the K with the highest mean dev accuracy of top-K over KV; "
                                              "ties go to the smaller K")
    assert P.selection_rule() == P.SELECTION_RULE and "over KV and MDQA;" in P.SELECTION_RULE
    with pytest.raises(PearLensError, match="no top-K rows on mdqa"):
        P.select_k(_dev([("top", 1, "kv", 0.5)]), [TaskName.MDQA])


def test_dev_table_pools_draws_with_a_confidence_interval():
    rows = [{"selection": "layer_matched", "k": 2, "seed": s, "task": "kv", "steps": 20, "correct": c}
            for s, c in ((0, [True, False]), (1, [True, True]))]
    table = P.dev_table(rows)
    assert table.loc[0, "n"] == 4 and table.loc[0, "accuracy"] == 0.75 and table.loc[0, "seeds"] == [0, 1]
    assert table.loc[0, "ci_low"] <= 0.75 <= table.loc[0, "ci_high"]


@pytest.mark.parametrize("task", P.DEV_TASKS)
def test_dev_and_test_items_share_no_item(task):
    split = P.dev_test_items(task, TASKS[task].default, n_dev=100, n_test=300, dev_seed=1, test_seed=0)
    assert len(split.dev) == 100 - split.dropped and len(split.test) == 300
    assert not {P.prompt_key(i) for i in split.dev} & {P.prompt_key(i) for i in split.test}
    assert not {i.item_id for i in split.dev} & {i.item_id for i in split.test}


def test_a_dev_item_that_repeats_a_test_item_is_dropped_or_refused():
    settings = TASKS[TaskName.KV].default
    with pytest.raises(PearLensError, match="another seed"):
        P.dev_test_items(TaskName.KV, settings, n_dev=3, n_test=3, dev_seed=0, test_seed=0)
    from pear_lens.evaluation.tasks import generate_items

    test = generate_items(TaskName.KV, settings, 3, seed=0)
    with pytest.raises(PearLensError, match="repeat a test item"):
        P.check_disjoint(generate_items(TaskName.KV, settings, 2, seed=0), test)


def test_cached_stage_runs_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"tau": (0.5, 1.5)}

    path = tmp_path / "stage.json"
    first = P.cached_stage(path, {"heads": [(0, 1)]}, compute)
    again = P.cached_stage(path, {"heads": [(0, 1)]}, compute)
    assert len(calls) == 1 and first[0] == again[0] == {"tau": [0.5, 1.5]} and first[1] == again[1]
    assert first[2] and not again[2]
    P.cached_stage(path, {"heads": [(0, 2)]}, compute)  # other inputs: computed again, file replaced
    assert len(calls) == 2 and json.loads(path.read_text())["key"] == {"heads": [[0, 2]]}


def test_empirical_p_is_pears_rank_among_the_controls():
    assert empirical_p(0.6, [0.5, 0.55, 0.58]) == 0.25  # above every control: 1 / (1 + 3)
    assert empirical_p(0.5, [0.5, 0.6]) == 1.0  # ties count against PEAR
    assert empirical_p(0.5, []) == 1.0


# --------------------------------------------------------------------------- discovery's copy check


def test_discover_refuses_a_model_that_cannot_copy_in_one_line(tmp_path, capsys):
    from pear_lens.commands.cli import main

    out = tmp_path / "run"
    code = main(["discover", "--model", "tiny-llama", "--out", str(out), "--settings", "4x6", "--no-png", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--prepend-bos" in err and "--allow-weak-copy-task" in err
    assert not out.exists()  # stopped before the scoring wrote anything


def test_discover_goes_on_when_told_and_records_the_copy_task(tmp_path):
    from pear_lens.commands.cli import main

    out = tmp_path / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(out), "--settings", "4x6,3x5", "--no-png",
                 "--quiet", "--allow-weak-copy-task", "--prepend-bos"]) == 0
    copy = json.loads((out / "discovery.json").read_text())["copy_task"]
    assert copy["prepend_bos"] is True and copy["n_sequences"] == 7 and copy["n_predictions"] == 4 * 6 + 3 * 5
    assert 0 <= copy["clean_copy_accuracy"] < 0.5 and copy["clean_copy_loss"] > 0  # a random tiny model
