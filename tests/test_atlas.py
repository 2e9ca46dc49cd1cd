"""The head atlas (issue 17): each detector finds the head built to hold its role, agrees with
TransformerLens where both run, and the command refuses bad input in one line without touching the
run folder."""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from pear_lens import constants
from pear_lens.agreement import spearman
from pear_lens.atlas import DETECTORS, HeadAtlas, NeedleConfig, PromptSet, head_atlas, register_detector
from pear_lens.atlas.base import record
from pear_lens.atlas.detectors import (CopySuppressionOptions, PatternOptions, _detection, copy_suppression,
                                       pattern_score, retrieval_hits)
from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.proxy_task import ProxyTask
from pear_lens.results import HeadScores

from .cli_support import discover
from .conftest import tiny
from .test_reliability import refused, snapshot

ATLAS = ["--no-png", "--quiet", "--needle.n-prompts", "2", "--needle.haystack-tokens", "16", "--n-boot", "1000"]


def zero_scores(model, task: ProxyTask, scores: torch.Tensor | None = None) -> HeadScores:
    """A Δπ of ``model``'s weights (zeros unless given) on ``task``, without scoring anything."""
    scores = torch.zeros(model.n_layers, model.n_heads) if scores is None else scores
    return HeadScores(scores=scores, per_setting=scores[None], clean_metric=[0.0], model=model.name, method="path",
                      metric="logit_minus_mean", difference="absolute", task=task.to_dict(),
                      fingerprint=model.fingerprint)


# --------------------------------------------------------------------------- 1. heads built to hold a role

# A two-layer GPT-2 whose residual stream holds one-hot subspaces: the current token (TOK), the position
# (POS) and the previous token (PREV, written by the previous-token head). Every one-hot entry has a
# negative mirror, so the residual's mean is zero and LayerNorm only rescales it (by 8 in layer 0, where
# four entries are ±1 in 256 dimensions). MLPs, biases and every other head's weights are zero.
N_TOKENS, N_POS, FIRST_TOKEN = 48, 32, 4
TOK, POS, PREV = 0, N_TOKENS, N_TOKENS + N_POS
HALF = 2 * N_TOKENS + N_POS
D_MODEL, N_HEADS = 2 * HALF, 4
D_HEAD = D_MODEL // N_HEADS
BUILT = {"previous_token": (0, 1), "sink": (0, 3), "induction": (1, 2)}
BUILT_TASK = ProxyTask(settings=((4, 12),), vocab=list(range(FIRST_TOKEN, FIRST_TOKEN + N_TOKENS)), seed=0)


