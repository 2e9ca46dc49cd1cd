"""Coefficient learning on tiny models: identity start, the fast path against the plain one,
the loss on the copy half only, determinism, frozen parameters, the schedule."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pear_lens.errors import PearLensError
from pear_lens.models import TINY_FAMILIES
from pear_lens.proxy_task import TaskBatch, sample_batch
from pear_lens.reweight import check_heads, copy_inputs, copy_logits, copy_loss, evaluate_copy, linear_warmup, reweighted, scaling_hooks, train_coefficients
from pear_lens.recipe import TrainConfig
from tests.conftest import tiny

SMALL = dict(steps=4, batch_size=4, micro_batch=2, n=8)


def batch_for(model, seed: int = 0, batch: int = 3, n: int = 8, bos: bool = False) -> TaskBatch:
    bos_id = model.tokenizer.bos_token_id if bos else None
    return sample_batch(torch.arange(4, model.d_vocab), batch, n, torch.Generator().manual_seed(seed), bos_id)


def test_identity_start_leaves_the_model_unchanged():
    model = tiny("llama")
    b = batch_for(model)
    heads = [(0, 1), (2, 3)]
    with torch.no_grad():
        clean = model.bridge(b.tokens)
        with reweighted(model, heads, torch.ones(2)) as bridge:
            hooked = bridge(b.tokens)
        fast, _ = copy_logits(model, b, heads, torch.ones(2))
    assert torch.equal(hooked, clean)
    torch.testing.assert_close(fast, clean[:, b.copy_slice], atol=1e-5, rtol=0)
    result = train_coefficients(model, heads, TrainConfig(**SMALL), progress=False)
    assert torch.equal(result.tau_trajectory[0], torch.ones(2))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_fast_copy_logits_equal_the_full_hooked_forward(family):
    model = tiny(family)
    b = batch_for(model, bos=family != "gpt2")
    for heads, tau in (([(1, 2), (2, 0)], [0.5, 1.7]), ([(0, 3), (2, 1)], [-0.3, 2.0])):
        tau = torch.tensor(tau)
        with torch.no_grad():
            with reweighted(model, heads, tau) as bridge:
                full = bridge(b.tokens)[:, b.copy_slice]
            fast, targets = copy_logits(model, b, heads, tau)
        torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
        assert torch.equal(targets, b.tokens[:, b.offset + b.n:])  # the second copy


def test_hooks_do_not_outlive_the_context():
    model = tiny("gpt2")
    b = batch_for(model)
    with torch.no_grad():
        before = model.bridge(b.tokens)
        with reweighted(model, [(1, 1)], [0.0]) as bridge:
            inside = bridge(b.tokens)
        after = model.bridge(b.tokens)
    assert not torch.allclose(inside, before)
    assert torch.equal(after, before)


def test_gradient_of_the_fast_path_equals_the_plain_one():
    model = tiny("qwen2")
    b = batch_for(model, batch=4)
    heads = [(1, 0), (2, 2), (2, 3)]
    tau_fast = torch.tensor([0.8, 1.2, 1.0], requires_grad=True)
    copy_loss(model, b, heads, tau_fast).backward()

    tau_plain = tau_fast.detach().clone().requires_grad_(True)
    logits = model.bridge.run_with_hooks(b.tokens, fwd_hooks=scaling_hooks(heads, tau_plain, model.n_heads))
    _, targets, _ = copy_inputs(b)
    F.cross_entropy(logits[:, b.copy_slice].flatten(0, 1), targets.flatten()).backward()
    torch.testing.assert_close(tau_fast.grad, tau_plain.grad, atol=1e-6, rtol=1e-4)
    assert tau_fast.grad.abs().sum() > 0


def test_loss_reads_the_copy_half_only():
    model = tiny("opt")
    b = batch_for(model, batch=2, n=6)
    heads, tau = [(1, 1)], torch.tensor([1.3])
    with torch.no_grad():
        with reweighted(model, heads, tau) as bridge:
            full = bridge(b.tokens)
        loss = copy_loss(model, b, heads, tau)
    per_position = F.cross_entropy(full[:, :-1].transpose(1, 2), b.tokens[:, 1:], reduction="none")  # [batch, pos]
    n = b.n
    torch.testing.assert_close(loss, per_position[:, n - 1:].mean(), atol=1e-5, rtol=0)
    assert not torch.isclose(loss, per_position.mean(), atol=1e-3)  # the first half would change it
    # a wrong prediction target in the first half does not enter the loss: the targets are the second copy
    _, targets, keep = copy_inputs(b)
    assert keep == n and torch.equal(targets, b.tokens[:, n:])


def test_same_seed_same_tau_and_another_seed_differs():
    model = tiny("llama")
    heads = [(1, 3), (2, 2)]
    a = train_coefficients(model, heads, TrainConfig(seed=3, **SMALL), progress=False)
    b = train_coefficients(model, heads, TrainConfig(seed=3, **SMALL), progress=False)
    c = train_coefficients(model, heads, TrainConfig(seed=4, **SMALL), progress=False)
    assert torch.equal(a.tau, b.tau) and a.loss_curve == b.loss_curve
    assert not torch.equal(a.tau, c.tau)
    assert not torch.equal(a.tau, torch.ones(2))


def test_model_parameters_stay_frozen_and_untouched():
    model = tiny("gpt-neox")
    before = {n: p.detach().clone() for n, p in model.bridge.named_parameters()}
    train_coefficients(model, [(0, 0), (2, 1)], TrainConfig(lr=0.1, **SMALL), progress=False)
    for name, p in model.bridge.named_parameters():
        assert not p.requires_grad and p.grad is None
        assert torch.equal(p, before[name]), name


def test_micro_batches_accumulate_to_the_full_batch():
    model = tiny("bloom")
    heads = [(1, 2)]
    whole = train_coefficients(model, heads, TrainConfig(steps=3, batch_size=4, micro_batch=4, n=8), progress=False)
    split = train_coefficients(model, heads, TrainConfig(steps=3, batch_size=4, micro_batch=1, n=8), progress=False)
    torch.testing.assert_close(whole.tau, split.tau, atol=1e-6, rtol=0)


def test_training_lowers_the_held_out_copy_loss():
    model = tiny("gemma3")
    heads = [(1, 0), (1, 2), (2, 1), (2, 3)]
    held_out = [batch_for(model, seed=99, batch=8, n=8)]
    result = train_coefficients(model, heads, TrainConfig(steps=30, lr=0.05, batch_size=8, micro_batch=8, n=8),
                                progress=False)
    before = evaluate_copy(model, held_out)
    after = evaluate_copy(model, held_out, heads, result.tau)
    assert after.loss < before.loss
    assert before.n_predictions == 8 * 8 and 0.0 <= after.accuracy <= 1.0


def test_result_tables():
    model = tiny("llama")
    r = train_coefficients(model, [(2, 0), (1, 1)], TrainConfig(**SMALL), progress=False)
    df = r.to_dataframe()
    assert len(df) == (SMALL["steps"] + 1) * 2
    assert df["loss"].isna().sum() == 2  # only the final τ has no loss
    assert r.coefficients() == {(2, 0): float(r.tau[0]), (1, 1): float(r.tau[1])}
    assert r.lr_curve[0] == 0.0 and r.lr_curve[2] == pytest.approx(0.005)
    assert len(r.figure().data) == 3


def test_schedule_matches_hugging_face():
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=50)
    ours = linear_warmup(2, 50)
    for step in range(60):
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(step))
        opt.step()
        hf.step()


def test_bad_heads_and_settings_are_refused():
    with pytest.raises(PearLensError, match="outside the model"):
        check_heads([(3, 0)], 3, 4)
    with pytest.raises(PearLensError, match="duplicate"):
        check_heads([(1, 0), (1, 0)], 3, 4)
    with pytest.raises(PearLensError, match="no heads"):
        check_heads([], 3, 4)
    with pytest.raises(PearLensError, match="one τ per head"):
        with reweighted(tiny("llama"), [(1, 0)], [1.0, 2.0]):
            pass
    with pytest.raises(PearLensError):
        TrainConfig(micro_batch=0)


def test_bf16_training_is_deterministic_and_close_to_fp32():
    model = tiny("llama")
    heads = [(1, 1), (2, 3)]
    cfg = dict(steps=6, batch_size=4, micro_batch=4, n=8, lr=0.05)
    a = train_coefficients(model, heads, TrainConfig(precision="bf16", **cfg), progress=False)
    b = train_coefficients(model, heads, TrainConfig(precision="bf16", **cfg), progress=False)
    full = train_coefficients(model, heads, TrainConfig(precision="fp32", **cfg), progress=False)
    assert torch.equal(a.tau, b.tau)
    assert (a.tau - full.tau).abs().max() < 0.05 and not torch.equal(a.tau, torch.ones(2))
    with pytest.raises(PearLensError, match="precision"):
        TrainConfig(precision="fp16")


def test_no_graph_below_the_lowest_chosen_layer():
    """Blocks below the first τ produce tensors outside the autograd graph (nothing stored for backward)."""
    model = tiny("llama")
    b = batch_for(model)
    seen: dict[int, bool] = {}
    handles = [block.register_forward_hook(
        lambda mod, args, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
        for i, block in enumerate(model.bridge.blocks)]
    try:
        copy_loss(model, b, [(2, 1)], torch.ones(1, requires_grad=True)).backward()
    finally:
        for h in handles:
            h.remove()
    assert seen == {0: False, 1: False, 2: True}


def test_copyable_accuracy_leaves_out_the_uncopyable_first_target():
    from pear_lens.reweight import CopyEval

    targets = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4]])
    logits = torch.full((2, 4, 10), -5.0)
    logits[0, torch.arange(4), targets[0]] = 5.0  # all four right
    logits[1, torch.arange(1, 4), targets[1, 1:]] = 5.0  # the first (the repeat's start) wrong: it is unknowable
    logits[1, 0, 9] = 5.0
    result = CopyEval.of([(logits, targets)])
    assert result.accuracy == pytest.approx(7 / 8) and result.copyable_accuracy == 1.0
    assert (result.n_sequences, result.n_predictions) == (2, 8)
