"""A task of your own through the fast scans: every exact method with every built-in metric against a naive
per-head loop written here (plain hooks, one forward per head), with mean ablation and with corrupted prompts;
attribution against a naive gradient-times-difference; a user metric against the built-in it copies."""
from __future__ import annotations

import json

import pytest
import torch

from pear_lens.errors import PearLensError
from pear_lens.mediation import score_heads
from pear_lens.prompt_task import MalformedTask, PromptTask
from pear_lens.proxy_task import ProxyTask

from .conftest import tiny

N_PROMPTS, LENGTH = 6, 7


def random_task(model, seed=0, corrupted=True, foils=True, n=N_PROMPTS, length=LENGTH):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, model.d_vocab, (n, length), generator=gen)
    answers = torch.randint(4, model.d_vocab, (n,), generator=gen)
    foil = torch.randint(4, model.d_vocab, (n,), generator=gen) if foils else None
    corrupt = torch.randint(4, model.d_vocab, (n, length), generator=gen) if corrupted else None
    return PromptTask(ids, answers, foils=foil, corrupted=corrupt)


# ------------------------------------------------------------------ the naive reference, written independently


def naive_metric(name, logits, answers, foils):
    logits = logits.float()
    pick = logits.gather(-1, answers[:, None])[:, 0]
    if name == "logit_minus_mean":
        return pick - logits.mean(-1)
    if name == "prob":
        return logits.softmax(-1).gather(-1, answers[:, None])[:, 0]
    if name == "logprob":
        return logits.log_softmax(-1).gather(-1, answers[:, None])[:, 0]
    if name == "logit_diff":
        return pick - logits.gather(-1, foils[:, None])[:, 0]
    raise AssertionError(name)


def run_keep(bridge, tokens, names):
    kept = {}

    def keep(name):
        def fn(t, hook):
            kept[name] = t.detach().clone()
        return fn
    logits = bridge.run_with_hooks(tokens, fwd_hooks=[(n, keep(n)) for n in names])
    return logits, kept


@torch.no_grad()
def naive_scores(model, task, metric, *, method, ablation):
    """Per prompt: π̃ of every head and the clean π; one full hooked forward per head, nothing shared."""
    bridge, L, H = model.bridge, model.n_layers, model.n_heads
    tokens = torch.tensor([list(p) for p in task.prompts])
    answers, foils = torch.tensor(task.answers), torch.tensor(task.foils) if task.foils is not None else None
    end = tokens.shape[1] - 1
    z = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    qkv = [f"blocks.{l}.attn.hook_{x}" for l in range(L) for x in "qkv"]
    logits, clean_acts = run_keep(bridge, tokens, z + qkv)
    clean = naive_metric(metric, logits[:, end], answers, foils)
    if ablation == "corrupted":
        _, source = run_keep(bridge, torch.tensor([list(p) for p in task.corrupted]), z)
    patched = torch.empty(tokens.shape[0], L, H)
    for l in range(L):
        for h in range(H):
            where = end if method in ("path", "activation_end") else slice(None)
            value = (clean_acts[z[l]][:, where, h].mean(0, keepdim=True).expand_as(clean_acts[z[l]][:, where, h])
                     if ablation == "mean" else source[z[l]][:, where, h])

            def patch(t, hook, where=where, h=h, value=value):
                t = t.clone()
                t[:, where, h] = value
                return t
            hooks = [(z[l], patch)]
            if method == "path":  # attention frozen: every query, key and value keeps its clean value
                hooks += [(n, lambda t, hook, n=n: clean_acts[n]) for n in qkv]
            out = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
            patched[:, l, h] = naive_metric(metric, out[:, end], answers, foils)
    return patched, clean


def naive_attribution(model, task, metric, ablation):
    bridge, L, H = model.bridge, model.n_layers, model.n_heads
    tokens = torch.tensor([list(p) for p in task.prompts])
    answers, foils = torch.tensor(task.answers), torch.tensor(task.foils)
    end = tokens.shape[1] - 1
    z = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    leaves, clean_z = {}, {}

    def leaf(name):  # z + a zero leaf: the leaf's gradient is dπ/dz through every later layer
        def fn(t, hook):
            clean_z[name] = t.detach().clone()
            leaves[name] = torch.zeros_like(t, requires_grad=True)
            return t + leaves[name]
        return fn
    with torch.enable_grad():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=[(n, leaf(n)) for n in z])
        naive_metric(metric, logits[:, end], answers, foils).mean().backward()
    if ablation == "corrupted":
        with torch.no_grad():
            _, source = run_keep(bridge, torch.tensor([list(p) for p in task.corrupted]), z)
    est = torch.empty(L, H)
    for l in range(L):
        new = clean_z[z[l]].mean(0, keepdim=True) if ablation == "mean" else source[z[l]]
        est[l] = ((new - clean_z[z[l]]) * leaves[z[l]].grad).sum(dim=(0, 1, 3))
    return est


