"""Teacher-forced likelihood endpoints, context-aware decoding and pruning, against plain formulas.

The reference is a naive loop: one plain Hugging Face forward pass per (item, candidate) on the unpadded
prompt + candidate, summing the candidate tokens' log-probabilities. The tiny models run in float64 with
weights drawn large (std 0.3), so that positions, padding and the cache change the scores by far more than
the tolerance if they are handled wrongly (checked below: shifting GPT-2's positions by one is caught).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from pear_lens.evaluation import conditions as cond_mod
from pear_lens.evaluation.decoding import CAD_ALPHA, ContextAwareLogits, ContextFree, NoEmptyAnswer, cad_logits
from pear_lens.evaluation.generate import greedy_generate
from pear_lens.evaluation.likelihood import continuation_logprobs, item_endpoints
from pear_lens.evaluation.runner import evaluate_likelihood
from pear_lens.evaluation.tasks import TaskSettings
from pear_lens.evaluation.tasks.candidates import Candidates, Competitor, answer_candidates, continuation, \
    without_context
from pear_lens.evaluation.tasks.facts import CounterfactualItem
from pear_lens.evaluation.tasks.items import PromptText
from pear_lens.evaluation.tasks.kv import KVItem
from pear_lens.evaluation.tasks.prompts import PromptStyle, render
from pear_lens.models.tiny import build_tiny
from tests.conftest import tiny

TOL = 1e-5


def _sharp(family: str):
    model, tok = build_tiny(family)
    model = model.double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    return model.eval(), tok


def _data(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(4, 500, (n,), generator=g).tolist() for n in (7, 30, 12, 25, 3)]
    conts = [[torch.randint(4, 500, (k,), generator=g).tolist() for k in ks]
             for ks in ([1, 3], [4], [2, 2, 5], [1], [3, 1, 1, 2])]
    return prompts, conts


@torch.no_grad()
def _naive(model, prompt, cont, free=None, alpha=0.0, shift=0):
    def logits(p):
        pos = torch.arange(len(p) + len(cont))[None] + shift
        return model(torch.tensor([p + cont]), position_ids=pos).logits[0, len(p) - 1:len(p) - 1 + len(cont)]

    lg = logits(prompt) if free is None else cad_logits(logits(prompt), logits(free), alpha)
    return float(lg.log_softmax(-1).gather(-1, torch.tensor(cont)[:, None]).sum())


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
def test_scores_equal_a_naive_per_item_loop_whatever_the_batch(family):
    model, _ = _sharp(family)
    prompts, conts = _data()
    ref = [[_naive(model, p, c) for c in cs] for p, cs in zip(prompts, conts)]
    flat = [v for r in ref for v in r]
    assert np.ptp(flat) > 1.0  # the candidates' scores differ, so agreement is not a trivial match
    for bs in (1, 2, 5):
        got = continuation_logprobs(model, prompts, conts, batch_size=bs, pad_token_id=3, progress=False)
        assert [len(r) for r in got] == [len(r) for r in ref]
        np.testing.assert_allclose([v for r in got for v in r], flat, atol=TOL, rtol=0)


def test_the_reference_would_catch_wrong_positions():
    # GPT-2's positions are absolute (rotary ones are blind to a shift of every position), so padding counted
    # as positions would move its scores
    model, _ = _sharp("gpt2")
    prompts, conts = _data()
    right = _naive(model, prompts[1], conts[1][0])
    assert abs(_naive(model, prompts[1], conts[1][0], shift=1) - right) > 100 * TOL


def test_the_shared_context_pass_equals_one_pass_per_candidate():
    model, _ = _sharp("llama")
    prompts, conts = _data()
    shared = continuation_logprobs(model, prompts, conts, batch_size=3, pad_token_id=3, progress=False)
    # the same candidates, each as an item of its own: the prompt is encoded again for every candidate
    sep_prompts = [p for p, cs in zip(prompts, conts) for _ in cs]
    sep_conts = [[c] for cs in conts for c in cs]
    separate = continuation_logprobs(model, sep_prompts, sep_conts, batch_size=3, pad_token_id=3, progress=False)
    np.testing.assert_allclose([v for r in shared for v in r], [r[0] for r in separate], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_cad_scores_equal_the_formula(family):
    model, _ = _sharp(family)
    prompts, conts = _data()
    free = [p[-2:] for p in prompts]
    ref = [[_naive(model, p, c, f, CAD_ALPHA) for c in cs] for p, cs, f in zip(prompts, conts, free)]
    got = continuation_logprobs(model, prompts, conts, batch_size=2, context_free=free, alpha=CAD_ALPHA,
                                pad_token_id=3, progress=False)
    np.testing.assert_allclose([v for r in got for v in r], [v for r in ref for v in r], atol=TOL, rtol=0)
    plain = continuation_logprobs(model, prompts, conts, batch_size=2, pad_token_id=3, progress=False)
    assert max(abs(a - b) for r, s in zip(got, plain) for a, b in zip(r, s)) > 0.1  # CAD changed something


@torch.no_grad()
def test_cad_logits_processor_equals_the_formula_at_every_step():
    model, _ = _sharp("llama")
    prompts, _ = _data()
    rows = [prompts[0], prompts[2], prompts[4]]
    free = [p[-2:] for p in rows]
    width = max(map(len, rows))
    ids = torch.full((3, width), 3, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(rows):
        ids[r, width - len(p):], mask[r, width - len(p):] = torch.tensor(p), 1
    proc = ContextAwareLogits(model, ContextFree(free, alpha=1.0), width, pad_token_id=3)
    generated: list[list[int]] = [[], [], []]
    for step in range(3):
        full = torch.cat([ids, torch.tensor(generated, dtype=torch.long).reshape(3, step)], dim=1)
        pos = (torch.cat([mask, torch.ones(3, step, dtype=torch.long)], 1).cumsum(-1) - 1).clamp(min=0)
        scores = model(full, attention_mask=torch.cat([mask, torch.ones(3, step, dtype=torch.long)], 1),
                       position_ids=pos).logits[:, -1]
        out = proc(full, scores)
        for r in range(3):
            with_c = model(torch.tensor([rows[r] + generated[r]])).logits[0, -1]
            without = model(torch.tensor([free[r] + generated[r]])).logits[0, -1]
            torch.testing.assert_close(out[r], 2.0 * with_c - without, atol=1e-8, rtol=1e-8)
        for r in range(3):
            generated[r].append(int(out[r].argmax()))


def test_no_empty_answer_forbids_eos_until_the_answer_has_text():
    has_text = torch.tensor([False, False, True, True, True])  # ids 0-1 are blank, 2-4 hold text
    proc = NoEmptyAnswer(prompt_width=2, eos_ids=[4], has_text=has_text)
    ids = torch.tensor([[9, 9, 1], [9, 9, 3]]).clamp(max=4)  # row 0 produced only a blank, row 1 some text
    scores = torch.zeros(2, 5)
    scores[:, 4] = 10.0
    out = proc(ids, scores)
    assert out[0, 4] == float("-inf") and out[1, 4] == 10.0
    assert proc(ids[:, :2], scores)[:, 4].eq(float("-inf")).all()  # nothing generated yet: both forbidden


def test_greedy_no_empty_arm_never_answers_empty_where_the_model_would():
    model = tiny("llama")
    hf, tok = model.fresh_hf(), model.tokenizer
    bump = torch.zeros(hf.config.vocab_size)
    bump[2] = 100.0  # EOS (id 2) dominates every step: the model answers nothing
    hf.lm_head.register_forward_hook(lambda module, args, out: out + bump)
    prompts = [[1, 5, 6, 7], [1, 8, 9]]
    kw = dict(max_new_tokens=4, stop_at_newline=False, progress=False)
    assert greedy_generate(hf, tok, prompts, **kw) == ["", ""]
    assert all(greedy_generate(hf, tok, prompts, no_empty=True, **kw))


def test_pruning_equals_zeroing_the_heads_output_projection_columns():
    model = tiny("llama")
    heads = [(0, 1), (2, 3)]
    pruned = cond_mod.pruned(model, heads, "pruned").build()
    manual = model.fresh_hf()
    d = manual.config.head_dim if getattr(manual.config, "head_dim", None) else \
        manual.config.hidden_size // manual.config.num_attention_heads
    with torch.no_grad():
        for l, h in heads:
            manual.model.layers[l].self_attn.o_proj.weight[:, h * d:(h + 1) * d] = 0
    tokens = torch.tensor([[1, 17, 99, 4, 250, 31]])
    torch.testing.assert_close(pruned(tokens).logits, manual(tokens).logits, atol=1e-6, rtol=0)
    assert not torch.allclose(pruned(tokens).logits, model.fresh_hf()(tokens).logits, atol=1e-4)


def test_damped_and_cad_conditions_record_what_they_are():
    model = tiny("llama")
    d = cond_mod.damped(model, [(0, 0), (1, 2)], 0.8, "damped seed 3", seed=3).describe()
    assert d["kind"] == "damped" and d["tau"] == 0.8 and d["heads"] == [[0, 0, 0.8], [1, 2, 0.8]]
    c = cond_mod.context_aware(model)
    assert c.describe()["cad_alpha"] == CAD_ALPHA and c.describe()["n_heads"] == 0


def test_every_intervention_is_built_through_one_registry_with_one_signature():
    from pear_lens.errors import PearLensError

    model = tiny("llama")
    heads = [(1, 2), (0, 1)]
    built = {
        "prune": cond_mod.intervention("prune", model, heads),
        "damp": cond_mod.intervention("damp", model, heads, tau=0.6),
        "scale": cond_mod.intervention("scale", model, {(0, 1): 0.5}),
        "all-heads": cond_mod.intervention("all-heads", model, tau=0.9),
        "cad": cond_mod.intervention("cad", model, alpha=1.0),
    }
    assert set(built) == set(cond_mod.INTERVENTIONS)
    assert built["prune"].coefficients == cond_mod.pruned(model, heads, "x").coefficients == {(0, 1): 0.0, (1, 2): 0.0}
    assert built["damp"].kind is cond_mod.ConditionKind.DAMPED and set(built["damp"].coefficients.values()) == {0.6}
    assert len(built["all-heads"].coefficients) == model.n_layers * model.n_heads
    assert built["cad"].cad_alpha == 1.0 and not built["cad"].coefficients
    for bad in (lambda: cond_mod.intervention("prnue", model, heads), lambda: cond_mod.intervention("cad", model, heads),
                lambda: cond_mod.intervention("prune", model, []), lambda: cond_mod.intervention("scale", model, heads)):
        with pytest.raises(PearLensError):
            bad()

    @cond_mod.register_intervention("test-double")
    def double(model, heads, *, label=None):
        return cond_mod.folded(model, {h: 2.0 for h in heads}, label or "doubled")

    try:
        assert cond_mod.intervention("test-double", model, heads).coefficients == {(1, 2): 2.0, (0, 1): 2.0}
        with pytest.raises(PearLensError, match="registered already"):
            cond_mod.register_intervention("test-double")(double)
    finally:
        del cond_mod.INTERVENTIONS["test-double"]


def test_candidates_per_task():
    kv = KVItem("k", (("001", "111"), ("002", "222"), ("003", "333")), "002")
    c = answer_candidates(kv)
    assert c == Candidates("222", ("111", "333"), Competitor.DISTRACTORS)
    cf = CounterfactualItem("c", "Capital of France?", ("Lyon",), ("Paris",), ("The capital of France is Lyon.",), 0)
    assert answer_candidates(cf) == Candidates("Lyon", ("Paris",), Competitor.MEMORISED)
    assert "Lyon" not in without_context(cf).body and "Capital of France?" in without_context(cf).body
    free = without_context(kv)
    assert '"002"' in free.body and "111" not in free.body and free.answer_prefix == kv.prompt().answer_prefix


def test_continuation_follows_the_rendered_prompt():
    text = PromptText("Q?\nAnswer:", answer_prefix="")
    assert continuation("Paris", text, PromptStyle.PLAIN) == " Paris"
    assert continuation("Paris", text, PromptStyle.PLAIN_PREFIX) == " Paris"  # no prefix to follow
    quoted = PromptText("Key\nvalue:", answer_prefix='"')
    assert render(quoted, PromptStyle.PLAIN_PREFIX, None).endswith('"')
    assert continuation("123", quoted, PromptStyle.PLAIN_PREFIX) == "123"


def test_item_endpoints():
    e = item_endpoints(Candidates("a", ("b", "c"), Competitor.DISTRACTORS), [-1.0, -2.0, -3.0], 2)
    assert e["contrast"] == pytest.approx(-1.0 - np.log(np.exp(-2.0) + np.exp(-3.0)))
    assert np.isnan(item_endpoints(Candidates("a", (), Competitor.NONE), [-1.0], 1)["contrast"])


@dataclass(frozen=True)
class _WordItem:
    item_id: str
    body: str
    gold: str
    alternatives: tuple[str, ...]
    gold_position: int | None = 0
    n_context: int = 1

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.gold,)

    def prompt(self) -> PromptText:
        return PromptText(self.body)

    def to_dict(self) -> dict[str, Any]:
        return {"item_id": self.item_id}


def _word_items(n: int = 12) -> list[_WordItem]:
    rng = np.random.default_rng(0)
    w = lambda: f"w{rng.integers(4, 500)}"  # noqa: E731
    return [_WordItem(f"i{i}", " ".join(w() for _ in range(8)), f"{w()} {w()}", (w(), f"{w()} {w()}"))
            for i in range(n)]


def test_evaluate_likelihood_pairs_conditions_and_resumes_from_its_cache(tmp_path):
    model = tiny("llama")
    items = _word_items()
    conds = [cond_mod.baseline(model), cond_mod.pruned(model, [(0, 0), (1, 1), (2, 2)], "pruned")]
    settings = TaskSettings(n_context=1, max_new_tokens=4)
    kw = dict(n_ctx=256, batch_size=5, progress=False, clusters=[f"c{i // 2}" for i in range(len(items))])
    res = evaluate_likelihood("tiny-llama", "words", items, conds, model.tokenizer, settings, cache_dir=tmp_path, **kw)
    frame = res.items.set_index(["condition", "item_id"])
    row = res.summary.set_index(["condition", "endpoint"]).loc[("pruned", "logp_gold")]
    diff = frame.loc["pruned", "logp_gold"] - frame.loc["baseline", "logp_gold"]
    assert row["delta_vs_baseline"] == pytest.approx(diff.mean())
    assert row["ci_low"] <= row["delta_vs_baseline"] <= row["ci_high"] and row["n_clusters"] == 6
    assert np.isnan(res.summary.set_index(["condition", "endpoint"]).loc[("baseline", "contrast"), "p_vs_baseline"])

    def refuse():
        raise AssertionError("a cached condition was computed again")

    again = [cond_mod.Condition(c.label, c.kind, refuse, c.coefficients, c.metadata) for c in conds]
    res2 = evaluate_likelihood("tiny-llama", "words", items, again, model.tokenizer, settings, cache_dir=tmp_path, **kw)
    assert res2.items.equals(res.items) and res2.summary.equals(res.summary)


def _one_token_items(n: int = 10) -> list[_WordItem]:
    rng = np.random.default_rng(3)
    w = lambda: f"w{rng.integers(4, 500)}"  # noqa: E731
    return [_WordItem(f"i{i}", " ".join(w() for _ in range(6 + i % 3)), w(), (w(),)) for i in range(n)]


def test_the_task_scan_of_a_head_equals_pruning_that_head_alone():
    """Two methods against each other: the head scan's effect on the first answer token's log-probability and
    the likelihood endpoint of the pruned condition (items of different lengths, answers of one token)."""
    from pear_lens.evaluation.task_scan import scan_items
    from pear_lens.evaluation.likelihood import score_candidates
    from pear_lens.evaluation.runner import encode_items

    model = tiny("llama")
    items = _one_token_items()
    scores, scan = scan_items(model, items, "plain", name="words", metric="logprob", progress=False)
    assert scan.item_ids == tuple(it.item_id for it in items)
    prompts = encode_items(items, PromptStyle.PLAIN, model.tokenizer, n_ctx=256, max_new_tokens=1)
    base = [r["logp_gold"] for r in score_candidates(model.fresh_hf(), model.tokenizer, items, prompts,
                                                     PromptStyle.PLAIN, progress=False)]
    for head in [(0, 1), (1, 3), (2, 0)]:
        hf = cond_mod.pruned(model, [head], "p").build()
        pruned = [r["logp_gold"] for r in score_candidates(hf, model.tokenizer, items, prompts, PromptStyle.PLAIN,
                                                           progress=False)]
        expected = float(np.mean(np.subtract(pruned, base)))
        assert abs(expected) > 1e-4  # pruning the head does something, so agreement is not 0 = 0
        assert float(scores.scores[head]) == pytest.approx(expected, abs=2e-5)


def test_head_score_correlation_is_an_interval_around_rho():
    from pear_lens.atlas.correlation import head_score_correlation
    from pear_lens.evaluation.task_scan import scan_items

    model = tiny("llama")
    items = _word_items(16)
    diff, _ = scan_items(model, items, "plain", name="diff", progress=False)
    lp, _ = scan_items(model, items, "plain", name="lp", metric="logprob", progress=False)
    # the two maps' prompts are resampled independently (as for the proxy task's and a RAG task's prompts), so
    # even a map against itself has an interval below 1: the noise of both maps' means is in it
    assert len(lp.extra["items"]["kept"]) == 16 and lp.extra["items"]["dropped"] == []  # logprob keeps every item
    kept, dropped = diff.extra["items"]["kept"], diff.extra["items"]["dropped"]
    assert sorted(kept + dropped) == sorted(it.item_id for it in items) and not set(kept) & set(dropped)
    same = head_score_correlation(diff, diff, n_boot=1000)
    assert same.rho == pytest.approx(1.0) and same.low < same.high <= 1.0
    other = head_score_correlation(diff, lp, n_boot=1000)
    assert other.low <= other.rho <= other.high and other.high - other.low > 0.05


def _unpaired(a, b):
    from pear_lens.atlas.correlation import head_score_correlation

    return head_score_correlation(a, b, n_boot=500)


def test_paired_correlation_draws_the_shared_prompts_once_for_both_maps():
    """Two methods on one task's items: resampled together, a map against itself is exactly [1, 1] (independent
    resampling puts both maps' prompt noise in the interval); maps of other prompts cannot be paired."""
    from pear_lens.atlas.correlation import Resampled, head_score_correlation
    from pear_lens.errors import PearLensError
    from pear_lens.evaluation.task_scan import scan_items

    model = tiny("llama")
    items = _word_items(16)
    exact, _ = scan_items(model, items, "plain", name="kv", progress=False)
    same = head_score_correlation(exact, exact, n_boot=500, paired=True)
    assert (same.rho, same.low, same.high) == pytest.approx((1.0, 1.0, 1.0))
    assert same.resampled is Resampled.HEADS_AND_SHARED_PROMPTS
    apart = head_score_correlation(exact, exact, n_boot=500)
    assert apart.low < 0.99 and apart.resampled is Resampled.HEADS_AND_PROMPTS
    approx, _ = scan_items(model, items, "plain", name="kv", method="attribution", max_batch=3, progress=False)
    assert torch.allclose(exact.clean_per_prompt, approx.clean_per_prompt)  # batches differ, prompts line up
    both = head_score_correlation(exact, approx, n_boot=500, paired=True)
    assert 0.5 < both.rho < 1.0 and both.low <= both.rho <= both.high  # two methods, close but not equal
    assert both.low > _unpaired(exact, approx).low  # pairing takes the shared prompts' noise out
    fewer, _ = scan_items(model, items[:8], "plain", name="kv", method="attribution", progress=False)
    with pytest.raises(PearLensError, match="did not score the same prompts"):
        head_score_correlation(exact, fewer, n_boot=100, paired=True)
    others, _ = scan_items(model, _word_items(32)[16:], "plain", name="kv", method="attribution", progress=False)
    assert others.per_prompt.shape == exact.per_prompt.shape  # as many prompts, other ones: refused as well
    with pytest.raises(PearLensError, match="did not score the same prompts"):
        head_score_correlation(exact, others, n_boot=100, paired=True)


