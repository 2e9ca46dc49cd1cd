"""Acceptance tests on the real default model, SmolLM2-135M-Instruct (slow; CI runs them)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.agreement import spearman
from pear_lens.mediation import activation, attribution, path
from pear_lens.mediation.base import Ablation, Positions
from pear_lens.metrics import Metric
from pear_lens.proxy_task import ProxyTask

pytestmark = pytest.mark.slow


class _Bar:
    def update(self, n=1):
        pass


def test_discover_default_run_on_smollm2(tmp_path, smol):
    out = tmp_path / "smol"
    assert main(["discover", "--model", "smollm2-135m-instruct", "--out", str(out), "--quiet"]) == 0
    df = pd.read_csv(out / constants.HEAD_SCORES_CSV)
    assert len(df) == 270 and df["score"].notna().all()
    assert (out / constants.HEATMAP_HTML).stat().st_size > 1000
    assert (out / constants.HEATMAP_PNG).stat().st_size > 1000
    meta = json.loads((out / constants.DISCOVERY_JSON).read_text())
    assert meta["model"]["fingerprint"] == smol.fingerprint
    assert meta["scores"]["task"]["settings"] == [[20, 50], [40, 25], [80, 15], [100, 10]]
    # the copy task is solved in context: the clean metric is large and positive
    assert min(meta["scores"]["clean_metric"]) > 5


def _subset_check(setting_fn, fast_scores, model, task, heads, *extra, tol=1e-4):
    (batch,) = task.batches(model)
    scan = setting_fn(model, batch, Metric.LOGIT_MINUS_MEAN, Ablation.MEAN, *extra, 0, _Bar(), heads=heads)
    plain, clean = scan.patched, scan.clean
    idx = tuple(torch.tensor(heads).T)
    plain_rel = plain[idx].double() / clean - 1  # in float64: π̃/π − 1 cancels most digits of a float32 ratio
    assert fast_scores.clean_metric[0] == pytest.approx(clean, rel=1e-5)
    diff = (fast_scores.scores[idx].double() - plain_rel).abs().max() / plain_rel.abs().max()
    assert diff <= tol, f"max relative difference {diff:.2e}"


def test_fast_path_scan_is_exact_on_smollm2(smol):
    task = ProxyTask(settings=((6, 12),), seed=5)
    fast = path.path_patching(smol, task, progress=False)
    heads = sorted(set(fast.top_k(3)) | {(0, 0), (10, 4), (20, 8), (29, 1)})
    _subset_check(path.setting_plain, fast, smol, task, heads)


def test_fast_activation_scan_is_exact_on_smollm2(smol):
    task = ProxyTask(settings=((6, 12),), seed=5)
    fast = activation.activation_patching(smol, task, progress=False)
    _subset_check(activation.setting_plain, fast, smol, task, [(0, 3), (14, 5), (29, 8)], Positions.ALL)
    approx = attribution.attribution_patching(smol, task, progress=False)
    rho = spearman(fast.scores, approx.scores)
    assert rho > 0.3, f"attribution vs exact activation Spearman {rho:.2f}"


def test_cached_end_activation_scan_is_exact_on_smollm2():
    # positions=end runs one-token steps on the clean key-value cache (GQA, RoPE, transformers' cache object).
    # In float64: patching one position moves π by ~1e-3 of itself, close to float32 rounding of π (the
    # two implementations differ by ~3e-4 of the largest score there), while float64 leaves only the method.
    from pear_lens.models import load_model

    model = load_model("smollm2-135m-instruct")  # a copy of its own: the session's model stays float32
    model.bridge.to(torch.float64)
    task = ProxyTask(settings=((6, 12),), seed=5)
    fast = activation.activation_patching(model, task, progress=False,
                                          options=activation.ActivationOptions(positions=Positions.END))
    _subset_check(activation.setting_plain, fast, model, task, [(0, 3), (14, 5), (28, 2), (29, 8)], Positions.END,
                  tol=1e-6)