def close(a, b, rtol=1e-4, atol=1e-6):
    scale = b.abs().max().item()
    diff = (a - b).abs().max().item()
    assert diff <= rtol * scale + atol, f"max diff {diff:.3g} vs scale {scale:.3g}"


METHODS = {"path": ("path", {}), "activation": ("activation", {}),
           "activation_end": ("activation", {"positions": "end"})}


@pytest.mark.parametrize("ablation", ["mean", "corrupted"])
@pytest.mark.parametrize("metric", ["logit_minus_mean", "prob", "logprob", "logit_diff"])
@pytest.mark.parametrize("kind", list(METHODS))
def test_every_exact_method_and_metric_equals_a_naive_loop(kind, metric, ablation):
    model = tiny("llama")
    task = random_task(model)
    method, opts = METHODS[kind]
    got = score_heads(model, task, metric, method, progress=False, ablation=ablation, **opts)
    patched, clean = naive_scores(model, task, metric, method=kind, ablation=ablation)
    close(got.scores, patched.mean(0) - clean.mean())  # absolute: a task of your own's default
    close(got.per_prompt, patched)
    torch.testing.assert_close(got.clean_per_prompt, clean, rtol=1e-5, atol=1e-6)
    assert got.difference == "absolute" and got.metric == metric and got.options["ablation"] == ablation


@pytest.mark.parametrize("family", ["gemma3", "gpt2", "bloom"])
@pytest.mark.parametrize("kind", list(METHODS))
def test_other_families_logit_difference_from_corrupted_prompts(family, kind):
    model = tiny(family)
    task = random_task(model, seed=1)
    method, opts = METHODS[kind]
    got = score_heads(model, task, "logit_diff", method, progress=False, ablation="corrupted", **opts)
    patched, clean = naive_scores(model, task, "logit_diff", method=kind, ablation="corrupted")
    close(got.scores, patched.mean(0) - clean.mean())


@pytest.mark.parametrize("ablation", ["mean", "corrupted"])
def test_attribution_equals_a_naive_gradient_times_difference(ablation):
    model = tiny("llama")
    task = random_task(model, seed=2)
    got = score_heads(model, task, "logit_diff", "attribution", progress=False, ablation=ablation)
    close(got.scores, naive_attribution(model, task, "logit_diff", ablation), rtol=1e-4)
    # per prompt, the estimates average to the task's
    close(got.per_prompt.mean(0) - got.clean_per_prompt.mean(), got.scores, rtol=1e-4)


def test_a_user_metric_gives_the_numbers_of_the_built_in_it_copies():
    model = tiny("llama")
    task = random_task(model, seed=3)

    def answer_logprob(logits, batch):
        return logits.log_softmax(-1).gather(-1, batch.targets[:, None])[:, 0]

    for method in ("path", "activation", "attribution"):
        mine = score_heads(model, task, answer_logprob, method, progress=False)
        built_in = score_heads(model, task, "logprob", method, progress=False)
        torch.testing.assert_close(mine.scores, built_in.scores, rtol=1e-6, atol=1e-7)
        assert mine.metric == "custom:test_a_user_metric_gives_the_numbers_of_the_built_in_it_copies.<locals>.answer_logprob"


def test_the_proxy_task_as_prompts_gives_the_proxy_scores_bit_for_bit():
    model = tiny("llama")
    proxy = ProxyTask(settings=((6, 8),), seed=4)
    (batch,) = proxy.batches(model)
    as_prompts = PromptTask(batch.tokens, batch.targets, positions=batch.end)
    a = score_heads(model, proxy, progress=False)
    b = score_heads(model, as_prompts, difference="relative", progress=False)
    assert torch.equal(a.scores, b.scores) and torch.equal(a.per_prompt, b.per_prompt)
    assert a.clean_metric == b.clean_metric


