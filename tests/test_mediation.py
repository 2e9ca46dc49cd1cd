"""Scoring methods checked against each other: fast against plain, path against
activation where they must coincide, attribution against exact activation."""
from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from pear_lens.agreement import spearman
from pear_lens.errors import PearLensError
from pear_lens.mediation import METHODS, score_heads
from pear_lens.mediation.base import derangement
from pear_lens.models import TINY_FAMILIES, build_tiny, boot_bridge
from pear_lens.proxy_task import ProxyTask

from .conftest import tiny

TASK = ProxyTask(settings=((6, 8), (4, 5)), seed=1)


def assert_same_scores(a, b, rtol=1e-4, atol=1e-6):
    scale = b.scores.abs().max().item()
    diff = (a.scores - b.scores).abs().max().item()
    assert diff <= rtol * scale + atol, f"max diff {diff:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("metric", ["logit_minus_mean", "prob"])
def test_fast_path_scan_equals_plain_loop(tiny_model, metric):
    fast = score_heads(tiny_model, TASK, metric, "path", difference="absolute", progress=False)
    plain = score_heads(tiny_model, TASK, metric, "path", difference="absolute", progress=False,
                        implementation="plain")
    assert_same_scores(fast, plain)
    assert fast.clean_metric == pytest.approx(plain.clean_metric, rel=1e-5, abs=1e-7)


def _activation_fast_vs_plain(model, **opts):
    fast = score_heads(model, TASK, "logit_minus_mean", "activation", difference="absolute",
                       progress=False, **opts)
    plain = score_heads(model, TASK, "logit_minus_mean", "activation", difference="absolute",
                        progress=False, implementation="plain", **opts)
    assert_same_scores(fast, plain)


def test_fast_activation_equals_plain_loop(tiny_model):
    _activation_fast_vs_plain(tiny_model)


def test_cached_end_activation_equals_plain_loop(tiny_model):
    # the one-token steps on the clean key-value cache, on every family's cache and position scheme
    _activation_fast_vs_plain(tiny_model, positions="end")


def test_cached_end_activation_falls_back_when_the_cache_stays_empty(monkeypatch):
    # without the cache alias, Llama's attention bridges ignore the cache: the scan must notice, warn, and
    # rerun whole sequences instead of scoring one-token steps that saw only themselves
    import contextlib

    from pear_lens.mediation import activation

    monkeypatch.setattr(activation, "passing_kv_cache", lambda bridge: contextlib.nullcontext())
    with pytest.warns(UserWarning, match="key-value cache"):
        _activation_fast_vs_plain(tiny("llama"), positions="end")


@pytest.mark.parametrize("family", ["gemma3", "bloom"])
@pytest.mark.parametrize("opts", [{"positions": "end", "ablation": "zero"}, {"positions": "end", "ablation": "resample"},
                                  {"ablation": "zero"}, {"ablation": "resample"}])
def test_fast_activation_equals_plain_loop_for_every_ablation(family, opts):
    _activation_fast_vs_plain(tiny(family), **opts)


def test_path_and_activation_agree_on_the_last_layer_only():
    # In the last layer there is no later attention to freeze, so path patching
    # (q/k/v frozen) and activation patching at `end` must coincide there, and
    # only there: earlier layers act through later attention, which path blocks.
    m = tiny("llama")
    path = score_heads(m, TASK, method="path", difference="absolute", progress=False)
    act = score_heads(m, TASK, method="activation", positions="end", difference="absolute", progress=False)
    torch.testing.assert_close(path.scores[-1], act.scores[-1], rtol=1e-4, atol=1e-6)
    assert (path.scores[:-1] - act.scores[:-1]).abs().max() > 1e-4


