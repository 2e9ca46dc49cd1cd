"""load_model(device_map=..., dtype=...): the path a large model takes on GPUs (docs/gpu.md),
checked here with CPU device maps on tiny models saved to a folder: same weights, same scores."""
from __future__ import annotations

import pytest
import torch

from pear_lens.errors import PearLensError
from pear_lens.mediation import score_heads
from pear_lens.models import build_tiny, load_model
from pear_lens.proxy_task import ProxyTask

TASK = ProxyTask(settings=((6, 8), (4, 5)), seed=3)

# One entry per top-level module, every decoder layer separately: the shape of a
# real multi-GPU map, with every target the CPU.
LAYER_MAPS = {
    "llama": {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
              "model.layers.1": "cpu", "model.layers.2": "cpu", "model.norm": "cpu", "lm_head": "cpu"},
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu",
             "transformer.h.0": "cpu", "transformer.h.1": "cpu", "transformer.h.2": "cpu",
             "transformer.ln_f": "cpu", "lm_head": "cpu"},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for family in LAYER_MAPS:
        folder = tmp_path_factory.mktemp(f"tiny-{family}")
        hf, tok = build_tiny(family)
        hf.save_pretrained(folder)
        tok.save_pretrained(folder)
        out[family] = str(folder)
    return out


@pytest.mark.parametrize("family", list(LAYER_MAPS))
@pytest.mark.parametrize("map_kind", ["whole", "per_layer"])
def test_scores_with_a_device_map_equal_scores_without(folders, family, map_kind):
    device_map = {"": "cpu"} if map_kind == "whole" else LAYER_MAPS[family]
    plain = load_model(folders[family])
    mapped = load_model(folders[family], device_map=device_map)
    # a map onto a single device sets no hf_device_map (transformers treats it as `device`); what
    # matters is that the weights are real and where the map put them
    assert {p.device.type for p in mapped.bridge.original_model.parameters()} == {"cpu"}
    assert mapped.fingerprint == plain.fingerprint
    # the fast path scan runs blocks from the middle of the model: the part a device map could break
    a = score_heads(plain, TASK, difference="absolute", progress=False)
    b = score_heads(mapped, TASK, difference="absolute", progress=False)
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-7)
    assert b.clean_metric == pytest.approx(a.clean_metric, rel=1e-6)


def test_fresh_copy_keeps_the_device_map(folders):
    mapped = load_model(folders["llama"], device_map=LAYER_MAPS["llama"])
    fresh = mapped.fresh_hf()
    tokens = torch.randint(4, mapped.d_vocab, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens).logits, mapped.bridge(tokens), rtol=1e-4, atol=1e-5)


def test_bfloat16_weights_give_close_scores(folders):
    full = load_model(folders["llama"])
    half = load_model(folders["llama"], dtype="bfloat16", device_map={"": "cpu"})
    assert {p.dtype for p in half.bridge.original_model.parameters()} == {torch.bfloat16}
    a = score_heads(full, TASK, difference="absolute", progress=False)
    b = score_heads(half, TASK, difference="absolute", progress=False)
    # bf16 keeps ~3 significant digits: the scores move, the ranking of the clear heads does not
    assert (b.scores - a.scores).abs().max() < 0.05 * a.scores.abs().max()
    assert a.top_k(3) == b.top_k(3)


def test_bad_device_options_are_refused_with_the_fix(folders):
    with pytest.raises(PearLensError, match="not both"):
        load_model(folders["llama"], device="cpu", device_map={"": "cpu"})
    with pytest.raises(PearLensError, match="save_pretrained"):
        load_model("tiny-llama", device_map={"": "cpu"})
    with pytest.raises(PearLensError, match="bfloat16"):
        load_model("tiny-llama", dtype="fp8")
    with pytest.raises(PearLensError, match="meta/disk"):
        load_model(folders["llama"], device_map={"": "meta"})


def test_discover_command_takes_dtype_and_device_map(folders, tmp_path):
    from pear_lens.commands.cli import main
    from pear_lens.results import HeadScores

    common = ["discover", "--model", folders["gpt2"], "--settings", "4x6", "--no-png", "--quiet",
              "--allow-weak-copy-task"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--out", str(tmp_path / "b"), "--device-map", "auto"]) == 0
    assert main([*common, "--out", str(tmp_path / "c"), "--dtype", "bfloat16"]) == 0
    a, b, c = (HeadScores.load(tmp_path / x) for x in "abc")
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-7)
    assert c.fingerprint != a.fingerprint  # bf16 weights are other weights, and the run says so


@pytest.mark.slow
def test_registry_model_takes_a_device_map(smol):
    # the GGUF registry models load through their cached Hugging Face folder, so the map applies there too
    mapped = load_model("smollm2-135m-instruct", device_map={"": "cpu"})
    assert mapped.fingerprint == smol.fingerprint
    task = ProxyTask(settings=((4, 8),), seed=0)
    a = score_heads(smol, task, difference="absolute", progress=False)
    b = score_heads(mapped, task, difference="absolute", progress=False)
    torch.testing.assert_close(b.scores, a.scores, rtol=1e-5, atol=1e-6)