def test_prompts_of_different_lengths_pool_over_all_prompts_in_the_users_order():
    model = tiny("llama")
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(4, 60, (n,), generator=gen).tolist() for n in (5, 7, 5, 7, 7, 5)]
    answers = torch.randint(4, 60, (6,), generator=gen).tolist()
    task = PromptTask(prompts, answers)
    got = score_heads(model, task, "logprob", "activation", progress=False)
    assert got.per_prompt.shape == (6, model.n_layers, model.n_heads)
    # each prompt's clean value is its own, wherever its batch ran
    for i in (0, 1):
        alone = score_heads(model, PromptTask([prompts[i], prompts[i + 2] if i == 0 else prompts[3]],
                                              [answers[i], answers[i + 2] if i == 0 else answers[3]]),
                            "logprob", "activation", progress=False)
        assert got.clean_per_prompt[i].item() == pytest.approx(alone.clean_per_prompt[0].item(), rel=1e-5, abs=1e-6)
    close(got.scores, got.per_prompt.double().mean(0).float() - got.clean_per_prompt.mean())


def test_max_batch_splits_a_length_and_changes_no_score(tmp_path):
    """A length's prompts split into batches of at most max_batch: the same scores and per-prompt values (zero
    ablation draws on no other prompt), each batch checkpointed on its own, and the split kept in the record."""
    model = tiny("llama")
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(4, 60, (n,), generator=gen).tolist() for n in (6, 6, 6, 6, 6, 8, 8)]
    answers = torch.randint(4, 60, (7,), generator=gen).tolist()
    whole = PromptTask(prompts, answers)
    split = PromptTask(prompts, answers, max_batch=2)
    assert [b.batch_size for b in whole.batches(model)] == [5, 2]
    assert [b.batch_size for b in split.batches(model)] == [2, 2, 1, 2]
    a = score_heads(model, whole, "logprob", "activation", ablation="zero", progress=False)
    b = score_heads(model, split, "logprob", "activation", ablation="zero", progress=False,
                    checkpoint=tmp_path / "parts")
    close(a.scores, b.scores)
    close(a.per_prompt, b.per_prompt)
    assert len(list((tmp_path / "parts").glob("*.safetensors"))) == 4
    assert b.task["max_batch"] == 2 and PromptTask.from_dict(b.task).max_batch == 2 and "max_batch" not in a.task
    again = score_heads(model, split, "logprob", "activation", ablation="zero", progress=False,
                        checkpoint=tmp_path / "parts")
    assert again.extra["resumed_batches"] == 4 and torch.equal(again.scores, b.scores)
    for ablation in ("mean", "resample"):  # they would draw on part of a length's prompts: refused
        with pytest.raises(PearLensError) as e:
            score_heads(model, split, "logprob", "activation", ablation=ablation, progress=False)
        assert "max_batch" in one_line(e)
    for bad in (0, -1, True):
        with pytest.raises(PearLensError) as e:
            PromptTask(prompts, answers, max_batch=bad)
        assert "max_batch" in one_line(e)


def test_a_scored_position_inside_the_prompt_cuts_it_there():
    model = tiny("llama")
    task = random_task(model, seed=6, corrupted=False, foils=False)
    longer = PromptTask([list(p) + [9, 10] for p in task.prompts], task.answers, positions=-3)
    a = score_heads(model, task, "logprob", progress=False)
    b = score_heads(model, longer, "logprob", progress=False)
    assert torch.equal(a.scores, b.scores)


def test_text_prompts_are_tokenized_and_recorded():
    model = tiny("llama")
    task = PromptTask(["w5 w6 w7 w8", "w9 w10 w11 w12"], answers=["w13", "w14"], foils=["w15", 16])
    got = score_heads(model, task, "logit_diff", progress=False, ablation="zero")
    assert got.task["kind"] == "prompts" and got.task["n_prompts"] == 2 and len(got.task["digest"]) == 64
    assert PromptTask.from_dict(got.task).digest() == task.digest()


# ------------------------------------------------------------------ bad input: one line each


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("make, words", [
    (lambda: PromptTask(["w5 w6"], answers=[None]), "no answer"),
    (lambda: PromptTask(["w5 w6"], answers=["w7"], foils=["w1", "w2"]), "foils has 2 entries"),
    (lambda: PromptTask(["w5 w6", "w7 w8"], answers=["w7", "w9"], positions=[0, 1.5]), "not a whole number"),
    (lambda: PromptTask("w5 w6", answers=["w7"]), "one string"),
    (lambda: PromptTask([], answers=[]), "no prompts"),
])
def test_bad_python_input_is_one_line(make, words):
    with pytest.raises(PearLensError) as e:
        make()
    assert words in one_line(e)