def test_a_head_without_output_scores_exactly_zero():
    hf, tok = build_tiny("llama")
    with torch.no_grad():
        hf.model.layers[1].self_attn.o_proj.weight[:, 16:32] = 0.0  # head 1 of layer 1 writes nothing
    from pear_lens.fingerprint import fingerprint
    from pear_lens.models import LoadedModel

    m = LoadedModel("tiny-llama-ablated", boot_bridge(hf, tok, "x"), tok, fingerprint(hf), "test", "x", "llama",
                    lambda: None)
    for method in ("path", "activation", "attribution"):
        s = score_heads(m, TASK, method=method, difference="absolute", progress=False)
        assert s.scores[1, 1].item() == pytest.approx(0.0, abs=1e-6), method
        assert s.scores.abs().max() > 1e-4, method


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_attribution_tracks_exact_activation(family):
    m = tiny(family)
    task = ProxyTask(settings=((8, 8),), seed=2)
    exact = score_heads(m, task, method="activation", difference="absolute", progress=False)
    approx = score_heads(m, task, method="attribution", difference="absolute", progress=False)
    rho = spearman(exact.scores, approx.scores)
    assert rho > 0.6, f"Spearman {rho:.2f}"


def test_relative_is_absolute_over_clean():
    m = tiny("qwen2")
    rel = score_heads(m, TASK, difference="relative", progress=False)
    ab = score_heads(m, TASK, difference="absolute", progress=False)
    clean = torch.tensor(ab.clean_metric)[:, None, None]
    torch.testing.assert_close(rel.per_setting, ab.per_setting / clean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(rel.scores, rel.per_setting.mean(0))


def test_methods_share_one_signature_and_result_type():
    m = tiny("gpt2")
    for name, method in METHODS.items():
        s = method.fn(m, TASK, progress=False)
        assert s.method == name and s.scores.shape == (m.n_layers, m.n_heads)
        assert s.per_setting.shape == (2, m.n_layers, m.n_heads)
        assert method.short and method.description


def test_gqa_is_scored_per_query_head():
    m = tiny("gemma3")  # 4 query heads share 1 key/value head
    s = score_heads(m, TASK, progress=False)
    assert s.scores.shape == (3, 4)
    assert len(set(s.scores[1].tolist())) == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "nope"}, "unknown method"),
    ({"metric": "accuracy"}, "unknown metric"),
    ({"difference": "ratio"}, "unknown difference"),
    ({"ablation": "noise"}, "unknown ablation"),
    ({"method": "activation", "positions": "first"}, "unknown positions"),
    ({"implementation": "quick"}, "unknown implementation"),
    ({"positions": "end"}, "positions does not apply to method 'path'"),  # path always patches `end`
])
def test_closed_vocabularies_are_validated(kwargs, message):
    with pytest.raises(PearLensError, match=message):
        score_heads(tiny("llama"), TASK, progress=False, **kwargs)


def test_batch_mean_needs_two_sequences():
    with pytest.raises(PearLensError, match="at least 2"):
        score_heads(tiny("llama"), ProxyTask(settings=((1, 8),)), progress=False)
    s = score_heads(tiny("llama"), ProxyTask(settings=((1, 8),)), ablation="zero", progress=False)
    assert torch.isfinite(s.scores).all()


def test_derangement_moves_every_sequence():
    for n in (2, 3, 10):
        perm = derangement(n, seed=n)
        assert sorted(perm.tolist()) == list(range(n))
        assert not (perm == torch.arange(n)).any()


def test_head_scores_table_and_heatmap():
    s = score_heads(tiny("opt"), TASK, progress=False)
    df = s.to_dataframe()
    assert list(df.columns[:4]) == ["layer", "head", "score", "rank"]
    assert len(df) == 12 and sorted(df["rank"]) == list(range(1, 13))
    best = df.sort_values("rank").iloc[0]
    assert (int(best["layer"]), int(best["head"])) == s.top_k(1)[0]
    assert best.score == pytest.approx(s.scores.max().item())
    assert set(df["method"]) == {"path"} and "ablation" in df.columns
    fig = s.heatmap(top_k=3)
    assert isinstance(fig, go.Figure) and fig.data[0].zmid == 0
    with pytest.raises(PearLensError):
        s.top_k(0)
    long = s.per_setting_dataframe()
    assert len(long) == 2 * 12 and set(long["n"]) == {8, 5}


