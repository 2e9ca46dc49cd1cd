"""Batched greedy generation, conditions and calibration logic on a tiny model."""
from dataclasses import replace

import pytest
import torch

from pear_lens.controls import random_heads
from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks import calibration as cal
from pear_lens.evaluation import conditions as C
from pear_lens.evaluation.generate import _FirstLineStop, first_line, greedy_generate
from pear_lens.evaluation.tasks import TASKS, TaskName, TaskSettings
from pear_lens.models import load_model


@pytest.fixture(scope="module")
def tiny():
    model = load_model("tiny-llama")
    assert model.n_layers == 3 and model.n_heads == 4  # tiny, as the tests assume
    return model


def _prompts(n, rng_seed=0):
    g = torch.Generator().manual_seed(rng_seed)
    return [torch.randint(4, 512, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_batched_generation_equals_one_by_one_and_is_deterministic(tiny):
    hf, tok = tiny.fresh_hf(), tiny.tokenizer
    prompts = _prompts(7)
    kw = dict(max_new_tokens=5, stop_at_newline=False, progress=False)
    batched = greedy_generate(hf, tok, prompts, batch_size=4, **kw)
    single = greedy_generate(hf, tok, prompts, batch_size=1, **kw)
    assert batched == single  # left padding and the attention mask keep padded rows exact
    assert batched == greedy_generate(tiny.fresh_hf(), tok, prompts, batch_size=3, **kw)
    assert all(len(out.split()) == 5 for out in batched)


def test_first_line_and_the_stop_rule():
    assert first_line("\n\n  Paris\nFrance") == "Paris"
    assert first_line("   ") == ""
    newline = torch.tensor([False, True, False, True])   # ids 1 and 3 hold a line break
    content = torch.tensor([False, False, True, True])   # ids 2 and 3 hold text ("x\n" = id 3)
    stop = _FirstLineStop(prompt_len=2, newline=newline, content=content)
    ids = torch.tensor([[0, 0, 1],      # a leading bare newline does not stop
                        [0, 0, 3],      # "x\n" answers and ends the line
                        [0, 2, 1]])     # prompt text does not count as answer text
    assert stop(ids, None).tolist() == [False, True, False]
    assert stop(torch.tensor([[0, 0, 2, 1]]), None).tolist() == [True]


def test_conditions_fold_into_fresh_models(tiny):
    prompts = _prompts(4, rng_seed=1)
    kw = dict(max_new_tokens=4, stop_at_newline=False, progress=False)
    base = C.baseline(tiny)
    ident = C.folded(tiny, {(0, 1): 1.0, (2, 3): 1.0}, "identity")
    zero = C.all_heads(tiny, 0.0)
    out_base = greedy_generate(base.build(), tiny.tokenizer, prompts, **kw)
    assert greedy_generate(ident.build(), tiny.tokenizer, prompts, **kw) == out_base
    assert greedy_generate(zero.build(), tiny.tokenizer, prompts, **kw) != out_base  # silencing every head matters
    assert zero.describe()["n_heads"] == 12 and zero.kind is C.ConditionKind.ALL_HEADS
    # each build is a fresh copy: folding one never leaks into the baseline
    assert greedy_generate(base.build(), tiny.tokenizer, prompts, **kw) == out_base
    with pytest.raises(PearLensError, match="outside"):
        C.folded(tiny, {(3, 0): 0.5}, "bad")


def test_random_heads_are_seeded_distinct_and_avoid_excluded():
    a = random_heads(30, 9, 10, seed=0, exclude=[(0, 0), (1, 1)])
    assert a == random_heads(30, 9, 10, seed=0, exclude=[(0, 0), (1, 1)])
    assert a != random_heads(30, 9, 10, seed=1, exclude=[(0, 0), (1, 1)])
    assert len(set(a)) == 10 and (0, 0) not in a and (1, 1) not in a


def test_random_k_condition_records_its_seed_and_budget(tiny):
    heads = random_heads(tiny.n_layers, tiny.n_heads, 3, seed=7)
    cond = C.random_k(tiny, {h: 0.5 for h in heads}, seed=7, training_steps=20)
    info = cond.describe()
    assert cond.kind is C.ConditionKind.RANDOM_K and info["seed"] == 7 and info["training_steps"] == 20
    assert [tuple(h[:2]) for h in info["heads"]] == heads and cond.label == "random-K seed 7"


def _artifact(run, model, heads, taus):
    from pear_lens.artifact import Artifact

    Artifact(heads=heads, tau=torch.tensor(taus), base_model=model.describe(), training={"steps": 60}).save(run)
    return run


def test_pear_condition_reads_a_saved_artifact_and_checks_the_fingerprint(tiny, tmp_path):
    run = _artifact(tmp_path / "run", tiny, [(0, 1), (2, 3)], [0.5, 0.25])
    cond = C.from_artifact(tiny, run)
    assert cond.kind is C.ConditionKind.PEAR and dict(cond.coefficients) == {(0, 1): 0.5, (2, 3): 0.25}
    assert cond.describe()["training_steps"] == 60
    other = load_model("tiny-qwen2")
    with pytest.raises(PearLensError, match="fingerprint"):
        C.from_artifact(other, run)
    with pytest.raises(PearLensError, match="pear-lens train"):
        C.from_artifact(tiny, tmp_path / "nowhere")


def test_calibration_picks_the_size_nearest_one_half_inside_the_band():
    accuracy = {2: 0.95, 3: 0.7, 4: 0.45, 6: 0.15, 8: 0.1}
    seen = []

    def measure(s):
        seen.append(s.n_context)
        return accuracy[s.n_context], 30

    chosen, acc, n, trials = cal.choose_size(TaskName.KV, TaskSettings(n_context=6), measure, ladder=[2, 3, 4, 6, 8])
    assert (chosen.n_context, acc, n) == (4, 0.45, 30)
    assert seen == [2, 3, 4, 6]  # stops once below the band
    # nothing in the band: the nearest size is kept
    chosen, acc, _, _ = cal.choose_size(TaskName.KV, TaskSettings(n_context=6), lambda s: (0.9, 10), ladder=[2, 3])
    assert acc == 0.9 and not cal.in_range(acc)


def test_settings_come_from_the_calibration_else_the_default(tiny):
    calib = {"models": {"m": {"tasks": {"kv": {"chosen": {"n_context": 4, "prompt_style": "plain+prefix",
                                                            "max_new_tokens": 8}}}}}}
    got = cal.settings_for("m", TaskName.KV, tiny.tokenizer, calib)
    assert (got.n_context, got.prompt_style, got.max_new_tokens) == (4, "plain+prefix", 8)
    fallback = cal.settings_for("other", TaskName.MDQA, tiny.tokenizer, calib)
    assert fallback == replace(TASKS[TaskName.MDQA].default, prompt_style="plain")  # tiny has no chat template
