"""The device paths of docs/gpu.md, checked on a CUDA GPU with the tiny models: scores on the GPU equal
the CPU's, τ trains in fp32 and under bf16 autocast, the fold verifies, bf16 discovery gives finite scores.

Every test is marked ``gpu`` and skips where torch sees no CUDA GPU (the development machine and CI).
Run them with ``pytest -m gpu tests/test_gpu.py`` on a machine with a GPU. The module is self-contained
(no conftest fixtures), so it also runs when copied alone next to a checkout. What it measures (score
differences, Spearman of bf16 against fp32, timings) is printed: run with ``-s`` to see it.

``PEAR_LENS_GPU_DEVICE`` names the device under test (default ``cuda``); ``cpu`` runs the same code paths
against the CPU itself, a dry run of this module on a machine without a GPU.
"""
from __future__ import annotations

import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICE = os.environ.get("PEAR_LENS_GPU_DEVICE", "cuda")
FAMILIES = ("llama", "gemma3", "gpt2")
TASK_SETTINGS = ((4, 8),)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

_MODELS: dict = {}


def model(family: str, device: str, dtype: str = "float32"):
    """``tiny-FAMILY`` on ``device``, loaded once per session (read-only: tests must not modify it)."""
    from pear_lens.models import load_model

    key = (family, device, dtype)
    if key not in _MODELS:
        _MODELS[key] = load_model(f"tiny-{family}", device=device, dtype=dtype)
    return _MODELS[key]


def task():
    from pear_lens.proxy_task import ProxyTask

    return ProxyTask(settings=TASK_SETTINGS, seed=0)


def sync() -> None:
    if torch.device(DEVICE).type == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def test_models_load_onto_the_device():
    m = model("llama", DEVICE)
    assert {p.device.type for p in m.bridge.parameters()} == {torch.device(DEVICE).type}
    assert torch.device(m.cfg.device).type == torch.device(DEVICE).type
    import importlib.metadata as md

    versions = {d: md.version(d) for d in ("transformers", "transformer-lens")}
    name = torch.cuda.get_device_name() if torch.device(DEVICE).type == "cuda" else DEVICE
    print(f"\n[gpu] {name}, torch {torch.__version__} (CUDA {torch.version.cuda}), {versions}")