def test_the_attribution_scan_estimates_the_exact_zero_ablation_on_the_same_items():
    """``method="attribution"`` is the linear estimate of the exact scan: same items, metric, ablation and
    positions, scores close where the ablation is small (a head's first-order effect), its per-prompt values kept;
    an unknown method is refused in one line."""
    from pear_lens.errors import PearLensError
    from pear_lens.evaluation.task_scan import SCAN_OPTIONS, scan_items

    model = tiny("llama")
    items = _word_items(12)
    exact, e_scan = scan_items(model, items, "plain", name="kv", progress=False)
    approx, a_scan = scan_items(model, items, "plain", name="kv", method="attribution", max_batch=3, progress=False)
    assert e_scan.item_ids == a_scan.item_ids and approx.method == "attribution" and exact.method == "activation"
    assert approx.options["ablation"] == SCAN_OPTIONS["ablation"].value == exact.options["ablation"]
    assert approx.per_prompt.shape == exact.per_prompt.shape
    rho = float(np.corrcoef(exact.scores.flatten(), approx.scores.flatten())[0, 1])
    assert rho > 0.9, rho  # a random tiny model's heads are small perturbations: the linear estimate follows them
    with pytest.raises(PearLensError, match="one of activation, attribution"):
        scan_items(model, items, "plain", name="kv", method="path", progress=False)