def build_role_model(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from pear_lens.models import TINY_VOCAB, tiny_tokenizer

    config = GPT2Config(vocab_size=TINY_VOCAB, n_positions=N_POS, n_embd=D_MODEL, n_layer=2, n_head=N_HEADS,
                        bos_token_id=1, eos_token_id=2, pad_token_id=3, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval()
    layers = model.transformer.h

    def one_hot(vec: torch.Tensor, i: int, value: float = 1.0) -> None:
        vec[i] += value
        vec[HALF + i] -= value

    def qkv(layer: int, head: int, which: int) -> torch.Tensor:
        """The [d_model, d_head] block of c_attn (a Conv1D: x @ W) giving head's query (0), key (1), value (2)."""
        start = which * D_MODEL + head * D_HEAD
        return layers[layer].attn.c_attn.weight[:, start:start + D_HEAD]

    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for block in layers:
            block.ln_1.weight.fill_(1.0)
            block.ln_2.weight.fill_(1.0)
        model.transformer.ln_f.weight.fill_(1.0)
        for t in range(N_TOKENS):
            one_hot(model.transformer.wte.weight[FIRST_TOKEN + t], TOK + t)
        for p in range(N_POS):
            one_hot(model.transformer.wpe.weight[p], POS + p)
        # previous-token head: the query of position p looks for the key of position p - 1 (logit 8·2·2·8/8 = 32),
        # and the head writes the token it reads into PREV
        layer, head = BUILT["previous_token"]
        for p in range(N_POS):
            if p:
                qkv(layer, head, 0)[POS + p, p - 1] = 2.0
            qkv(layer, head, 1)[POS + p, p] = 2.0
        out = layers[layer].attn.c_proj.weight  # [heads' d_head, d_model]
        for t in range(N_TOKENS):
            qkv(layer, head, 2)[TOK + t, t] = 1.0
            out[head * D_HEAD + t, PREV + t] = 1 / 8
            out[head * D_HEAD + t, HALF + PREV + t] = -1 / 8
        # sink head: every query looks for position 0; it writes nothing
        layer, head = BUILT["sink"]
        for p in range(N_POS):
            qkv(layer, head, 0)[POS + p, 0] = 2.0
        qkv(layer, head, 1)[POS, 0] = 2.0
        # induction head: the query reads the current token, the key the previous token (PREV)
        layer, head = BUILT["induction"]
        for t in range(N_TOKENS):
            qkv(layer, head, 0)[TOK + t, t] = 3.0
            qkv(layer, head, 1)[PREV + t, t] = 3.0
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def role_model(tmp_path_factory):
    from pear_lens import load_model

    return load_model(str(build_role_model(tmp_path_factory.mktemp("roles") / "model")))


@pytest.fixture(scope="module")
def role_atlas(role_model):
    return head_atlas(role_model, zero_scores(role_model, BUILT_TASK),
                      ["previous_token", "induction", "sink", "copy_suppression"])


@pytest.mark.parametrize("name", list(BUILT))
def test_each_detector_ranks_the_head_built_for_its_role_first(role_atlas, name):
    layer, head = BUILT[name]
    df = role_atlas.to_dataframe().set_index(["layer", "head"])
    assert role_atlas.top_heads(name, 1) == [(layer, head)]
    assert df.loc[(layer, head), f"{name}_rank"] == 1
    built = df.loc[(layer, head), name]
    runner_up = df[name].drop(index=(layer, head)).max()
    # the built head holds its role on every query row it can (about half the rows for induction)
    assert built > {"previous_token": 0.9, "sink": 0.99, "induction": 0.5}[name]
    assert runner_up < 0.2


def test_a_head_that_writes_nothing_suppresses_nothing(role_atlas):
    scores = role_atlas.score("copy_suppression")
    writes = BUILT["previous_token"]  # the only head with a nonzero output projection
    for layer in range(2):
        for head in range(N_HEADS):
            if (layer, head) != writes:
                assert scores[layer, head].item() == 0.0
    assert scores[writes].item() != 0.0


# --------------------------------------------------------------------------- 2. agreement with TransformerLens

TL_KINDS = ("previous_token_head", "duplicate_token_head", "induction_head")
TEXTS = ("w5 w6 w7 w8 w9 w10 w5 w6 w7 w8 w9 w10 w6", "w40 w41 w40 w42 w43 w44 w41 w40 w42 w45 w43 w44 w46")


@pytest.mark.parametrize("exclude_bos, exclude_current_token", [(False, False), (True, False), (False, True),
                                                                 (True, True)])
def test_pattern_scores_equal_transformer_lens_detect_head(exclude_bos, exclude_current_token):
    from transformer_lens.head_detector import detect_head

    model = tiny("llama")
    tokens = torch.cat([model.bridge.to_tokens(t) for t in TEXTS])  # one batch of two prompts
    assert tokens.shape == (2, 14) and (tokens[:, 0] == model.tokenizer.bos_token_id).all()
    rec = record(model, tokens)
    options = PatternOptions(exclude_bos=exclude_bos, exclude_current_token=exclude_current_token)
    for kind in TL_KINDS:
        ours = pattern_score(rec.patterns, _detection(kind, tokens), options)
        assert ours.shape == (2, model.n_layers, model.n_heads)
        for b, text in enumerate(TEXTS):
            theirs = detect_head(model.bridge, text, kind, exclude_bos=exclude_bos,
                                 exclude_current_token=exclude_current_token)
            assert torch.allclose(ours[b], theirs.float(), atol=1e-5, rtol=0), kind
            assert ours[b].std() > 0  # a real comparison, not two constants


# --------------------------------------------------------------------------- 3. retrieval


def test_retrieval_hits_count_distinct_needle_positions_holding_the_emitted_token():
    tokens = torch.tensor([1, 10, 11, 12, 10, 5, 6, 7])
    needle = (1, 4)  # holds 10, 11, 12

    def rows(*tops):  # one head per argument: its most-attended position at each step
        out = torch.full((len(tops), len(tops[0]), len(tokens)), 0.01)
        for h, top in enumerate(tops):
            for s, pos in enumerate(top):
                out[h, s, pos] = 0.9
        return out

    emitted = torch.tensor([10, 11, 12])
    scores = retrieval_hits(rows([1, 2, 3],   # every needle token copied from its own position
                                 [1, 1, 1],   # one position, holding the emitted token only at step 0
                                 [4, 2, 3],   # position 4 holds 10 but lies outside the needle
                                 [2, 1, 3],   # inside the needle, but the wrong token at steps 0 and 1
                                 [5, 6, 0]),  # never inside
                            tokens, emitted, needle)
    assert scores.tolist() == pytest.approx([1.0, 1 / 3, 2 / 3, 1 / 3, 0.0])
    # the same position hit at every step counts once
    again = retrieval_hits(rows([1, 1, 1]), tokens, torch.tensor([10, 10, 10]), needle)
    assert again.tolist() == pytest.approx([1 / 3])


def test_retrieval_scores_one_for_a_head_that_copies_the_needle_and_zero_elsewhere(monkeypatch):
    import pear_lens.atlas.core as core
    from pear_lens.atlas.needle import build_prompts

    model = tiny("llama")
    needle = NeedleConfig(n_prompts=3, haystack_tokens=20)
    prompts = build_prompts(model, needle, core.ANSWER_EXTRA_TOKENS)
    # the model "answers" each prompt with the needle's value, token for token: every prompt counts as copied
    monkeypatch.setattr(core, "greedy_answers",
                        lambda m, ps, extra: [p.ids[p.needle_start:p.needle_end] for p in ps])
    copier, elsewhere = (1, 2), (2, 0)
    seen = {"prompt": -1}

    def force(layer: int, pattern: torch.Tensor) -> torch.Tensor:
        if layer == 0:  # record() runs one prompt at a time, layers in order
            seen["prompt"] += 1
        p = prompts[seen["prompt"]]
        assert pattern.shape[-1] == len(p.ids) + p.needle_end - p.needle_start
        pattern = pattern.clone()
        for step in range(p.needle_end - p.needle_start):
            row = len(p.ids) + step - 1  # the query that emits the answer's token `step`
            for (l, h), target in ((copier, p.needle_start + step), (elsewhere, p.needle_start - 1)):
                if layer == l:
                    pattern[:, h, row] = 0.0
                    pattern[:, h, row, target] = 1.0
        return pattern

    atlas = head_atlas(model, zero_scores(model, ProxyTask(settings=((2, 4),))), ["retrieval"], needle=needle,
                       pattern_hook=force)
    assert seen["prompt"] == len(prompts) - 1
    assert atlas.per_prompt["retrieval"].shape == (3, model.n_layers, model.n_heads)
    assert atlas.detectors["retrieval"]["diagnostics"] == {"n_copied": 3, "n_prompts": 3}
    assert atlas.prompts["needle"]["copy_rate"] == 1.0
    score = atlas.score("retrieval")
    assert score[copier].item() == 1.0
    assert score[elsewhere].item() == 0.0
    assert atlas.top_heads("retrieval", 1) == [copier]


def test_retrieval_skips_prompts_whose_answer_missed_the_needle(monkeypatch):
    import pear_lens.atlas.core as core

    model = tiny("llama")
    needle = NeedleConfig(n_prompts=2, haystack_tokens=12)
    # prompt 0 is answered with its needle, prompt 1 with the wrong tokens
    monkeypatch.setattr(core, "greedy_answers", lambda m, ps, extra: [
        ps[0].ids[ps[0].needle_start:ps[0].needle_end], [5, 6, 7]])
    atlas = head_atlas(model, zero_scores(model, ProxyTask(settings=((2, 4),))), ["retrieval"], needle=needle)
    per_prompt = atlas.per_prompt["retrieval"]
    assert torch.isfinite(per_prompt[0]).all() and torch.isnan(per_prompt[1]).all()
    assert atlas.statistics().loc[0, "n_prompts"] == 1
    everyone = head_atlas(model, zero_scores(model, ProxyTask(settings=((2, 4),))), ["retrieval"],
                          {"retrieval": {"all_prompts": True}}, needle=needle)
    assert torch.isfinite(everyone.per_prompt["retrieval"]).all()


# --------------------------------------------------------------------------- 4. copy suppression


@pytest.mark.parametrize("prepend_bos, include_bos", [(False, False), (True, False), (True, True)])
def test_copy_suppression_is_the_heads_direct_effect_on_the_attended_logit(prepend_bos, include_bos):
    model = tiny("llama")
    batch = ProxyTask(settings=((2, 6),), prepend_bos=prepend_bos, seed=3).batches(model)[0]
    rec = record(model, batch.tokens, offset=batch.offset, n=batch.n)
    tested = ((0, 0, 1), (1, 2, 3))
    if prepend_bos:  # make the BOS the most-attended key of the tested heads, so its exclusion matters
        for b, layer, head in tested:
            rec.patterns[layer][b, head, :, 0] += 1.0
    got = copy_suppression(model, rec, CopySuppressionOptions(include_bos=include_bos))
    assert got.shape == (2, model.n_layers, model.n_heads)

    d_head = model.cfg.d_head
    positions = range(batch.offset + batch.n, batch.tokens.shape[1] - 1)
    first = 0 if include_bos else batch.offset  # a BOS counts as the attended token only with include_bos
    for b, layer, head in tested:
        o_proj = model.bridge.original_model.model.layers[layer].self_attn.o_proj.weight  # [d_model, heads·d_head]
        effects = []
        for pos in positions:
            keys = rec.patterns[layer][b, head, pos]
            attended = batch.tokens[b, first + int(keys[first:].argmax())]
            head_out = o_proj[:, head * d_head:(head + 1) * d_head] @ rec.z[layer][b, pos, head]
            resid = rec.resid_final[b, pos]
            with torch.no_grad():
                logits = [model.bridge.unembed(model.bridge.ln_final(r[None, None]))[0, 0]
                          for r in (resid, resid - head_out)]
            with_head, without = (lg[attended] - lg.mean() for lg in logits)
            effects.append(float(with_head - without))
        assert got[b, layer, head].item() == pytest.approx(float(np.mean(effects)), rel=1e-4, abs=1e-6)
        assert abs(float(np.mean(effects))) > 1e-6


def test_copy_suppression_of_a_silent_head_is_zero():
    model = tiny("llama")
    batch = ProxyTask(settings=((2, 6),), seed=3).batches(model)[0]
    rec = record(model, batch.tokens, offset=batch.offset, n=batch.n)
    rec.z[1][:, :, 2] = 0.0  # L1.H2 writes nothing
    got = copy_suppression(model, rec, CopySuppressionOptions())
    assert (got[:, 1, 2] == 0).all()
    assert (got[:, 1, 1] != 0).all()


# --------------------------------------------------------------------------- 5. the result object

DELTA = torch.tensor([[0.5, -0.1, 0.3], [0.9, 0.0, -0.4]])


def made_atlas() -> HeadAtlas:
    """Three detectors on 2 × 3 heads: ``a`` (higher is the role), ``b`` (lower is the role) and ``flat``
    (the same scores on every prompt), each with four prompts; ``b`` skipped its last prompt (NaN)."""
    delta = HeadScores(scores=DELTA, per_setting=DELTA[None], clean_metric=[1.0], model="made-up", method="path",
                       metric="logit_minus_mean", difference="absolute", task=ProxyTask(settings=((4, 8),)).to_dict(),
                       fingerprint="blake2b:00")
    gen = torch.Generator().manual_seed(0)
    a_mean = torch.tensor([[0.1, 0.8, 0.2], [0.7, 0.0, 0.3]])
    a = a_mean + torch.tensor([-0.03, 0.01, 0.02, 0.0])[:, None, None]  # mean over prompts is a_mean
    b = torch.tensor([[-0.5, 0.1, 0.2], [-0.9, 0.0, 0.3]]) + 0.05 * torch.randn(4, 2, 3, generator=gen)
    b[3] = float("nan")
    flat = torch.tensor([[3.0, 1.0, 2.0], [6.0, 5.0, 4.0]]).expand(4, 2, 3).clone()
    detectors = {name: {"short": name.upper(), "definition": "made up", "source": "this test", "prompts": "proxy",
                        "options": {}, "higher_is_role": name != "b", "seconds": 0.0, "diagnostics": {}}
                 for name in ("a", "b", "flat")}
    return HeadAtlas(delta_pi=delta, per_prompt={"a": a, "b": b, "flat": flat}, detectors=detectors,
                     prompts={"proxy": {"n_prompts": 4}}, extra={"seconds": 0.0})


def test_the_table_has_one_row_per_head_with_each_score_and_its_role_rank():
    atlas = made_atlas()
    df = atlas.to_dataframe()
    assert list(df.columns) == ["layer", "head", "relative_depth", "delta_pi", "delta_pi_rank",
                                "a", "a_rank", "b", "b_rank", "flat", "flat_rank"]
    assert len(df) == 6
    assert df[["layer", "head"]].values.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    assert df["relative_depth"].tolist() == [0.0] * 3 + [1.0] * 3
    assert df["delta_pi_rank"].tolist() == [2, 5, 3, 1, 4, 6]
    assert df["a"].tolist() == pytest.approx([0.1, 0.8, 0.2, 0.7, 0.0, 0.3], abs=1e-6)
    assert df["a_rank"].tolist() == [5, 1, 4, 2, 6, 3]
    assert df["b"].to_numpy() == pytest.approx(atlas.per_prompt["b"][:3].mean(0).flatten().numpy())
    assert df["b_rank"].tolist()[3] == 1 and df["b_rank"].tolist()[0] == 2  # the most negative first
    assert df["flat_rank"].tolist() == [4, 6, 5, 1, 2, 3]
    assert atlas.top_heads("b", 2) == [(1, 0), (0, 0)]


def test_statistics_spearman_interval_and_top_k_overlap():
    atlas = made_atlas()
    stats = atlas.statistics(top_k=2, n_boot=1000).set_index("detector")
    delta = DELTA.flatten()
    for name in ("a", "b", "flat"):
        s = stats.loc[name]
        assert s["spearman"] == pytest.approx(spearman(delta, atlas.score(name).flatten()))
        assert math.isfinite(s["ci_low"]) and s["ci_low"] <= s["ci_high"]
        assert s["interval"] == f"{s['spearman']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"
        assert (s["n_boot"], s["level"]) == (1000, 0.95)
        # the made-up Δπ keeps no per-prompt values: heads and the detector's prompts only, and it says so
        assert s["resampled"] == "heads, detector prompts" and "no per-prompt values" in s["note"]
    assert stats.loc["a", "n_prompts"] == 4 and stats.loc["b", "n_prompts"] == 3
    # identical prompts give every resample the same scores, but the heads drawn still vary ρ
    assert stats.loc["flat", "ci_low"] < stats.loc["flat", "spearman"] < stats.loc["flat", "ci_high"]
    # top 2 by Δπ: L1.H0, L0.H0; a's top 2: L0.H1, L1.H0; b's role end (most negative): L1.H0, L0.H0
    assert (stats.loc["a", "top_k_overlap"], stats.loc["a", "overlap_heads"]) == (1, "L1.H0")
    assert (stats.loc["b", "top_k_overlap"], stats.loc["b", "overlap_heads"]) == (2, "L0.H0 L1.H0")
    assert (stats.loc["flat", "top_k_overlap"], stats.loc["flat", "overlap_heads"]) == (1, "L1.H0")
    roles = atlas.roles(top_k=2)
    assert roles["head"].tolist() == ["L1.H0", "L0.H0"]
    assert roles["roles"].tolist() == ["A, B, FLAT", "B"]


def test_the_interval_is_a_percentile_bootstrap_over_heads_and_the_used_prompts():
    """Replicate b pairs Δπ with the detector's resampled score at the heads drawn for b; the interval is the
    replicates' percentile interval. A plain loop of ``spearman`` over the same draws agrees."""
    from pear_lens.atlas import correlation
    from pear_lens.uncertainty import bootstrap_replicates

    made = made_atlas()
    noisy = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(1))  # prompts that disagree
    noisy[5] = float("nan")  # a prompt the detector skipped
    atlas = HeadAtlas(made.delta_pi, {"b": noisy}, {"b": made.detectors["b"]})
    s = atlas.statistics(top_k=2, n_boot=1000, seed=7, level=0.9).iloc[0]
    assert s["n_prompts"] == 5
    # the statistics' draws in their order (Δπ keeps no per-prompt values, so none for it): heads, then prompts
    rng = np.random.default_rng(7)
    heads = rng.integers(0, 6, size=(1000, 6))
    used = noisy[:5].numpy()  # the NaN prompt is never drawn
    scores = bootstrap_replicates(used, np.zeros(5), np.zeros(5, dtype=np.int64), "absolute", n_boot=1000,
                                  seed=rng).reshape(1000, 6)
    boot = np.array([spearman(DELTA.flatten()[heads[b]], scores[b, heads[b]]) for b in range(1000)])
    low, high = np.quantile(boot[np.isfinite(boot)], [0.05, 0.95])
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((low, high))
    assert low < high
    vectorised = correlation.row_spearman(DELTA.flatten().double().numpy()[heads],
                                          np.take_along_axis(scores, heads, 1))
    np.testing.assert_allclose(vectorised, boot, atol=1e-12)


def test_an_atlas_round_trips_through_its_files(tmp_path):
    atlas = made_atlas()
    run = tmp_path / "run"
    run.mkdir()
    atlas.delta_pi.to_dataframe().to_csv(run / constants.HEAD_SCORES_CSV, index=False)
    (run / constants.DISCOVERY_JSON).write_text(json.dumps({"scores": atlas.delta_pi.metadata()}))
    written = atlas.save(run, top_k=2, n_boot=1000)
    assert {p.name for p in written} == {constants.HEAD_ATLAS_CSV, constants.HEAD_ATLAS_JSON,
                                         constants.HEAD_ATLAS_PROMPTS}
    back = HeadAtlas.load(run)
    assert back.names == atlas.names and back.detectors == atlas.detectors and back.prompts == atlas.prompts
    for name in atlas.names:
        assert torch.equal(back.per_prompt[name].isnan(), atlas.per_prompt[name].isnan())
        assert torch.equal(back.per_prompt[name].nan_to_num(), atlas.per_prompt[name].nan_to_num())
    pd.testing.assert_frame_equal(back.to_dataframe(), atlas.to_dataframe())
    pd.testing.assert_frame_equal(pd.read_csv(run / constants.HEAD_ATLAS_CSV), atlas.to_dataframe(),
                                  check_dtype=False)
    meta = json.loads((run / constants.HEAD_ATLAS_JSON).read_text())
    assert [s["detector"] for s in meta["statistics"]] == ["a", "b", "flat"]
    (run / constants.HEAD_ATLAS_JSON).write_text("{")
    with pytest.raises(PearLensError, match="corrupt head atlas"):
        HeadAtlas.load(run)


def test_a_bad_score_tensor_is_refused():
    atlas = made_atlas()
    with pytest.raises(PearLensError, match=r"must be \[n_prompts, 2, 3\]"):
        HeadAtlas(atlas.delta_pi, {"a": torch.zeros(4, 3, 2)}, {"a": atlas.detectors["a"]})
    with pytest.raises(PearLensError, match="used no prompt"):
        HeadAtlas(atlas.delta_pi, {"a": torch.full((2, 2, 3), float("nan"))}, {"a": atlas.detectors["a"]})
    bad = torch.zeros(2, 2, 3)
    bad[0, 1, 1] = float("inf")
    with pytest.raises(PearLensError, match="non-finite"):
        HeadAtlas(atlas.delta_pi, {"a": bad}, {"a": atlas.detectors["a"]})


def test_figures_have_one_panel_per_score():
    atlas = made_atlas()
    heat = atlas.heatmaps(top_k=2)
    assert isinstance(heat, go.Figure)
    assert sum(isinstance(t, go.Heatmap) for t in heat.data) == 4  # Δπ, a, b, flat
    assert [a.text for a in heat.layout.annotations][:4] == ["Δπ (suppression > 0)", "A", "B", "FLAT"]
    scatter = atlas.scatter(top_k=2, n_boot=1000)
    assert isinstance(scatter, go.Figure)
    assert len({t.xaxis for t in scatter.data}) == 3 and len(scatter.layout.annotations) == 3
    assert scatter.layout.annotations[0].text.startswith("A: ρ = ")


# --------------------------------------------------------------------------- 6. the detector registry


@dataclass(frozen=True)
class ToyOptions:
    """Options of the toy detector."""

    some_option: float = 1.0
    """the toy score of a head is some_option × its flat index"""


@pytest.fixture
def toy_detector():
    """A detector registered the way a new one would be, removed again after the test."""

    @register_detector("toy", "toy", "some_option × flat head index", "this test", prompts=PromptSet.PROXY,
                       options=ToyOptions)
    def toy(model, rec, options: ToyOptions):
        index = torch.arange(model.n_layers * model.n_heads, dtype=torch.float32).view(model.n_layers, model.n_heads)
        return options.some_option * index.expand(rec.batch_size, -1, -1)

    try:
        yield ToyOptions
    finally:
        DETECTORS.pop("toy", None)


def test_a_detector_name_is_registered_once(toy_detector):
    with pytest.raises(PearLensError, match="already registered"):
        register_detector("sink", "s", "again", "this test", prompts=PromptSet.PROXY)(lambda m, r, o: None)
    with pytest.raises(PearLensError, match="already registered"):
        register_detector("toy", "t", "again", "this test", prompts=PromptSet.PROXY)(lambda m, r, o: None)
    assert DETECTORS["toy"].options is ToyOptions


def test_a_registered_detector_runs_through_head_atlas(toy_detector):
    model = tiny("llama")
    task = ProxyTask(settings=((2, 4), (3, 5)))
    atlas = head_atlas(model, zero_scores(model, task), ["toy", "sink"], {"toy": {"some_option": 2.5}})
    assert atlas.names == ["toy", "sink"]
    assert atlas.per_prompt["toy"].shape == (5, 3, 4)  # one row per prompt of both settings
    assert atlas.score("toy").flatten().tolist() == pytest.approx([2.5 * i for i in range(12)])
    assert atlas.detectors["toy"]["options"] == {"some_option": 2.5}
    assert atlas.top_heads("toy", 1) == [(2, 3)]
    with pytest.raises(PearLensError, match="unknown head detector 'nonsense'"):
        head_atlas(model, zero_scores(model, task), ["nonsense"])
    with pytest.raises(PearLensError, match="options were given for detector 'toy'"):
        head_atlas(model, zero_scores(model, task), ["sink"], {"toy": {"some_option": 2.0}})


def test_a_registered_detectors_option_reaches_the_cli(toy_detector, capsys):
    with pytest.raises(SystemExit):
        main(["atlas", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps long help lines
    assert "--toy.some-option" in text and "toy options" in text
    assert "the toy score of a head is some_option × its flat index" in text
    for option in ("--retrieval.all-prompts", "--copy-suppression.include-bos", "--previous-token.exclude-bos",
                   "--needle.n-prompts"):
        assert option in text


def test_head_atlas_refuses_scores_of_other_weights():
    model = tiny("llama")
    task = ProxyTask(settings=((2, 4),))
    other = zero_scores(model, task)
    other.fingerprint = "blake2b:" + "0" * 32
    with pytest.raises(PearLensError, match="computed on other weights"):
        head_atlas(model, other, ["sink"])
    with pytest.raises(PearLensError, match=r"cover 2 × 4 heads but tiny-llama has 3 × 4"):
        head_atlas(model, zero_scores(model, task, torch.zeros(2, 4)), ["sink"])


# --------------------------------------------------------------------------- 7. the command


@pytest.fixture(scope="module")
def discovered(tmp_path_factory) -> Path:
    """A tiny-llama discovery run; tests work on copies of it."""
    return discover(tmp_path_factory.mktemp("atlas") / "run")


@pytest.fixture
def run_dir(discovered, tmp_path) -> Path:
    return Path(shutil.copytree(discovered, tmp_path / "run"))


def test_atlas_adds_its_files_to_the_run_folder(run_dir, tmp_path, capsys):
    # a random tiny model copies no needle: without --retrieval.all-prompts there is no retrieval score
    before = snapshot(tmp_path)
    refused(capsys, ["atlas", run_dir, *ATLAS], says="reproduced the needle in none of 2 prompts")
    assert snapshot(tmp_path) == before

    assert main(["atlas", str(run_dir), *ATLAS, "--retrieval.all-prompts"]) == 0
    assert "scored 12 heads of tiny-llama with 6 detectors" in capsys.readouterr().out
    for name in (constants.HEAD_ATLAS_CSV, constants.HEAD_ATLAS_JSON, constants.HEAD_ATLAS_PROMPTS,
                 constants.ATLAS_HEATMAPS_HTML, constants.ATLAS_SCATTER_HTML):
        assert (run_dir / name).is_file(), name
    assert set(before) <= set(snapshot(tmp_path))  # the discovery run's own files are all still there
    df = pd.read_csv(run_dir / constants.HEAD_ATLAS_CSV)
    assert len(df) == 12 and sorted(zip(df["layer"], df["head"])) == [(l, h) for l in range(3) for h in range(4)]
    names = ["previous_token", "duplicate_token", "induction", "sink", "copy_suppression", "retrieval"]
    assert list(df.columns)[5:] == [c for n in names for c in (n, f"{n}_rank")]
    scores = df[["relative_depth", "delta_pi", "delta_pi_rank", *names]]
    assert np.isfinite(scores.to_numpy(dtype=float)).all()
    for n in names:  # a score the same for every head (as a random model's may be) ranks none: issue 37, item 3
        constant = df[n].nunique() == 1
        assert (df[f"{n}_rank"].isna().all() if constant else df[f"{n}_rank"].notna().all()), n
    meta = json.loads((run_dir / constants.HEAD_ATLAS_JSON).read_text())
    assert meta["fingerprint"] == HeadScores.load(run_dir).fingerprint and list(meta["detectors"]) == names
    assert meta["detectors"]["retrieval"]["options"] == {"all_prompts": True}
    assert meta["prompts"]["needle"]["n_prompts"] == 2 and meta["prompts"]["needle"]["haystack_tokens"] == 16
    back = HeadAtlas.load(run_dir)
    pd.testing.assert_frame_equal(back.to_dataframe(), df, check_dtype=False, atol=1e-6)

    # a second run without --overwrite is refused and changes nothing
    before = snapshot(tmp_path)
    refused(capsys, ["atlas", run_dir, *ATLAS, "--retrieval.all-prompts"], says="--overwrite")
    assert snapshot(tmp_path) == before
    assert main(["atlas", str(run_dir), *ATLAS, "--detectors", "sink", "--overwrite"]) == 0
    assert list(json.loads((run_dir / constants.HEAD_ATLAS_JSON).read_text())["detectors"]) == ["sink"]


def _edit_fingerprint(run: Path) -> None:
    """The run as if scored on other weights: every record of its fingerprint says so."""
    path = run / constants.DISCOVERY_JSON
    meta = json.loads(path.read_text())
    meta["scores"]["fingerprint"] = meta["model"]["fingerprint"] = "blake2b:" + "0" * 32
    path.write_text(json.dumps(meta, indent=2))
    saved = run / constants.RUN_SCORES_DIR / "scores.json"
    if saved.exists():
        meta = json.loads(saved.read_text())
        meta["fingerprint"] = "blake2b:" + "0" * 32
        saved.write_text(json.dumps(meta, indent=2))
    listed = run / constants.MANIFEST_JSON
    if listed.exists():  # the manifest too, and the hash it records of discovery.json
        record = json.loads(listed.read_text())
        record["key"]["fingerprint"] = "blake2b:" + "0" * 32
        record["value"][constants.DISCOVERY_JSON] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                     "bytes": path.stat().st_size}
        listed.write_text(json.dumps(record))


@pytest.mark.parametrize("case", ["other model", "edited fingerprint", "unknown detector", "option of another detector",
                                  "longer than the context", "not a run folder", "too few replicates"])
def test_bad_input_is_one_line_and_writes_nothing(run_dir, tmp_path, capsys, case):
    args, says = {
        "other model": (["--model", "tiny-gpt2"], "was scored on other weights"),
        "edited fingerprint": ([], "was scored on other weights"),
        "unknown detector": (["--detectors", "nonsense"], "unknown head detector 'nonsense'"),
        "option of another detector": (["--detectors", "sink", "--retrieval.all-prompts"],
                                       "--retrieval.all-prompts is an option of 'retrieval'"),
        "longer than the context": (["--needle.haystack-tokens", "100000"], "do not fit tiny-llama's context of 256"),
        "not a run folder": ([], "is missing"),
        "too few replicates": (["--n-boot", "999"], "--n-boot must be at least 1000"),
    }[case]
    if case == "edited fingerprint":
        _edit_fingerprint(run_dir)
    target = tmp_path / "elsewhere" if case == "not a run folder" else run_dir
    target.mkdir(exist_ok=True)
    before = snapshot(tmp_path)
    refused(capsys, ["atlas", target, *ATLAS, *args], says=says)
    assert snapshot(tmp_path) == before