@pytest.mark.parametrize("task, words", [
    (PromptTask(["w5 w6", "w7 w8"], answers=["w9 w10", "w9"]), "is 2 tokens"),
    (PromptTask(["w5 w6", "w7 w8"], answers=["w9", "w9"], corrupted=["w5", "w7 w8"]), "same number of tokens"),
    (PromptTask(["w5 w6", "w7 w8"], answers=["w9", "w9"], positions=[5, 0]), "beyond the prompt"),
    (PromptTask([[5, 6], [7, 10**6]], answers=[9, 9]), "outside the model's vocabulary"),
])
def test_bad_prompts_are_refused_before_scoring(task, words):
    with pytest.raises(PearLensError) as e:
        score_heads(tiny("llama"), task, "logprob", progress=False)
    assert words in one_line(e)


def test_a_task_the_ablation_or_metric_cannot_use_is_one_line():
    model = tiny("llama")
    no_extras = random_task(model, corrupted=False, foils=False)
    with pytest.raises(PearLensError) as e:
        score_heads(model, no_extras, "logit_diff", progress=False)
    assert "foil" in one_line(e)
    with pytest.raises(PearLensError) as e:
        score_heads(model, no_extras, "logprob", progress=False, ablation="corrupted")
    assert "corrupted" in one_line(e)
    with pytest.raises(PearLensError) as e:
        score_heads(model, ProxyTask(settings=((4, 6),)), "logprob", progress=False, ablation="corrupted")
    assert "corrupted" in one_line(e)
    single = PromptTask([[5, 6, 7], [5, 6]], answers=[9, 9])  # one prompt of each length: no batch mean
    with pytest.raises(PearLensError) as e:
        score_heads(model, single, "logprob", progress=False)
    assert "at least 2" in one_line(e)


@pytest.mark.parametrize("metric, words", [
    (lambda logits, batch: logits[:, 0:2], "shape"),
    (lambda logits, batch: logits.mean(), "shape"),
    (lambda logits, batch: torch.full((logits.shape[0],), float("nan")), "non-finite"),
    (lambda logits, batch: [0.0] * logits.shape[0], "tensor"),
])
def test_a_user_metric_of_the_wrong_shape_or_nan_is_one_line(metric, words):
    model = tiny("llama")
    with pytest.raises(PearLensError) as e:
        score_heads(model, random_task(model), metric, progress=False)
    assert words in one_line(e)


def test_a_task_file_names_every_malformed_record_one_line_each(tmp_path):
    path = tmp_path / "task.jsonl"
    rows = [
        {"prompt": "w5 w6", "answer": "w7", "foil": "w8"},
        {"prompt": "w5 w6"},
        "not an object",
        {"prompt": "w5", "tokens": [5], "answer": "w7", "foil": "w8"},
        {"prompt": "w5 w6", "answer": "w7", "foil": "w8", "position": "last"},
        {"prompt": "w5 w6", "answer": "w7", "foil": "w8", "color": "red"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(MalformedTask) as e:
        PromptTask.from_jsonl(path)
    lines = str(e.value).splitlines()
    assert lines[0].startswith("6 malformed task record(s)")
    assert [line.split(":")[1] for line in lines[1:]] == ["7", "2", "3", "4", "5", "6"]
    assert "no 'answer'" in lines[2] and "exactly one of" in lines[4] and "whole number" in lines[5]


def test_a_task_file_round_trips(tmp_path):
    path = tmp_path / "capitals.jsonl"
    rows = [{"prompt": "w5 w6 w7", "answer": "w8", "foil": "w9", "corrupted": "w10 w11 w12"},
            {"tokens": [5, 6, 9], "answer": 8, "foil": 9, "corrupted": [10, 11, 13], "position": -1}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    task = PromptTask.from_jsonl(path, add_special_tokens=False)  # the tiny tokenizer would prepend BOS
    assert len(task) == 2 and task.name == "capitals"
    batches = task.batches(tiny("llama"))
    assert [b.tokens.tolist() for b in batches] == [[[5, 6, 7], [5, 6, 9]]]
    assert batches[0].foils.tolist() == [9, 9] and batches[0].corrupted.tolist() == [[10, 11, 12], [10, 11, 13]]
