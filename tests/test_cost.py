"""The cost model (issue 36, item 5): its passes counted against the forwards the code really runs, its
arithmetic, the worker advice, and ``pear-lens estimate`` on a tiny model (benchmarks/estimate.py checks the
predictions against the clock on the real models)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pear_lens import ProxyTask, Recipe, score_heads, train_coefficients
from pear_lens.cost import EvalWork, Kind, ModelShape, Pass, advise_workers, estimate_cost
from pear_lens.cost.probes import Observation, Rates, fit
from pear_lens.cost.work import (batches_of, decode_steps, generation_passes, likelihood_passes, scan_passes,
                                 train_passes)
from pear_lens.errors import PearLensError

from .cli_support import refused
from .conftest import tiny

TASK = ProxyTask(settings=((4, 8), (6, 5)))
RECIPE = Recipe(steps=2, batch_size=4, micro_batch=2, n=8)
SHAPE = ModelShape(n_layers=4, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, d_mlp=128, d_vocab=512,
                   params=200_000, block_params=40_000, bytes_per_param=4)


def count(passes, kind: Kind) -> int:
    return sum(p.count for p in passes if p.kind is kind)


class Forwards:
    """Counts the forwards of a Hugging Face model (the bridge runs its model's forward once per pass)."""

    def __init__(self, hf):
        self.n = 0
        self.handle = hf.register_forward_pre_hook(lambda *a: setattr(self, "n", self.n + 1))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- the passes, counted from the code


def test_the_scan_counts_the_forwards_the_copy_check_and_path_patching_run():
    model = tiny("llama")
    shape = ModelShape.of(model)
    passes = scan_passes(shape, TASK, model.n_heads, readout=True)
    from pear_lens.copy_accuracy import clean_copy

    score_heads(model, TASK, copy_check="off", progress=False)  # once before: the one-off probe of the blocks' output
    with Forwards(model.bridge.original_model) as seen:
        clean_copy(model, TASK)
        score_heads(model, TASK, copy_check="off", progress=False)
    assert seen.n == count(passes, Kind.COPY_CHECK) + count(passes, Kind.SCAN_CLEAN) + count(passes, Kind.SCAN_LAYER)
    assert count(passes, Kind.SCAN_LAYER) == len(TASK.settings) * model.n_layers
    # a metric without a linear readout patches fewer heads per forward: more forwards
    assert count(scan_passes(shape, TASK, 1, readout=False), Kind.SCAN_LAYER) == 4 * count(passes, Kind.SCAN_LAYER)


def test_training_counts_one_forward_per_micro_batch_and_step():
    model = tiny("llama")
    passes = train_passes(ModelShape.of(model), RECIPE, lowest_layer=1)
    with Forwards(model.bridge.original_model) as seen:
        train_coefficients(model, [(1, 0)], RECIPE, progress=False)
    assert seen.n == count(passes, Kind.TRAIN_STEP) == RECIPE.steps * 2
    assert {p.backward_blocks for p in passes} == {model.n_layers - 1}


def test_the_likelihood_counts_a_prompt_pass_per_batch_and_a_pass_per_longer_candidate():
    from pear_lens.evaluation.likelihood import continuation_logprobs

    model = tiny("llama")
    hf = model.fresh_hf()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    candidates = [[[1, 2], [3]], [[4]], [[5, 6, 7], [8], [9, 10]], [[11]]]
    passes = likelihood_passes(ModelShape.of(model), [len(p) for p in prompts],
                               [[len(c) for c in cs] for cs in candidates], batch_size=2)
    with Forwards(hf) as seen:
        continuation_logprobs(hf, prompts, candidates, batch_size=2, progress=False)
    assert seen.n == sum(p.count for p in passes)
    assert count(passes, Kind.PREFILL) == 2 and batches_of([3, 2, 4, 1], 2) == [[2, 0], [1, 3]]


def test_context_aware_likelihood_counts_every_pass_again_on_the_context_free_prompts():
    from pear_lens.evaluation.likelihood import continuation_logprobs

    model = tiny("llama")
    hf = model.fresh_hf()
    prompts = [[5, 6, 7, 20, 21], [8, 9, 22], [10, 11, 12, 13], [14, 23]]
    free = [[5, 6], [8], [10, 11, 12], [14]]
    candidates = [[[1, 2], [3]], [[4]], [[5, 6, 7], [8], [9, 10]], [[11]]]
    lengths, cands = [len(p) for p in prompts], [[len(c) for c in cs] for cs in candidates]
    passes = likelihood_passes(ModelShape.of(model), lengths, cands, batch_size=2,
                               context_free_lengths=[len(f) for f in free])
    with Forwards(hf) as seen:
        continuation_logprobs(hf, prompts, candidates, batch_size=2, context_free=free, alpha=0.5, progress=False)
    assert seen.n == sum(p.count for p in passes)
    plain = likelihood_passes(ModelShape.of(model), lengths, cands, batch_size=2)
    assert sum(p.count for p in passes) == 2 * sum(p.count for p in plain)
    # batches [0, 2] and [1, 3]: prompt passes 5 and 3 tokens wide with the context, 3 and 1 without
    assert {p.tokens: p.count for p in passes if p.kind is Kind.PREFILL} == {5: 1, 3: 2, 1: 1}


def test_context_aware_decoding_runs_every_decoding_pass_twice():
    from pear_lens.evaluation.generate import greedy_generate

    model = tiny("llama")
    hf = model.fresh_hf()
    prompts = [[5, 6, 7, 20, 21], [8, 9, 22], [10, 11, 12, 13]]
    free = [[5, 6], [8], [10, 11, 12]]
    seen_counts = []
    for context_free in (None, free):  # α = 0: the same tokens either way, so the same number of steps
        with Forwards(hf) as seen:
            out = greedy_generate(hf, model.tokenizer, prompts, max_new_tokens=4, batch_size=2, progress=False,
                                  context_free=context_free, cad_alpha=0.0, stop_at_newline=False)
        seen_counts.append((seen.n, out))
    (plain_n, plain_out), (cad_n, cad_out) = seen_counts
    assert cad_out == plain_out and cad_n == 2 * plain_n
    one = generation_passes(SHAPE, [5, 3, 4], 2, 4)
    two = generation_passes(SHAPE, [5, 3, 4], 2, 4, context_free_lengths=[2, 1, 3])
    assert sum(p.count for p in two) == 2 * sum(p.count for p in one)
    assert count(two, Kind.DECODE) == 2 * count(one, Kind.DECODE)


def test_decoding_steps_follow_the_gold_answer_and_never_pass_the_limit():
    assert decode_steps(12, None) == 11
    assert decode_steps(12, [3, 1]) == 4  # 3 tokens, what closes the answer and the line break: 5 new tokens
    assert decode_steps(4, [9]) == 3
    longest = generation_passes(SHAPE, [10, 20, 30], 2, 12)
    expected = generation_passes(SHAPE, [10, 20, 30], 2, 12, answer_tokens=[1, 1, 1])
    assert count(longest, Kind.DECODE) == 2 * 11 and count(expected, Kind.DECODE) == 2 * 2
    assert count(generation_passes(SHAPE, [10, 20, 30], 2, 12, conditions=3), Kind.PREFILL) == 6


# --------------------------------------------------------------------------- the arithmetic


def rates() -> Rates:
    """Every kind priced alike: 10 ms a call, 1 ms a block call, 50 ms a GFLOP."""
    observations = []
    for kind in Kind:
        for rows in (1, 8, 64):
            step = Pass(kind, rows, 16, 4, 8, logits=1)
            calls, blocks, gflop, _ = step.features(SHAPE)
            observations.append(Observation(step, 0.01 * calls + 0.001 * blocks + 0.05 * gflop))
    return Rates(SHAPE, observations)


def seconds(passes) -> float:
    r = rates()
    return sum(r.seconds(p) for p in passes)


def test_the_fit_recovers_the_prices_it_was_given():
    assert rates().seconds(Pass(Kind.PREFILL, 32, 100, 4, 50, logits=1, count=3)) == pytest.approx(
        3 * (0.01 + 0.004 + 0.05 * Pass(Kind.PREFILL, 32, 100, 4, 50, logits=1).flops(SHAPE) / 1e9), rel=1e-3)


@pytest.mark.parametrize("bigger", [
    dict(settings=((4, 8), (6, 5), (8, 4))), dict(settings=((8, 8), (6, 5))), dict(settings=((4, 16), (6, 5)))])
def test_the_scan_costs_more_for_more_or_larger_settings(bigger):
    small = seconds(scan_passes(SHAPE, TASK, 4, True))
    assert seconds(scan_passes(SHAPE, dataclasses.replace(TASK, **bigger), 4, True)) > small


@pytest.mark.parametrize("bigger", [dict(steps=4), dict(batch_size=8), dict(n=16), dict(micro_batch=1)])
def test_training_costs_more_for_more_steps_rows_tokens_or_calls(bigger):
    assert seconds(train_passes(SHAPE, dataclasses.replace(RECIPE, **bigger))) > seconds(train_passes(SHAPE, RECIPE))
    assert seconds(train_passes(SHAPE, RECIPE, 0)) > seconds(train_passes(SHAPE, RECIPE, 3))  # a longer backward


def test_every_stage_costs_more_on_a_larger_model():
    wider = dataclasses.replace(SHAPE, n_layers=8, block_params=4 * SHAPE.block_params, d_vocab=4096)
    for passes in (lambda s: scan_passes(s, TASK, 4, True), lambda s: train_passes(s, RECIPE),
                   lambda s: generation_passes(s, [30, 40], 2, 8), lambda s: likelihood_passes(s, [30], [[2, 3]], 1)):
        assert seconds(passes(wider)) > seconds(passes(SHAPE))
        assert max(p.activation_bytes(wider, 4) for p in passes(wider)) > max(p.activation_bytes(SHAPE, 4)
                                                                              for p in passes(SHAPE))


def test_evaluation_costs_more_for_more_items_or_longer_prompts():
    assert seconds(generation_passes(SHAPE, [30] * 8, 4, 8)) > seconds(generation_passes(SHAPE, [30] * 4, 4, 8))
    assert seconds(generation_passes(SHAPE, [60] * 4, 4, 8)) > seconds(generation_passes(SHAPE, [30] * 4, 4, 8))


def test_a_fit_from_one_size_still_prices_that_size():
    step = Pass(Kind.TRAIN_STEP, 2, 10, 4, 5, logits=5, backward_blocks=4)
    coef = fit(SHAPE, [Observation(step, 0.7)])
    assert (coef >= 0).all() and float(np.dot(coef, step.features(SHAPE))) == pytest.approx(0.7, rel=1e-6)


# --------------------------------------------------------------------------- the worker advice


def test_workers_are_whole_jobs_per_worker_within_the_deadline():
    advice = advise_workers(40, 30 * 60, 5, kind="train")
    assert (advice.jobs_per_worker, advice.workers, advice.local_hours) == (10, 4, 20.0)
    assert "need 4 workers to finish in 5.0 h" in str(advice) and "--executor slurm (or ray)" in str(advice)
    assert "local (1 worker) would take 20.0 h" in str(advice)
    # 7 jobs of 40 min in 1 h: one job per worker, so 7 workers (not ceil(7 * 40 / 60) = 5)
    assert advise_workers(7, 40 * 60, 1).workers == 7


def test_one_worker_is_local_and_a_job_longer_than_the_deadline_cannot_be_helped():
    assert advise_workers(3, 600, 1).workers == 1 and advise_workers(3, 600, 1).executor == "local"
    assert "--executor local is enough" in str(advise_workers(3, 600, 1))
    late = advise_workers(3, 2 * 3600, 1)
    assert late.workers is None and not late.feasible and "no number of workers" in str(late)
    assert advise_workers(3, 600).workers == 1 and "would take 30 min" in str(advise_workers(3, 600))


@pytest.mark.parametrize("jobs, per_job, deadline", [(0, 60, 1), (True, 60, 1), (3, float("nan"), 1), (3, 60, 0),
                                                     (3, 60, float("inf"))])
def test_nonsense_study_sizes_are_refused(jobs, per_job, deadline):
    with pytest.raises(PearLensError):
        advise_workers(jobs, per_job, deadline)


# --------------------------------------------------------------------------- the estimate, end to end


@pytest.fixture(scope="module")
def estimate():
    return estimate_cost(tiny("llama"), task=TASK, recipe=RECIPE, heads=[(1, 2)],
                         evaluation=EvalWork(n=4, batch_size=2, conditions=2, likelihood=True), budget=0.02)


def test_the_estimate_prices_every_stage_and_says_what(estimate):
    assert [s.stage for s in estimate.stages] == ["scan", "train", "eval"]
    for stage in estimate.stages:
        assert stage.seconds > 0 and stage.peak_bytes >= estimate.shape.weight_bytes
        assert stage.seconds == pytest.approx(sum(stage.parts.values()))
        assert not stage.peak_measured  # the CPU: estimated from the shapes
    assert set(estimate.stage("scan").parts) == {"copy check", "scan"}
    assert set(estimate.stage("eval").parts) == {"build", "generate", "likelihood"}
    assert count(estimate.stage("eval").passes, Kind.BUILD) == 4  # two conditions, each built for both endpoints
    assert estimate.stage("eval").upper_seconds >= estimate.stage("eval").seconds
    # the eval holds a second copy of the weights (each condition's Hugging Face model)
    assert estimate.stage("eval").peak_bytes > 2 * estimate.shape.weight_bytes
    assert "backward down to layer 1" in estimate.stage("train").what
    frame = estimate.to_dataframe()
    assert list(frame["stage"]) == ["scan", "train", "eval"]
    assert {"seconds", "minutes", "peak_gb", "peak_measured", "passes", "what"} <= set(frame.columns)
    text = str(estimate)
    assert text.startswith("tiny-llama on cpu in float32: 3 layers x 4 heads") and "probes" in text
    # (a kind no probe saw, like candidates longer than a token on the tiny tokenizer, is priced as its fallback)
    assert set(estimate.rates) >= {"copy_check", "scan_clean", "scan_layer", "train_step", "prefill", "decode", "build"}
    with pytest.raises(PearLensError, match="no stage 'atlas'"):
        estimate.stage("atlas")


def test_the_estimate_prices_context_aware_decoding_as_a_condition_run_twice():
    base = dict(n=4, batch_size=2, conditions=1, likelihood=True)
    plain, cad = (estimate_cost(tiny("llama"), stages=("eval",), evaluation=EvalWork(**base, cad=c), budget=0.02)
                  for c in (False, True))
    assert set(cad.stage("eval").parts) == {"build", "generate", "generate (CAD)", "likelihood", "likelihood (CAD)"}
    assert count(cad.stage("eval").passes, Kind.BUILD) == 4  # the condition and CAD, each built for both endpoints
    assert cad.stage("eval").parts["generate (CAD)"] > plain.stage("eval").parts["generate"]
    assert cad.stage("eval").parts["likelihood (CAD)"] > plain.stage("eval").parts["likelihood"]
    assert "CAD runs every pass again on the context-free prompts" in cad.stage("eval").what
    with pytest.raises(PearLensError, match="closed-book task has none"):
        EvalWork(task="closed-book", cad=True)


def test_the_advice_prices_a_job_at_its_stage(estimate):
    advice = estimate.advise(10, "train", 1)
    assert advice.seconds_per_job == pytest.approx(estimate.stage("train").seconds)  # handed over loaded: no load
    assert advice.workers == 1


def test_bad_estimate_arguments_are_refused():
    with pytest.raises(PearLensError, match="unknown stage 'atlas'"):
        estimate_cost(tiny("llama"), stages=("atlas",))
    with pytest.raises(PearLensError, match="outside"):
        estimate_cost(tiny("llama"), heads=[(7, 0)], stages=("train",))
    with pytest.raises(PearLensError, match="eval n must be at least 1"):
        EvalWork(n=0)


# --------------------------------------------------------------------------- pear-lens estimate


ESTIMATE = ["estimate", "--model", "tiny-llama", "--scan.settings", "4x8", "--train.steps", "2", "--train.batch-size",
            "2", "--train.micro-batch", "2", "--train.n", "8", "--eval.n", "2", "--eval.batch-size", "2",
            "--budget", "0.02"]


def test_the_command_prints_each_stage_and_the_workers_a_study_needs(capsys):
    from pear_lens.commands.cli import main

    assert main([*ESTIMATE, "--train.heads", "1.2", "--study-jobs", "12", "--job-kind", "scan",
                 "--deadline-hours", "2"]) == 0
    out = capsys.readouterr().out
    for stage in ("scan", "train", "eval"):
        assert f"  {stage} " in out
    assert "model load" in out and "12 scan jobs of ~" in out and "need 1 worker to finish in 2.0 h" in out
    assert "backward down to layer 1" in out


@pytest.mark.parametrize("args, says", [
    (["--stages", "scan,atlas"], "--stages takes some of scan, train, eval"),
    (["--deadline-hours", "3"], "give its number of jobs with --study-jobs"),
    (["--study-jobs", "0"], "--study-jobs must be at least 1"),
    (["--stages", "scan", "--study-jobs", "3", "--job-kind", "train"], "--job-kind train is not among --stages"),
    (["--eval.n", "0"], "eval n must be at least 1"),
    (["--train.heads", "9.0", "--stages", "train"], "outside"),
    (["--device", "cuda:7"], "cuda"),
])
def test_bad_input_gets_one_line(capsys, args, says):
    refused(capsys, [*ESTIMATE, *args], says=says)


def test_an_unknown_job_kind_is_a_usage_error_in_one_line(capsys):
    from pear_lens.commands.cli import main

    with pytest.raises(SystemExit) as e:
        main([*ESTIMATE, "--job-kind", "atlas"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'atlas'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_peak_memory_is_measured_on_the_probes():
    est = estimate_cost("tiny-llama", device="cuda", task=TASK, recipe=RECIPE,
                        evaluation=EvalWork(n=4, batch_size=2, likelihood=True), budget=0.05)
    assert est.device.startswith("cuda") and est.load_seconds is not None
    for stage in est.stages:
        assert stage.peak_measured and stage.peak_bytes > 0 and stage.seconds > 0
