from __future__ import annotations

import pytest
import torch

from pear_lens.errors import PearLensError
from pear_lens.proxy_task import REFERENCE_SETTINGS, ProxyTask

from .conftest import tiny


def test_defaults_are_the_reference_head_search():
    task = ProxyTask()
    assert task.settings == REFERENCE_SETTINGS == ((20, 50), (40, 25), (80, 15), (100, 10))
    assert task.vocab == "all" and task.prepend_bos is False and task.min_token_id == 0


def test_sequences_repeat_and_targets_are_the_copy():
    m = tiny("llama")
    (batch,) = ProxyTask(settings=((5, 7),)).batches(m)
    assert batch.tokens.shape == (5, 14)
    assert torch.equal(batch.tokens[:, :7], batch.tokens[:, 7:])
    assert batch.end == 12
    assert torch.equal(batch.targets, batch.tokens[:, 6])  # x_n, the copy of the token after x_{n-1}
    assert batch.copy_slice == slice(6, 13)


def test_same_seed_same_tokens_other_seed_other_tokens():
    m = tiny("llama")
    a = ProxyTask(seed=3).batches(m)
    b = ProxyTask(seed=3).batches(m)
    c = ProxyTask(seed=4).batches(m)
    assert all(torch.equal(x.tokens, y.tokens) for x, y in zip(a, b))
    assert not torch.equal(a[0].tokens, c[0].tokens)


def test_bos_is_prepended_and_positions_shift():
    m = tiny("gpt2")
    (batch,) = ProxyTask(settings=((3, 4),), prepend_bos=True).batches(m)
    assert (batch.tokens[:, 0] == m.tokenizer.bos_token_id).all()
    assert batch.seq_len == 9 and batch.offset == 1
    assert torch.equal(batch.tokens[:, 1:5], batch.tokens[:, 5:])
    assert batch.copy_slice == slice(4, 8)


def test_vocabulary_filters():
    m = tiny("llama")
    special = set(m.tokenizer.all_special_ids)
    no_special = ProxyTask(vocab="no_special").candidate_ids(m)
    assert special and not special & set(no_special.tolist())
    assert ProxyTask(min_token_id=2).candidate_ids(m).min() == 2
    explicit = ProxyTask(vocab=[10, 11, 12]).candidate_ids(m)
    assert explicit.tolist() == [10, 11, 12]
    even = ProxyTask(vocab_filter=lambda i, s: i % 2 == 0).candidate_ids(m)
    assert len(even) == m.d_vocab // 2 and (even % 2 == 0).all()
    (batch,) = ProxyTask(settings=((8, 6),), vocab=[10, 11, 12]).batches(m)
    assert set(batch.tokens.unique().tolist()) <= {10, 11, 12}


@pytest.mark.parametrize("kwargs, message", [
    ({"settings": ((4, 1),)}, "n >= 2"),
    ({"settings": ()}, "at least one"),
    ({"settings": ((0, 5),)}, "at least 1"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(PearLensError, match=message):
        ProxyTask(**kwargs)


def test_empty_vocabulary_filter_is_refused():
    with pytest.raises(PearLensError, match="no token ids"):
        ProxyTask(vocab_filter=lambda i, s: False).batches(tiny("llama"))


def test_ids_outside_the_vocabulary_are_refused():
    with pytest.raises(PearLensError, match="outside the model's vocabulary"):
        ProxyTask(vocab=[1, 10_000]).candidate_ids(tiny("llama"))


def test_sequence_longer_than_context_is_refused():
    m = tiny("gpt2")  # learned positions: 256
    with pytest.raises(PearLensError, match="longer than .* context of 256"):
        ProxyTask(settings=((2, 200),)).batches(m)


def test_round_trip_through_dict():
    task = ProxyTask(settings=((3, 4), (2, 5)), vocab="no_special", seed=7)
    assert ProxyTask.from_dict(task.to_dict()) == task