def test_a_scan_item_whose_competitors_share_its_first_token_is_scored_where_they_part():
    """Where no competitor's first token differs (numbers after a space on Gemma's and Qwen's tokenizers), the
    shared tokens are teacher-forced and the item is scored at the first token the gold answer and its first
    parting competitor do not share; an item with a differing first token is scored there as before; an item whose
    competitors never part from the gold answer at a token both have is dropped."""
    from pear_lens.evaluation.task_scan import rag_scan_task, scan_items
    from pear_lens.evaluation.tasks.prompts import encode

    model, tok = tiny("llama"), tiny("llama").tokenizer
    late = _WordItem("late", "w5 w6 w7 w8 w9 w10 w11 w12", "w7 w9", ("w7", "w7 w11"))
    first = _WordItem("first", "w5 w6 w7 w8 w9 w10 w11 w12", "w7 w9", ("w30 w9",))
    never = _WordItem("never", "w5 w6 w7 w8 w9 w10 w11 w12", "w7 w9", ("w7", "w7 w9"))
    scan = rag_scan_task([late, first, never], "plain", tok, name="parts")
    assert scan.item_ids == ("late", "first") and scan.dropped == ("never",) and scan.after_shared_prefix == ("late",)
    gold, alt = (tok(f" {t}", add_special_tokens=False)["input_ids"] for t in ("w7 w9", "w7 w11"))
    c = next(i for i, (g, a) in enumerate(zip(gold, alt)) if g != a)
    assert c >= 1  # the two answers share their first token(s): the old rule dropped this item
    prompt = encode(late.prompt(), PromptStyle.PLAIN, tok)
    assert list(scan.task.prompts[0]) == [*prompt, *gold[:c]]
    assert int(scan.task.answers[0]) == gold[c] and int(scan.task.foils[0]) == alt[c]
    assert int(scan.task.answers[1]) == tok(" w7", add_special_tokens=False)["input_ids"][0]  # scored at token one
    scores, _ = scan_items(model, [late, first, never], "plain", name="parts", progress=False)
    assert scores.extra["items"]["after_shared_prefix"] == ["late"]
    with torch.no_grad():
        logits = model.fresh_hf()(torch.tensor([[*prompt, *gold[:c]]])).logits[0, -1]
    assert float(scores.clean_per_prompt[0]) == pytest.approx(float(logits[gold[c]] - logits[alt[c]]), abs=1e-4)