@pytest.mark.parametrize("difference", ["absolute", "relative"])
@pytest.mark.parametrize("family", FAMILIES)
def test_path_scores_equal_the_cpu_scores(family, difference):
    from pear_lens.mediation import score_heads

    cpu = score_heads(model(family, "cpu"), task(), method="path", difference=difference, progress=False)
    dev = score_heads(model(family, DEVICE), task(), method="path", difference=difference, progress=False)
    scale = float(cpu.scores.abs().max())
    diff = float((dev.scores - cpu.scores).abs().max())
    print(f"\n[gpu] path {family} {difference}: max |Δ score| {diff:.3g} (largest |score| {scale:.3g}), "
          f"clean metric {dev.clean_metric} vs {cpu.clean_metric}")
    assert torch.isfinite(dev.scores).all()
    torch.testing.assert_close(dev.scores, cpu.scores, rtol=1e-4, atol=1e-5 * max(scale, 1.0))
    assert dev.clean_metric == pytest.approx(cpu.clean_metric, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("positions", ["all", "end"])
@pytest.mark.parametrize("family", FAMILIES)
def test_activation_scores_equal_the_cpu_scores(family, positions):
    from pear_lens.mediation import score_heads

    kw = dict(method="activation", positions=positions, difference="absolute", progress=False)
    cpu = score_heads(model(family, "cpu"), task(), **kw)
    dev = score_heads(model(family, DEVICE), task(), **kw)
    scale = float(cpu.scores.abs().max())
    print(f"\n[gpu] activation/{positions} {family}: max |Δ score| "
          f"{float((dev.scores - cpu.scores).abs().max()):.3g} (largest |score| {scale:.3g})")
    torch.testing.assert_close(dev.scores, cpu.scores, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


HEADS = [(1, 3), (2, 2)]


def _train(family: str, device: str, precision: str):
    from pear_lens.reweight import train_coefficients
    from pear_lens.recipe import TrainConfig

    config = TrainConfig(steps=4, batch_size=4, micro_batch=2, n=8, lr=0.05, precision=precision)
    return train_coefficients(model(family, device), HEADS, config, progress=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_on_the_device(precision):
    cpu = _train("llama", "cpu", "fp32")
    dev = _train("llama", DEVICE, precision)
    moved = float((dev.tau - 1).abs().max())
    diff = float((dev.tau - cpu.tau).abs().max())
    print(f"\n[gpu] train llama {precision} on {DEVICE}: τ {[round(float(t), 5) for t in dev.tau]}, "
          f"max |τ - 1| {moved:.3g}, max |τ - τ(cpu fp32)| {diff:.3g}, "
          f"losses {[round(x, 5) for x in dev.loss_curve]}")
    assert dev.tau.device.type == "cpu" or dev.tau.device.type == torch.device(DEVICE).type
    assert torch.isfinite(dev.tau).all() and all(math.isfinite(x) for x in dev.loss_curve)
    assert moved > 1e-3  # τ left the identity start
    assert torch.equal(dev.tau_trajectory[0].cpu(), torch.ones(len(HEADS)))
    if precision == "fp32":
        # the same batches and the same arithmetic up to rounding: the same τ
        torch.testing.assert_close(dev.tau.cpu(), cpu.tau, atol=1e-4, rtol=0)
        assert dev.loss_curve[0] == pytest.approx(cpu.loss_curve[0], rel=1e-5)
    else:
        # bf16 autocast rounds the forward: the first loss (τ = 1 everywhere) is close, not equal
        assert dev.loss_curve[0] == pytest.approx(cpu.loss_curve[0], rel=2e-2)


@pytest.mark.parametrize("family", FAMILIES)
def test_fold_verifies_on_the_device(family):
    from pear_lens.verified_fold import verify_fold
    from pear_lens.artifact import Artifact
    from pear_lens.convert import fold_into_hf

    m = model(family, DEVICE)
    art = Artifact(heads=[(0, 1), (1, 3), (2, 0)], tau=torch.tensor([0.6, 1.3, 0.0]), base_model=m.describe())
    folded = fold_into_hf(m.fresh_hf(), art)  # checks the fingerprint of the device weights too
    assert next(folded.parameters()).device.type == torch.device(DEVICE).type
    scale: dict = {}
    diffs = verify_fold(m, folded, art, scale=scale)
    print(f"\n[gpu] fold {family}: {diffs}, largest |logit| {scale['logit_scale']:.3g}")
    # `pear-lens apply`'s default tolerance: 1e-4 of the largest |logit|
    assert max(diffs.values()) <= 1e-4 * scale["logit_scale"]


def test_apply_writes_a_folded_model_from_the_device(tmp_path):
    from pear_lens.commands.apply import ApplyConfig, apply
    from pear_lens.artifact import Artifact

    m = model("llama", DEVICE)
    Artifact(heads=[(1, 0), (2, 3)], tau=torch.tensor([0.5, 1.5]), base_model=m.describe()).save(tmp_path / "run")
    note = apply(ApplyConfig(run_dir=tmp_path / "run", out=tmp_path / "hf"), m)
    # apply refuses to write past its tolerance; the note records what it measured
    assert note["verified_max_abs_logit_diff"] <= 1e-4 * note["verification"]["logit_scale"]
    assert (tmp_path / "hf" / "config.json").is_file()


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_discovery_runs_on_the_device(family):
    from pear_lens.agreement import spearman
    from pear_lens.mediation import score_heads
    from pear_lens.proxy_task import ProxyTask

    half = model(family, DEVICE, "bfloat16")
    assert {p.dtype for p in half.bridge.original_model.parameters()} == {torch.bfloat16}
    t = ProxyTask(settings=((8, 16),), seed=0)
    full = score_heads(model(family, DEVICE), t, difference="absolute", progress=False)
    low = score_heads(half, t, difference="absolute", progress=False)
    rho = spearman(low.scores, full.scores)
    top = len(set(low.top_k(3)) & set(full.top_k(3)))
    print(f"\n[gpu] bf16 vs fp32 path scores {family} on {DEVICE}: Spearman {rho:.4f}, top-3 overlap {top}/3, "
          f"max |Δ| {float((low.scores - full.scores).abs().max()):.3g} "
          f"(largest |score| {float(full.scores.abs().max()):.3g})")
    assert low.scores.shape == full.scores.shape and torch.isfinite(low.scores).all()


def test_path_patching_timing():
    """Not a check: prints the path scan's wall time on the device and on the CPU (reference settings)."""
    from pear_lens.mediation import score_heads
    from pear_lens.proxy_task import ProxyTask

    t = ProxyTask(seed=0)  # the four reference settings
    times = {}
    for device in (DEVICE, "cpu"):
        m = model("llama", device)
        score_heads(m, ProxyTask(settings=((4, 8),), seed=0), progress=False)  # warm-up
        best = math.inf
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            score_heads(m, t, progress=False)
            sync()
            best = min(best, time.perf_counter() - t0)
        times[device] = best
    print(f"\n[gpu] path scan of tiny-llama, reference settings, best of 3: "
          + ", ".join(f"{d} {s * 1e3:.1f} ms" for d, s in times.items())
          + f" (torch threads {torch.get_num_threads()})")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_every_command_runs_its_model_on_the_device_and_records_it(tmp_path, dtype):
    """discover → train → ablate → atlas → apply → eval, each given --device (and discover --dtype, which the
    later stages follow): every stage records the device and dtype it ran in, and none calls the weights changed."""
    import json

    from pear_lens import constants
    from pear_lens.commands.cli import main
    from pear_lens.runs import read_stages

    run, hf, out = tmp_path / "run", tmp_path / "hf", tmp_path / "eval"
    on = ["--device", DEVICE]
    train = ["--steps", "2", "--batch-size", "4", "--micro-batch", "2", "--n", "8", "--quiet", "--no-png", *on]
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--dtype", dtype,
                 "--allow-weak-copy-task", "--quiet", "--no-png", *on]) == 0
    assert main(["train", str(run), "--top-k", "2", *train]) == 0
    assert main(["ablate", str(run), "--k", "1,2", "--control-draws", "1", "--control-steps", "2", "--n-eval", "4",
                 *train]) == 0
    assert main(["atlas", str(run), "--detectors", "previous_token,sink", "--quiet", "--no-png", *on]) == 0
    assert main(["apply", str(run), "--out", str(hf), *on]) == 0
    assert main(["eval", "--task", "kv", "--n", "2", "--n-context", "2", "--artifact", str(run), "--out", str(out),
                 "--quiet", "--batch-size", "8", *on]) == 0
    stages = read_stages(run)
    assert set(stages) == {"discover", "train", "ablate", "atlas"}
    assert {torch.device(s["device"]).type for s in stages.values()} == {torch.device(DEVICE).type}
    assert {s["dtype"] for s in stages.values()} == {dtype}
    note = json.loads((hf / constants.PEAR_NOTE_JSON).read_text())
    ran = json.loads((out / constants.EVAL_JSON).read_text())["ran_on"]
    for where in (note["ran_on"], ran):
        assert torch.device(where["device"]).type == torch.device(DEVICE).type and where["dtype"] == dtype
    print(f"\n[gpu] every stage on {DEVICE} in {dtype}: {stages}")
