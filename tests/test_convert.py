"""Folding τ into Hugging Face weights: equal to the hooked model for every family, only the
head slices change, foreign or already folded weights refused, importable without TransformerLens."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from pear_lens import constants
from pear_lens.artifact import Artifact
from pear_lens.convert import fold_into_hf, n_layers_heads, reweighted_hf
from pear_lens.errors import PearLensError
from pear_lens.families import FAMILIES, family_for
from pear_lens.models import TINY_FAMILIES
from pear_lens.reweight import reweighted
from tests.conftest import tiny

HEADS = [(0, 3), (1, 0), (1, 2), (2, 1)]
TAU = [0.3, 0.0, 1.7, -0.4]


def artifact_for(model, heads=HEADS, tau=TAU) -> Artifact:
    return Artifact(heads=heads, tau=torch.tensor(tau), base_model=model.describe())


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_folded_logits_equal_the_hooked_bridge(family):
    model = tiny(family)
    art = artifact_for(model)
    hf = fold_into_hf(model.fresh_hf(), art)
    tokens = torch.randint(4, model.d_vocab, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with reweighted(model, art.heads, art.tau) as bridge:
            hooked = bridge(tokens)
        folded = hf(tokens).logits
        original = model.bridge(tokens)
    assert (folded - hooked).abs().max() <= 1e-4
    assert (original - hooked).abs().max() > 1e-2  # τ really changed the model


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_fold_equals_the_unfolded_prehooked_hf_model(family):
    """Same model, same kernels, τ by pre-hooks vs τ in the weights: only the fold can differ."""
    model = tiny(family)
    coefficients = dict(zip(HEADS, TAU))
    tokens = torch.randint(4, model.d_vocab, (2, 16), generator=torch.Generator().manual_seed(2))
    unfolded = model.fresh_hf()
    with torch.no_grad():
        plain = unfolded(tokens).logits
        with reweighted_hf(unfolded, coefficients):
            hooked = unfolded(tokens).logits
        after = unfolded(tokens).logits  # the hooks are gone
        folded = fold_into_hf(model.fresh_hf(), artifact_for(model))(tokens).logits
    assert (folded - hooked).abs().max() <= 1e-5
    assert torch.equal(after, plain) and (plain - hooked).abs().max() > 1e-2


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_only_the_head_slices_of_the_output_projection_change(family):
    model = tiny(family)
    original = model.fresh_hf()
    folded = fold_into_hf(model.fresh_hf(), artifact_for(model))
    fam = family_for(original.config.model_type)
    _, n_heads = n_layers_heads(original)
    before, after = original.state_dict(), folded.state_dict()
    expected = {fam.o_proj.format(layer=l) + ".weight" for l, _ in HEADS}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == expected
    for (layer, head), tau in zip(HEADS, TAU):
        w0, w1 = before[fam.o_proj.format(layer=layer) + ".weight"], after[fam.o_proj.format(layer=layer) + ".weight"]
        if fam.layout == "conv1d":  # GPT-2 stores the transpose
            w0, w1 = w0.T, w1.T
        d_head = w0.shape[1] // n_heads
        cols = slice(head * d_head, (head + 1) * d_head)
        torch.testing.assert_close(w1[:, cols], w0[:, cols] * tau)
        others = [h for l, h in HEADS if l == layer]
        keep = torch.ones(w0.shape[1], dtype=torch.bool)
        for h in others:
            keep[h * d_head:(h + 1) * d_head] = False
        assert torch.equal(w1[:, keep], w0[:, keep])


def test_folding_twice_is_refused_in_memory_and_after_saving(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny("llama")
    art = artifact_for(model)
    hf = fold_into_hf(model.fresh_hf(), art)
    with pytest.raises(PearLensError, match="already has PEAR coefficients folded in.*original weights"):
        fold_into_hf(hf, art)
    hf.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert getattr(reloaded.config, constants.PEAR_CONFIG_KEY)["heads"] == [list(h) for h in HEADS]
    with pytest.raises(PearLensError, match="already has PEAR coefficients"):
        fold_into_hf(reloaded, {(0, 0): 2.0})


def test_foreign_weights_are_refused_unless_the_check_is_switched_off():
    art = artifact_for(tiny("llama"))
    other = tiny("qwen2").fresh_hf()
    with pytest.raises(PearLensError, match="not the weights this artifact was trained on"):
        fold_into_hf(other, art)
    fold_into_hf(other, art, check_fingerprint=False)  # same shapes: an explicit opt-out works


def test_a_plain_mapping_folds_without_a_fingerprint():
    model = tiny("opt")
    hf = fold_into_hf(model.fresh_hf(), dict(zip(HEADS, TAU)))
    reference = fold_into_hf(model.fresh_hf(), artifact_for(model))
    for a, b in zip(hf.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_unsupported_family_names_the_supported_ones():
    fake = SimpleNamespace(config=SimpleNamespace(model_type="mamba", num_hidden_layers=2, num_attention_heads=2))
    with pytest.raises(PearLensError, match="'mamba' is not supported") as err:
        fold_into_hf(fake, {(0, 0): 0.5})
    for name in ("llama", "mistral", "qwen2", "gemma3_text", "gpt2", "opt", "bloom", "gpt_neox"):
        assert name in str(err.value)
    assert {"llama", "gpt2", "opt", "bloom", "gpt_neox"} <= set(FAMILIES)
    for mt in ("mistral", "qwen2", "gemma3_text"):
        assert family_for(mt).o_proj.endswith("self_attn.o_proj")


def test_bad_coefficients_are_refused():
    hf = tiny("gpt2").fresh_hf()
    with pytest.raises(PearLensError, match="outside this model"):
        fold_into_hf(hf, {(5, 0): 0.5})
    with pytest.raises(PearLensError, match="not finite"):
        fold_into_hf(hf, {(0, 0): float("inf")})
    with pytest.raises(PearLensError, match="expected a run folder"):
        fold_into_hf(hf, [0.5])


def test_convert_works_without_transformer_lens(tmp_path):
    """Import and fold in a fresh interpreter where importing TransformerLens fails."""
    artifact_for(tiny("llama")).save(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["transformer_lens"] = None  # any import of it raises ImportError
        from pear_lens.convert import fold_into_hf
        from pear_lens.artifact import load_artifact
        from pear_lens.models import build_tiny
        model, _ = build_tiny("llama")
        fold_into_hf(model, {str(tmp_path)!r})
        assert model.config.pear_lens_folded["heads"] == {[list(h) for h in HEADS]!r}
        heavy = [m for m in ("transformer_lens", "pear_lens.mediation", "pear_lens.reweight")
                 if sys.modules.get(m) is not None]
        assert not heavy, heavy
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
