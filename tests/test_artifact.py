"""The artifact folder: round trip, and every kind of damage refused with a message that names the fix."""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pear_lens import constants
from pear_lens.artifact import Artifact, load_artifact
from pear_lens.convert import fold_into_hf
from pear_lens.errors import PearLensError
from tests.conftest import tiny


def make_artifact(model, heads=((2, 1), (0, 3)), tau=(0.75, 1.25)) -> Artifact:
    return Artifact(heads=list(heads), tau=torch.tensor(tau), base_model=model.describe(),
                    scores=[0.5, 0.25], ranks=[1, 2], training={"steps": 60}, discovery={"method": "path"})


@pytest.fixture
def saved(tmp_path) -> Path:
    make_artifact(tiny("llama")).save(tmp_path)
    return tmp_path


def rewrite(run_dir: Path, *, meta=None, tau=None, heads=None) -> None:
    """Tamper consistently: edit the tensors and/or JSON and fix the recorded SHA-256, so only the
    check under test can catch it."""
    coef = run_dir / constants.COEFFICIENTS_SAFETENSORS
    tensors = load_file(str(coef))
    if tau is not None:
        tensors["tau"] = torch.tensor(tau, dtype=torch.float32)
    if heads is not None:
        tensors["heads"] = torch.tensor(heads, dtype=torch.int64)
    save_file(tensors, str(coef))
    data = json.loads((run_dir / constants.PEAR_JSON).read_text())
    for entry, t, h in zip(data["heads"], tensors["tau"].tolist(), tensors["heads"].tolist()):
        entry["tau"], (entry["layer"], entry["head"]) = t, h
    (meta or (lambda d: None))(data)
    data["coefficients_file"]["sha256"] = hashlib.sha256(coef.read_bytes()).hexdigest()
    (run_dir / constants.PEAR_JSON).write_text(json.dumps(data))


def test_round_trip(saved):
    model = tiny("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean artifact warns about nothing
        art = load_artifact(saved)
    assert art.heads == [(2, 1), (0, 3)]
    assert art.coefficients() == {(2, 1): 0.75, (0, 3): 1.25}
    assert art.fingerprint == model.fingerprint and art.base_model["hf_id"] == "pear-lens/tiny-llama"
    assert art.scores == [0.5, 0.25] and art.ranks == [1, 2]
    assert list(art.to_dataframe().columns) == ["layer", "head", "tau", "score", "rank"]
    data = json.loads((saved / constants.PEAR_JSON).read_text())
    assert data["format_version"] == constants.FORMAT_VERSION and data["pear_lens_version"]
    assert not list(saved.glob("*.pt")) and not list(saved.glob("*.pkl")) and not list(saved.glob(".*tmp*"))


def test_weights_of_another_model_are_refused(saved):
    other = tiny("qwen2").fresh_hf()
    with pytest.raises(PearLensError, match="not the weights this artifact was trained on.*load_model"):
        fold_into_hf(other, saved)
    with pytest.raises(PearLensError, match="the weights of tiny-qwen2 are not the weights"):
        load_artifact(saved, model=tiny("qwen2"))
    with pytest.raises(PearLensError, match="Qwen2ForCausalLM are not the weights"):
        load_artifact(saved, model=tiny("qwen2").fresh_hf())
    assert load_artifact(saved, model=tiny("llama")).heads == [(2, 1), (0, 3)]
    load_artifact(saved, model=tiny("llama").fresh_hf())


def test_non_finite_tau_is_refused(saved):
    rewrite(saved, tau=[math.nan, 1.0])
    with pytest.raises(PearLensError, match="not finite.*retrain"):
        load_artifact(saved)


def test_head_outside_the_model_is_refused(saved):
    rewrite(saved, heads=[[2, 1], [7, 0]])
    with pytest.raises(PearLensError, match=r"head \(7, 0\) is outside tiny-llama"):
        load_artifact(saved)


def test_truncated_coefficients_are_refused(saved):
    coef = saved / constants.COEFFICIENTS_SAFETENSORS
    coef.write_bytes(coef.read_bytes()[:-9])
    with pytest.raises(PearLensError, match="damaged.*truncated.*pear-lens train"):
        load_artifact(saved)


def test_unreadable_coefficients_are_refused_even_with_a_matching_checksum(saved):
    coef = saved / constants.COEFFICIENTS_SAFETENSORS
    coef.write_bytes(b"not a safetensors file")
    rewrite_sha_only(saved)
    with pytest.raises(PearLensError, match="unreadable"):
        load_artifact(saved)


def rewrite_sha_only(run_dir: Path) -> None:
    data = json.loads((run_dir / constants.PEAR_JSON).read_text())
    data["coefficients_file"]["sha256"] = hashlib.sha256(
        (run_dir / constants.COEFFICIENTS_SAFETENSORS).read_bytes()).hexdigest()
    (run_dir / constants.PEAR_JSON).write_text(json.dumps(data))


def test_json_and_tensors_that_disagree_are_refused(saved):
    data = json.loads((saved / constants.PEAR_JSON).read_text())
    data["heads"][0]["tau"] = 0.1
    (saved / constants.PEAR_JSON).write_text(json.dumps(data))
    with pytest.raises(PearLensError, match="τ differ"):
        load_artifact(saved)


@pytest.mark.parametrize("missing", [constants.PEAR_JSON, constants.COEFFICIENTS_SAFETENSORS])
def test_missing_files_are_refused(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(PearLensError, match="pear-lens train"):
        load_artifact(saved)


def test_corrupt_json_is_refused(saved):
    (saved / constants.PEAR_JSON).write_text('{"format_version": 1, "heads": [')
    with pytest.raises(PearLensError, match="not valid JSON"):
        load_artifact(saved)


def test_unknown_format_version_is_refused(saved):
    rewrite(saved, meta=lambda d: d.update(format_version=99))
    with pytest.raises(PearLensError, match="format version 99.*reads version 1"):
        load_artifact(saved)


def test_unknown_keys_only_warn(saved):
    def add(d):
        d["from_the_future"] = True
        d["heads"][0]["note"] = "hand-picked"
    rewrite(saved, meta=add)
    with pytest.warns(UserWarning) as record:
        art = load_artifact(saved)
    messages = " ".join(str(w.message) for w in record)
    assert "from_the_future" in messages and "note" in messages
    assert art.heads == [(2, 1), (0, 3)]


def test_inconsistent_artifacts_cannot_be_built():
    model = tiny("llama")
    with pytest.raises(PearLensError, match="duplicate"):
        make_artifact(model, heads=((1, 1), (1, 1)))
    with pytest.raises(PearLensError, match="τ of shape"):
        Artifact(heads=[(1, 1)], tau=torch.ones(2), base_model=model.describe())
    with pytest.raises(PearLensError, match="lacks"):
        Artifact(heads=[(1, 1)], tau=torch.ones(1), base_model={"name": "x"})
