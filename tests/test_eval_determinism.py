"""Greedy outputs on CPU do not depend on the batch size, on the order of the prompts or on their batch mates.

Every condition of an evaluation is decoded in the same batches, but a rerun with another ``--batch-size``
(or items in another order) must give the same table; otherwise a difference between conditions could be
an artefact of padding. Measured on tiny-llama in fp32 with SDPA attention: the last-position logits of a
left-padded prompt differ from the unpadded ones by about 2e-7 (reduction order), far below the smallest
top-1/top-2 margin of these prompts (about 5e-3), so the greedy tokens agree.
"""
import random

import pytest
import torch

from pear_lens.evaluation.generate import greedy_generate
from tests.conftest import tiny

N = 24


def _prompts(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    # lengths 3..19 with repeats: shuffling changes which prompts of one length share a batch
    return [torch.randint(4, 512, (int(torch.randint(3, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(N)]


@pytest.fixture(scope="module")
def llama():
    model = tiny("llama")
    return model.fresh_hf(), model.tokenizer


@pytest.mark.parametrize("stop_at_newline", [False, True])
def test_greedy_outputs_do_not_depend_on_batch_size_or_order(llama, stop_at_newline):
    hf, tok = llama
    assert next(hf.parameters()).device.type == "cpu" and hf.dtype == torch.float32
    prompts = _prompts()
    kw = dict(max_new_tokens=8, stop_at_newline=stop_at_newline, progress=False)
    one = greedy_generate(hf, tok, prompts, batch_size=1, **kw)
    assert len(set(one)) > N // 2  # the outputs differ between prompts, so equal lists are not a trivial match
    assert greedy_generate(hf, tok, prompts, batch_size=4, **kw) == one
    assert greedy_generate(hf, tok, prompts, batch_size=N, **kw) == one
    for seed in (1, 2):
        perm = list(range(N))
        random.Random(seed).shuffle(perm)
        shuffled = greedy_generate(hf, tok, [prompts[i] for i in perm], batch_size=4, **kw)
        assert [shuffled[perm.index(i)] for i in range(N)] == one


def test_heavy_padding_does_not_change_a_short_prompt(llama):
    hf, tok = llama
    short, long = _prompts(1)[0][:3], sum(_prompts(2), [])[:60]  # 3 tokens beside 60: most of the row is padding
    assert len(long) == 60
    kw = dict(max_new_tokens=8, stop_at_newline=False, progress=False)
    alone = greedy_generate(hf, tok, [short], batch_size=1, **kw)
    together = greedy_generate(hf, tok, [long, short], batch_size=2, **kw)
    assert together[1] == alone[0]
    assert together[0] == greedy_generate(hf, tok, [long], batch_size=1, **kw)[0]
