"""A peer agrees: pear_lens's activation patching on a task of your own equals TransformerLens's own patching.

On SmolLM2 with 20 IOI prompts (examples/ioi_task.py), ``score_heads(..., "logit_diff", "activation",
ablation="corrupted", positions="all")`` must give, head by head, what
``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` gives on the same bridge. The two speak of
the runs in opposite directions: TransformerLens runs its ``corrupted_tokens`` and patches in activations from
its ``clean_cache``; pear_lens runs the clean prompts and patches in the corrupted run's head output (noising).
So TransformerLens gets our clean prompts as ``corrupted_tokens`` and the cache of our corrupted prompts as
``clean_cache``; it returns the patched metric, and ``patched − clean`` is our score.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

import pear_lens

from .conftest import load_script

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str):
    """``examples/NAME.py`` imported as a module (the examples are not a package)."""
    return load_script(name, EXAMPLES)


def test_ioi_builder_is_deterministic_and_fits_smollm2(smol):
    ioi = load_example("ioi_task")
    assert ioi.ioi_records(100) == ioi.ioi_records(100)
    assert len(ioi.ioi_records(100)) == 100
    lengths = ioi.check_tokens(smol.tokenizer)  # one token per name, one length per template
    assert len(lengths) == len(ioi.TEMPLATES)
    task = pear_lens.PromptTask.from_jsonl(ioi.JSONL)  # the committed file is what main() writes
    assert task.to_dict()["items"] == ioi.ioi_task(100).to_dict()["items"]


def test_activation_patching_from_corrupted_prompts_equals_transformer_lens(smol):
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    ioi = load_example("ioi_task")
    records = [r for r in ioi.ioi_records(30) if len(smol.tokenizer(r["prompt"])["input_ids"]) == 14][:20]
    assert len(records) == 20  # one length: TransformerLens patches one [batch, pos] tensor
    task = pear_lens.PromptTask.from_records(records, name="ioi-peer")

    ours = pear_lens.score_heads(smol, task, "logit_diff", "activation", ablation="corrupted", positions="all",
                                 progress=False)

    (batch,) = task.batches(smol)
    bridge = smol.bridge
    answers, foils = batch.targets, batch.foils

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        return (last.gather(1, answers[:, None]) - last.gather(1, foils[:, None])).mean()

    # TransformerLens runs one full forward per head: its loop runs on the ten heads with the largest effect and
    # a head in every third layer (a full loop would add 270 forwards, minutes on two CPU cores)
    strongest = [divmod(int(i), smol.n_heads) for i in ours.scores.abs().flatten().argsort(descending=True)[:10]]
    heads = sorted(set(strongest) | {(layer, layer % smol.n_heads) for layer in range(0, smol.n_layers, 3)})
    with torch.no_grad():
        clean = logit_diff(bridge(batch.tokens))
        _, corrupted_cache = bridge.run_with_cache(batch.corrupted, names_filter=lambda n: n.endswith("attn.hook_z"))
        theirs = get_act_patch_attn_head_out_all_pos(  # a list of heads replaces the (layer, head) grid
            bridge, batch.tokens, corrupted_cache, logit_diff, index_axis_names=None,
            index_df=pd.DataFrame(heads, columns=["layer", "head"]))

    assert theirs.shape == (len(heads),)
    expected = theirs.float().cpu() - clean.float().cpu()
    got = ours.scores[tuple(torch.tensor(heads).T)]
    assert ours.clean_per_prompt.mean().item() == pytest.approx(clean.item(), rel=1e-5, abs=1e-5)
    # not vacuous: corrupting the subject's repeat moves the answer by logits
    assert expected.abs().max() > 0.5
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-4 * expected.abs().max().item() + 1e-5, f"max |pear_lens − TransformerLens| = {diff:.2e}"
    print(f"\npear_lens vs TransformerLens on {len(heads)} heads: max |diff| {diff:.2e}, "
          f"max |score| {expected.abs().max():.3f}")