def test_scores_are_reproducible():
    a = score_heads(tiny("bloom"), TASK, ablation="resample", progress=False)
    b = score_heads(tiny("bloom"), TASK, ablation="resample", progress=False)
    assert torch.equal(a.scores, b.scores)


@pytest.mark.parametrize("method, opts", [("path", {}), ("activation", {"ablation": "zero", "positions": "end"})])
def test_rescore_rebuilds_the_scan_with_per_prompt_values(tmp_path, method, opts):
    """Scores that lost their per-prompt values (a discovery run's head_scores.csv) are rescanned exactly: same
    task, method, metric, options and seed give the same scores, now with prompts to resample."""
    import dataclasses

    from pear_lens.mediation import rescore
    from pear_lens.prompt_task import PromptTask
    from pear_lens.results import HeadScores

    model = tiny("llama")
    ids = torch.randint(4, model.d_vocab, (5, 6), generator=torch.Generator().manual_seed(1))
    tasks = [ProxyTask(settings=((4, 6), (3, 8)), seed=3), PromptTask(ids, ids[:, 0], foils=ids[:, 1], name="mine")]
    for task in tasks:
        full = score_heads(model, task, "logit_diff" if isinstance(task, PromptTask) else "logit_minus_mean", method,
                           progress=False, copy_check="off", seed=2, **opts)
        bare = dataclasses.replace(full, per_prompt=None, clean_per_prompt=None, prompt_setting=None)
        folder = tmp_path / f"{method}-{type(task).__name__}"
        bare.save(folder)
        again = rescore(model, HeadScores.load(folder), progress=False)
        assert torch.equal(again.scores, full.scores)
        assert torch.equal(again.per_prompt, full.per_prompt)
        assert again.options == full.options and again.task == full.task
        lo, hi = again.ci(n_boot=1000)
        assert lo.shape == full.scores.shape and bool((lo <= hi).all())


def test_rescore_refuses_scores_of_other_weights():
    import dataclasses

    from pear_lens.mediation import rescore

    model = tiny("llama")
    scores = score_heads(model, ProxyTask(settings=((4, 6),)), progress=False, copy_check="off")
    with pytest.raises(PearLensError, match="other weights"):
        rescore(model, dataclasses.replace(scores, fingerprint="blake2b:0000"), progress=False)
    with pytest.raises(PearLensError, match="not registered"):
        rescore(model, dataclasses.replace(scores, method="nope"), progress=False)
    with pytest.raises(PearLensError, match="no fingerprint"):
        rescore(model, dataclasses.replace(scores, fingerprint=""), progress=False)
    with pytest.raises(PearLensError, match="your own metric"):
        rescore(model, dataclasses.replace(scores, metric="custom:mine"), progress=False)


def test_rescore_takes_the_same_weights_in_another_dtype_for_the_same():
    """A fingerprint digests the weights' bytes as loaded: scores made in bfloat16 are rescanned by the float32
    model when told the dtype they were made in (a discovery run records it), not refused as other weights."""
    import dataclasses

    from pear_lens.mediation import rescore
    from pear_lens.models import load_model

    half = load_model("tiny-llama", dtype="bfloat16")
    scores = score_heads(half, ProxyTask(settings=((4, 6),)), progress=False, copy_check="off")
    full = tiny("llama")
    assert scores.extra["dtype"] == "bfloat16"  # score_heads records it: read from there
    assert rescore(full, scores, progress=False).per_prompt is not None
    bare = dataclasses.replace(scores, extra={})  # a head_scores.csv keeps no dtype: name it, or be refused
    with pytest.raises(PearLensError, match="other weights"):
        rescore(full, bare, progress=False)
    again = rescore(full, bare, dtype="bfloat16", progress=False)
    assert again.per_prompt is not None and again.fingerprint == full.fingerprint
