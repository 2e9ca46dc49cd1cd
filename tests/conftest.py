"""Shared fixtures. Importing this module switches on jaxtyping + beartype runtime
checks for every pear_lens function, so shape mistakes fail the tests."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail fast instead of retrying
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jaxtyping  # noqa: E402

_hook = jaxtyping.install_import_hook("pear_lens", "beartype.beartype")

import pytest  # noqa: E402
import torch  # noqa: E402

from pear_lens.models import TINY_FAMILIES, load_model  # noqa: E402

SEED = 0
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str, folder: Path = SCRIPTS):
    """``scripts/NAME.py`` (or ``FOLDER/NAME.py``) imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def seed():
    """One seed for every test: torch's global RNG starts from the same state."""
    torch.manual_seed(SEED)
    return SEED


_TINY_CACHE: dict = {}


def tiny(family: str):
    """A tiny model, loaded once per test session (read-only: tests must not modify it)."""
    if family not in _TINY_CACHE:
        model = load_model(f"tiny-{family}")
        assert sum(p.numel() for p in model.bridge.parameters()) < 500_000, "tiny models must stay tiny"
        _TINY_CACHE[family] = model
    return _TINY_CACHE[family]


@pytest.fixture(params=TINY_FAMILIES)
def tiny_model(request):
    return tiny(request.param)


@pytest.fixture(scope="session")
def smol():
    """SmolLM2-135M-Instruct, the real default model (acceptance tests only)."""
    return load_model("smollm2-135m-instruct")


def plain_transformers_logits(folder: Path, tokens: "torch.Tensor", tmp_path: Path) -> dict:
    """Logits of ``folder`` loaded by plain transformers in another process (no pear_lens imported),
    with the eager attention kernel (the bridge's) and with transformers' default kernel."""
    import subprocess
    import sys
    import textwrap

    from safetensors.torch import load_file, save_file

    save_file({"tokens": tokens}, str(tmp_path / "in.safetensors"))
    script = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM
        tokens = load_file({str(tmp_path / 'in.safetensors')!r})["tokens"]
        out = {{}}
        for kernel in ("eager", None):
            kwargs = {{"attn_implementation": kernel}} if kernel else {{}}
            model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, **kwargs).eval()
            with torch.no_grad():
                out[kernel or "default"] = model(tokens).logits.contiguous()
        save_file(out, {str(tmp_path / 'out.safetensors')!r})
        assert not any(m.startswith("pear_lens") for m in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return load_file(str(tmp_path / "out.safetensors"))


def check_real_fold(model, heads, tau, tmp_path: Path, tol: float, seq: int = 40) -> dict:
    """Fold ``tau`` into a real model and check it three ways: against the hooked bridge and the unfolded
    model (``verify_fold``), through ``apply``'s verified folder, and in plain transformers in another process
    (eager and default attention). Returns the plain-transformers logits and the hooked ones for more checks."""
    import json

    from pear_lens import constants
    from pear_lens.artifact import Artifact
    from pear_lens.commands.apply import ApplyConfig, apply
    from pear_lens.verified_fold import verify_fold
    from pear_lens.convert import fold_into_hf
    from pear_lens.reweight import reweighted

    art = Artifact(heads=heads, tau=torch.tensor(tau), base_model=model.describe())
    folded = fold_into_hf(model.fresh_hf(), art)
    diffs = verify_fold(model, folded, art)
    assert diffs["vs_hooked_bridge"] <= tol and diffs["vs_unfolded_hf"] <= tol
    del folded

    art.save(tmp_path / "run")
    note = apply(ApplyConfig(run_dir=tmp_path / "run", out=tmp_path / "hf"), model)
    assert note["verified_max_abs_logit_diff"] <= tol
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF origin is not carried into the folder
    assert config[constants.PEAR_CONFIG_KEY]["heads"] == [list(h) for h in heads]

    tokens = torch.randint(2, min(model.d_vocab, 10_000), (2, seq), generator=torch.Generator().manual_seed(3))
    out = plain_transformers_logits(tmp_path / "hf", tokens, tmp_path)
    with torch.no_grad(), reweighted(model, heads, tau) as bridge:
        hooked = bridge(tokens)
    assert (out["eager"] - hooked).abs().max() <= tol
    # SDPA and eager attention differ by ~1e-4 on their own; the default-kernel model is still the same model
    assert (out["default"] - hooked).abs().max() <= 10 * tol
    return {"plain_transformers": out, "hooked": hooked, "tokens": tokens, "config": config}
