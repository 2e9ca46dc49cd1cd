"""The copy-task rule shared by discovery and the evaluation protocol, on hand-made records."""
from __future__ import annotations

import pytest

from pear_lens.copy_check import MIN_COPY_ACCURACY, choose_copy_task, measure_copy_tasks
from pear_lens.errors import PearLensError
from pear_lens.proxy_task import ProxyTask

from .conftest import tiny


def record(bos: bool, acc: float) -> dict:
    return {"prepend_bos": bos, "clean_copy_accuracy": acc, "clean_copy_loss": 1.0, "n_sequences": 10}


def test_the_reference_task_wins_when_the_model_copies_it():
    chosen = choose_copy_task("m", {"no_bos": record(False, 0.52), "bos": record(True, 0.9)})
    assert chosen["prepend_bos"] is False and not chosen["weak"] and "no BOS" in chosen["rule"]


def test_bos_is_chosen_when_only_it_gives_a_working_task():
    chosen = choose_copy_task("gemma", {"no_bos": record(False, 0.13), "bos": record(True, 0.79)})
    assert chosen["prepend_bos"] is True and chosen["clean_copy_accuracy"] == 0.79
    assert set(chosen["measured"]) == {"no_bos", "bos"}


def test_no_working_task_is_refused_unless_allowed():
    measured = {"no_bos": record(False, 0.2), "bos": record(True, 0.3)}
    with pytest.raises(PearLensError, match=f"less than {MIN_COPY_ACCURACY:.0%}.*no bos 20.0%, bos 30.0%"):
        choose_copy_task("m", measured)
    weak = choose_copy_task("m", measured, allow_weak=True)
    assert weak["weak"] and weak["prepend_bos"] is True  # the better of the two


def test_measuring_a_model_gives_both_settings_on_the_same_sequences():
    model = tiny("llama")
    measured = measure_copy_tasks(model, ProxyTask(settings=((4, 8),), seed=3))
    assert [m["prepend_bos"] for m in measured.values()] == [False, True]
    for m in measured.values():
        assert 0 <= m["clean_copy_accuracy"] <= 1 and m["settings"] == [[4, 8]] and m["seed"] == 3
        assert m["n_predictions"] == 4 * 8
