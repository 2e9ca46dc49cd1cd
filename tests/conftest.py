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


def load_script(name: str):
    """``scripts/NAME.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
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
