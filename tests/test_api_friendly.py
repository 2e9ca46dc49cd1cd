"""The training and folding API as a notebook user meets it: heads given as scores, names or pairs; a
training result, an artifact or its folder folded; the wrong model or config refused in one line that
names the Python argument (issue 32, item 7)."""
from __future__ import annotations

import pytest
import torch

import pear_lens
from pear_lens.artifact import Artifact
from pear_lens.errors import PearLensError
from pear_lens.verified_fold import check_tolerance
from pear_lens.models import load_model
from pear_lens.reweight import train_coefficients
from pear_lens.recipe import DEFAULT_TOP_K, Recipe, TrainConfig
from tests.conftest import tiny

FAST = dict(steps=2, batch_size=2, micro_batch=2, n=8)
RECIPE = Recipe(lr=0.1, **FAST)  # a large step, so two steps move τ far enough to change the logits


def refused(call, *names: str) -> str:
    """Run ``call``; expect a one-line PearLensError that holds each of ``names``."""
    with pytest.raises(PearLensError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message
    return message


@pytest.fixture(scope="module")
def model():
    return tiny("llama")


@pytest.fixture(scope="module")
def scores(model):
    return pear_lens.score_heads(model, pear_lens.ProxyTask(settings=((4, 8),)), progress=False)


@pytest.fixture(scope="module")
def result(model):
    return train_coefficients(model, [(1, 2), (0, 3)], RECIPE, progress=False)


def logits(hf, tokens=torch.tensor([[5, 9, 17, 33, 5, 9, 17, 33]])):
    with torch.no_grad():
        return hf(tokens).logits


# --------------------------------------------------------------------------- 1. which heads train


def test_head_scores_with_k_train_the_top_k(model, scores):
    from_scores = train_coefficients(model, scores, RECIPE, progress=False, k=3)
    from_list = train_coefficients(model, scores.top_k(3), RECIPE, progress=False)
    assert from_scores.heads == from_list.heads == scores.top_k(3)
    assert torch.equal(from_scores.tau, from_list.tau)


def test_head_scores_without_k_ask_for_k(model, scores):
    refused(lambda: train_coefficients(model, scores, RECIPE, progress=False), "heads=", "k=")
    refused(lambda: train_coefficients(model, [(1, 2)], RECIPE, progress=False, k=2), "k=")


@pytest.mark.parametrize("heads", [["1.2"], ["L1.H2"], "1.2", [(1, 2)], [[1, 2]]])
def test_head_names_and_pairs_train_the_same_head(model, heads):
    reference = train_coefficients(model, [(1, 2)], RECIPE, progress=False)
    named = train_coefficients(model, heads, RECIPE, progress=False)
    assert named.heads == [(1, 2)]
    assert torch.equal(named.tau, reference.tau)


def test_several_names_mix_with_pairs(model):
    assert train_coefficients(model, ["L2.H0", (0, 1), "1.3"], RECIPE, progress=False).heads == [(2, 0), (0, 1), (1, 3)]
    assert train_coefficients(model, "2.0,L0.H1", RECIPE, progress=False).heads == [(2, 0), (0, 1)]


@pytest.mark.parametrize("heads, says", [
    ([(9, 0)], ("(9, 0)", "3 layers × 4 heads")),
    (["L1.H7"], ("(1, 7)", "3 layers × 4 heads")),
    ([(1, 2), "L1.H2"], ("duplicate heads [(1, 2)]",)),
    (["12"], ("'12'", "LAYER.HEAD")),  # was read as the pair ('1', '2')
    (["1.2.3"], ("'1.2.3'",)),
    ([(1.5, 2)], ("(1.5, 2)",)),  # int() would have truncated it to layer 1
    ([], ("heads=", "k=")),
])
def test_bad_heads_are_refused_in_one_line(model, heads, says):
    refused(lambda: train_coefficients(model, heads, RECIPE, progress=False), *says)


def test_scores_of_another_shape_are_refused(model):
    from pear_lens.results import HeadScores

    other = HeadScores(scores=torch.arange(4.0).view(2, 2), per_setting=torch.arange(4.0).view(1, 2, 2),
                       clean_metric=[1.0], model="another", method="path", metric="logit_minus_mean",
                       difference="relative", task={})
    refused(lambda: train_coefficients(model, other, RECIPE, progress=False, k=1), "HeadScores", "2 layers × 2 heads")


# --------------------------------------------------------------------------- 4. a TrainConfig for a Recipe


@pytest.mark.parametrize("selection", [{"top_k": 3}, {"heads": ((0, 1),)}])
def test_a_train_config_that_selects_heads_is_refused_as_a_recipe(model, selection):
    config = TrainConfig(**FAST, **selection)
    refused(lambda: train_coefficients(model, [(1, 2)], config, progress=False), "recipe=", "config.recipe")
    assert train_coefficients(model, [(1, 2)], config.recipe, progress=False).heads == [(1, 2)]


def test_a_train_config_without_a_selection_still_stands_for_its_recipe(model):
    config = TrainConfig(lr=0.1, **FAST)
    assert config.top_k is None and config.k == DEFAULT_TOP_K and not config.heads  # not given: the default K
    a = train_coefficients(model, [(1, 2)], config, progress=False)
    assert torch.equal(a.tau, train_coefficients(model, [(1, 2)], config.recipe, progress=False).tau)


# --------------------------------------------------------------------------- 2. what folds


def test_folding_a_training_result_equals_folding_its_artifact(model, result, tmp_path):
    artifact = Artifact(heads=result.heads, tau=result.tau, base_model=model.describe())
    from_result = pear_lens.fold_into_hf(model.fresh_hf(), result)
    from_artifact = pear_lens.fold_into_hf(model.fresh_hf(), artifact)
    assert torch.equal(logits(from_result), logits(from_artifact))
    assert (logits(from_result) - logits(model.fresh_hf())).abs().max() > 1e-3  # τ changed the model
    record = from_result.config.pear_lens_folded
    assert record["heads"] == [list(h) for h in result.heads] and record["base_fingerprint"] == model.fingerprint

    artifact.save(tmp_path / "run")
    for folder in (tmp_path / "run", str(tmp_path / "run")):
        assert torch.equal(logits(pear_lens.fold_into_hf(model.fresh_hf(), folder)), logits(from_artifact))


def test_a_training_result_of_other_weights_is_refused(result):
    other = tiny("qwen2").fresh_hf()  # same shape, other weights
    refused(lambda: pear_lens.fold_into_hf(other, result), "not the weights this training result", "fresh_hf()")


# --------------------------------------------------------------------------- 3. what is folded into


def test_folding_into_a_bridge_or_a_loaded_model_is_refused(result):
    loaded = load_model("tiny-llama")  # its own copy: the old behaviour changed the bridge's weights
    before = {k: v.clone() for k, v in loaded.bridge.state_dict().items()}
    for target in (loaded.bridge, loaded):
        refused(lambda: pear_lens.fold_into_hf(target, result), "Hugging Face model", "fresh_hf()")
    after = loaded.bridge.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- 5. messages name Python arguments


def test_messages_on_python_paths_name_the_argument():
    message = refused(lambda: Recipe(lr=float("nan")), "lr=0.005")
    assert not message.split("give e.g.")[1].strip().startswith("--")
    message = refused(lambda: check_tolerance(-1.0), "tolerance=")
    assert message.startswith("tolerance must be")
