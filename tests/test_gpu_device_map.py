"""benchmarks/device_map.py's path on a small Llama: saved in bfloat16, loaded with ``device_map="auto"`` over
the GPUs present, scanned and trained; the scores equal those of the same weights loaded onto one device.

Marked ``gpu`` and skipped where torch sees no CUDA GPU, like tests/test_gpu.py (whose conventions it follows:
no conftest fixtures, ``PEAR_LENS_GPU_DEVICE=cpu`` runs it against the CPU as a dry run). On one GPU ``auto``
places every layer there; with several it splits the layers, and the comparison is across devices.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICE = os.environ.get("PEAR_LENS_GPU_DEVICE", "cuda")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

SMALL_LLAMA = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                   intermediate_size=512, vocab_size=2048, rope_theta=500000.0)
"""Llama-3-8B's proportions (grouped queries, θ 500000) at a size that loads in seconds."""

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]


def benchmark():
    """benchmarks/device_map.py as a module (the benchmarks are scripts that import their ``_report``)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("device_map_benchmark", BENCHMARKS / "device_map.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_device_map_benchmark_scans_and_trains_a_small_llama(tmp_path):
    from pear_lens.mediation import score_heads
    from pear_lens.models import load_model
    from pear_lens.recipe import Recipe
    from pear_lens.reweight import train_coefficients

    bench = benchmark()
    out = bench.run(SMALL_LLAMA, tmp_path, prompts=4, length=12)
    model, scores = out["model"], out["scores"]
    print(f"\n[gpu] device_map='auto': weights on {model.devices}, load {out['load_s']:.1f} s, scan "
          f"{out['scan_s']:.2f} s, max_memory_allocated {out['memory_scan']}")
    assert tuple(scores.scores.shape) == (4, 8) and out["finite"]
    assert model.dtype == "bfloat16" and model.device_map == "auto"
    if DEVICE == "cuda":
        assert {torch.device(d).type for d in model.devices} == {"cuda"}  # nothing offloaded to the CPU
        assert all(out["memory_scan"][d] > 0 for d in model.devices)

    # the same weights on the embedding's device alone: the same scores (across devices, when auto split them)
    single = load_model(str(tmp_path / "model"), device=model.device, dtype="bfloat16")
    task = bench.random_task(SMALL_LLAMA["vocab_size"], 4, 12)
    alone = score_heads(single, task, "logit_diff", "path", progress=False)
    scale = float(alone.scores.abs().max())
    print(f"[gpu] max |Δ score| mapped vs one device {float((scores.scores - alone.scores).abs().max()):.3g} "
          f"(largest |score| {scale:.3g})")
    torch.testing.assert_close(scores.scores, alone.scores, rtol=1e-2, atol=1e-2 * max(scale, 1e-3))

    # training on the spread model: τ moves and stays finite (inputs to the embedding's device, loss on the last)
    result = train_coefficients(model, [(1, 3), (3, 0)], Recipe(steps=3, batch_size=4, micro_batch=2, n=8, lr=0.05),
                                progress=False)
    print(f"[gpu] τ on the spread model {[round(float(t), 5) for t in result.tau]}, losses {result.loss_curve}")
    assert torch.isfinite(result.tau).all() and all(math.isfinite(x) for x in result.loss_curve)
    assert float((result.tau - 1).abs().max()) > 1e-4
