"""The training recipe is one type (pear_lens.recipe.Recipe), split from the head selection.

τ trained before are kept on disk under the recipe's dict (the evaluation's τ caches, the confirmatory
run's ``tau/*.json``, the plans), and pear.json's ``training`` starts with the whole TrainConfig: both must
come out exactly as before the split, keys, order, values and types.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pear_lens.errors import PearLensError
from pear_lens.recipe import HeadSelection, Recipe, TrainConfig

ROOT = Path(__file__).resolve().parents[1]

RECIPE_KEYS = ["steps", "lr", "weight_decay", "warmup_steps", "schedule_steps", "batch_size", "micro_batch", "n",
               "min_token_id", "vocab", "prepend_bos", "seed", "precision"]
NON_DEFAULT = dict(heads=((2, 1), (0, 3)), steps=7, lr=0.02, weight_decay=0.1, warmup_steps=0,
                   schedule_steps=100, batch_size=8, micro_batch=4, n=12, min_token_id=5, vocab="no_special",
                   prepend_bos=True, seed=4, precision="bf16")


def old_to_dict(config: TrainConfig) -> dict:
    """``TrainConfig.to_dict`` before the split: ``asdict`` with the heads as lists (and without ``select_by``,
    added later and recorded only when it is not PEAR's ``score``, so that records read as before)."""
    d = dataclasses.asdict(config)
    d["heads"] = [list(h) for h in config.heads]
    d["top_k"] = config.k  # top_k defaulted to 10 then; None (not given) now records the 10 it acts as
    assert d.pop("select_by") == "score"
    return d


def old_recipe(config: TrainConfig) -> dict:
    """The comprehension that keyed τ before the split (protocol.cached_tau, confirm.train_arm)."""
    return {k: v for k, v in old_to_dict(config).items() if k not in ("heads", "top_k", "select_by")}


def typed_items(d: dict) -> list:
    return [(k, v, type(v)) for k, v in d.items()]


@pytest.mark.parametrize("config", [TrainConfig(), TrainConfig(**NON_DEFAULT)], ids=["default", "non-default"])
def test_the_recipe_dict_is_the_old_cache_key(config):
    new = config.recipe.to_dict()
    assert typed_items(new) == typed_items(old_recipe(config))  # keys, order, values and types
    assert list(new) == RECIPE_KEYS
    assert json.dumps(new) == json.dumps(old_recipe(config))
    assert Recipe(**new).to_dict() == new and isinstance(config.recipe, Recipe)
    assert type(config.recipe) is Recipe  # the recipe alone, not a TrainConfig


def test_a_selection_by_the_interval_is_recorded_and_leaves_the_recipe_alone():
    config = TrainConfig(select_by="lower_bound")
    assert config.to_dict()["select_by"] == "lower_bound"
    assert config.recipe.to_dict() == TrainConfig().recipe.to_dict()


@pytest.mark.parametrize("config", [TrainConfig(), TrainConfig(**NON_DEFAULT), TrainConfig(top_k=3)],
                         ids=["default", "non-default", "top-k"])
def test_train_config_dict_and_fields_are_unchanged(config):
    assert json.dumps(config.to_dict()) == json.dumps(old_to_dict(config))  # pear.json's "training" starts with it
    assert [f.name for f in dataclasses.fields(TrainConfig)] == ["top_k", "heads", "select_by", *RECIPE_KEYS]  # CLI order
    assert config.selection == HeadSelection(top_k=config.top_k, heads=config.heads)


def test_the_stored_tau_keys_and_plans_are_reproduced():
    """The confirmatory run's τ files and plans on disk hold the recipe dict; the type rebuilds it exactly."""
    stored = sorted((ROOT / "figures" / "results" / "confirm").glob("*/tau/*.json"))
    plans = sorted((ROOT / "figures" / "results" / "confirm").glob("*/plan.json"))
    if not stored and not plans:
        pytest.skip("no confirmatory τ files or plans in this checkout")
    for path in stored:
        recipe = json.loads(path.read_text())["key"]["recipe"]
        assert json.dumps(Recipe(**recipe).to_dict()) == json.dumps(recipe), path
    for path in plans:
        recipe = json.loads(path.read_text())["recipe"]
        assert json.dumps(Recipe(**recipe).to_dict()) == json.dumps(recipe), path


def test_the_recipe_of_a_published_artifact_is_read_as_before():
    """confirm.make_plan's recipe from pear.json's ``training`` (which also holds the selection and outcome)."""
    published = sorted((ROOT / "artifacts").glob("*/pear.json"))
    if not published:
        pytest.skip("no published artifacts in this checkout")
    outcome = ("heads", "top_k", "seconds", "loss_first", "loss_last", "tau_step_limit", "tau_at_step_limit")
    for path in published:
        training = json.loads(path.read_text())["training"]
        old = {k: v for k, v in training.items() if k not in outcome}
        assert typed_items(Recipe.from_dict(training).to_dict()) == typed_items(old), path


def test_each_setting_is_checked_by_its_own_part():
    with pytest.raises(PearLensError, match="top_k"):
        HeadSelection(top_k=0)
    with pytest.raises(PearLensError, match="top_k"):
        TrainConfig(top_k=0)
    with pytest.raises(PearLensError, match="lr"):
        Recipe(lr=0.0)
    with pytest.raises(PearLensError, match="micro_batch"):
        TrainConfig(micro_batch=0)
    with pytest.raises(PearLensError, match="not both"):  # heads and top_k contradict: one would be ignored
        HeadSelection(top_k=10, heads=((0, 1),))
