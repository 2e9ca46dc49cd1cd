"""Shared fixtures: one seed, tiny models (asserted tiny) cached per session."""
from __future__ import annotations

import functools

import pytest
import torch


@pytest.fixture
def seed() -> int:
    """The one seed of the test suite; also seeds torch's global generator."""
    torch.manual_seed(0)
    return 0


@functools.lru_cache(maxsize=None)
def _tiny(family: str):
    from pear_lens.models import load_model

    model = load_model(f"tiny-{family}")
    assert sum(p.numel() for p in model.bridge.parameters()) < 500_000, "tiny models must stay tiny"
    return model


@pytest.fixture
def tiny():
    """``tiny("llama")`` → the cached tiny LoadedModel of that family (hooks are context-scoped)."""
    return _tiny
