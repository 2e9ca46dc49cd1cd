from __future__ import annotations

import pytest
import torch

from pear_lens import hooks


def test_every_hook_name_exists_in_the_bridge(tiny_model):
    available = set(tiny_model.bridge.hook_dict)
    missing = [name for name in hooks.all_used(tiny_model.n_layers) if name not in available]
    assert not missing, f"{tiny_model.name}: {missing}"


def test_hook_z_has_one_slice_per_query_head(tiny_model):
    shapes = {}

    def record(t, hook):
        shapes["z"] = tuple(t.shape)

    tiny_model.bridge.run_with_hooks(torch.randint(4, 100, (2, 5)), fwd_hooks=[(hooks.z(1), record)])
    assert shapes["z"][:3] == (2, 5, tiny_model.n_heads)


@pytest.mark.slow
def test_hook_names_on_smollm2(smol):
    available = set(smol.bridge.hook_dict)
    assert all(name in available for name in hooks.all_used(smol.n_layers))
