"""Random-head controls, dev/test splits, the controls' rank test, and discovery's refusal of a copy task
the model cannot do: what every study of PEAR against controls needs."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from pear_lens.controls import ControlKind, draw_control, layer_matched_heads
from pear_lens.errors import PearLensError
from pear_lens.evaluation.splits import check_disjoint, dev_test_items, prompt_key
from pear_lens.evaluation.stats import empirical_p
from pear_lens.evaluation.tasks import TASKS, TaskName

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
    uniform = draw_control("uniform", 6, 8, PEAR, seed=0)
    assert uniform.note == {"avoids_pear_heads": True} and not set(uniform.heads) & set(PEAR)
    crowded = draw_control("uniform", 2, 2, [(0, 0), (0, 1), (1, 0)], seed=0)  # 3 of 4 heads: cannot avoid
    assert crowded.note == {"avoids_pear_heads": False} and len(crowded.heads) == 3
    matched = draw_control(ControlKind.LAYER_MATCHED, 6, 8, PEAR, seed=0)
    assert matched.note == {"partial": False, "partial_layers": []}


@pytest.mark.parametrize("task", [TaskName.KV, TaskName.MDQA])
def test_dev_and_test_items_share_no_item(task):
    split = dev_test_items(task, TASKS[task].default, n_dev=100, n_test=300, dev_seed=1, test_seed=0)
    assert len(split.dev) == 100 - split.dropped and len(split.test) == 300
    assert not {prompt_key(i) for i in split.dev} & {prompt_key(i) for i in split.test}
    assert not {i.item_id for i in split.dev} & {i.item_id for i in split.test}


def test_a_dev_item_that_repeats_a_test_item_is_dropped_or_refused():
    settings = TASKS[TaskName.KV].default
    with pytest.raises(PearLensError, match="another seed"):
        dev_test_items(TaskName.KV, settings, n_dev=3, n_test=3, dev_seed=0, test_seed=0)
    from pear_lens.evaluation.tasks import generate_items

    test = generate_items(TaskName.KV, settings, 3, seed=0)
    with pytest.raises(PearLensError, match="repeat a test item"):
        check_disjoint(generate_items(TaskName.KV, settings, 2, seed=0), test)


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
