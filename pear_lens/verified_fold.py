"""Fold an artifact into a fresh Hugging Face copy of its base model, verified before anything is written.

The artifact's base model is loaded as the hooked bridge (τ applied by hooks,
:func:`pear_lens.reweight.reweighted`) and as separate Hugging Face copies,
one of which :func:`pear_lens.convert.fold_into_hf` folds. The folded copy is
kept only if its logits equal the hooked bridge's (and an unfolded, pre-hooked
Hugging Face copy's) on held-out proxy sequences, so the folder
``from_pretrained`` loads is the model that was trained. ``pear-lens apply`` and ``pear-lens demo`` call
:func:`fold_verified` and :func:`save_folded`.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

from pear_lens import __version__, constants
from pear_lens.artifact import Artifact, load_artifact
from pear_lens.convert import (
    drop_gguf_quantizer,
    fold_into_hf,
    head_slice,
    output_projection,
    reweighted_hf,
)
from pear_lens.errors import PearLensError
from pear_lens.fingerprint import fingerprint
from pear_lens.io import atomic_write_json
from pear_lens.models.loaded import input_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pear_lens.models.loaded import LoadedModel

VERIFY_SEED = 7_919
"""Seed of the proxy sequences the fold is verified on (distinct from training seeds)."""


@contextlib.contextmanager
def attention_kernel(hf: "PreTrainedModel", implementation: str) -> Iterator[None]:
    """Run ``hf`` with another attention implementation (``eager``, ``sdpa``) for a while."""
    before = hf.config._attn_implementation
    hf.set_attn_implementation(implementation)
    try:
        yield
    finally:
        hf.set_attn_implementation(before)


@torch.no_grad()
def verify_fold(model: "LoadedModel", folded: "PreTrainedModel", artifact: Artifact,
                tokens: torch.Tensor | None = None, scale: dict[str, float] | None = None) -> dict[str, float]:
    """Max |logit difference| of ``folded`` against two unfolded references, on proxy sequences.

    ``vs_hooked_bridge``: the TransformerLens bridge with τ hooked (what was
    trained). The folded model runs with the bridge's attention kernel for the
    comparison, because eager and SDPA attention alone differ by ~1e-4 on
    SmolLM2's logits. ``vs_unfolded_hf``: an unfolded Hugging Face copy with τ
    applied by pre-hooks (:func:`pear_lens.convert.reweighted_hf`): the same
    kernels, so only the fold itself can differ. Degenerate (non-finite or constant) logits are refused:
    two equally broken models would compare equal. ``scale``, if given, receives ``logit_scale``, the
    hooked model's largest |logit| (the tolerance is relative to it).
    """
    from pear_lens.reweight import reweighted
    from pear_lens.proxy_task import ProxyTask

    if tokens is None:
        task = ProxyTask(settings=((4, 32),), min_token_id=2, seed=VERIFY_SEED)
        tokens = task.batches(model)[0].tokens
    with reweighted(model, artifact.heads, artifact.tau) as bridge:
        hooked = bridge(tokens).float()
    device_tokens = tokens.to(input_device(folded))
    with attention_kernel(folded, model.bridge.original_model.config._attn_implementation):
        as_bridge = folded(device_tokens).logits.float()
    unfolded = model.fresh_hf()
    with reweighted_hf(unfolded, artifact.coefficients()):
        reference = unfolded(device_tokens).logits.float()
    plain = folded(device_tokens).logits.float()
    where = f"{artifact.path}/{constants.PEAR_JSON}" if artifact.path else "the artifact"
    for name, logits in (("hooked bridge", hooked), ("folded model", as_bridge), ("folded model", plain),
                         ("unfolded re-weighted model", reference)):
        check_logits(logits, f"the {name}", where)
    diffs = {"vs_hooked_bridge": float((hooked - as_bridge.to(hooked.device)).abs().max()),
             "vs_unfolded_hf": float((reference - plain.to(reference.device)).abs().max())}
    if scale is not None:
        scale["logit_scale"] = float(hooked.abs().max())
    return diffs


def check_logits(logits: torch.Tensor, what: str, where: str) -> None:
    """Refuse degenerate logits: two equally broken models would otherwise pass the comparison."""
    if not bool(torch.isfinite(logits).all()):
        raise PearLensError(f"{what}'s logits are not finite with the τ of {where}; nothing was written: "
                            "retrain with `pear-lens train --overwrite`")
    if bool(((logits.amax(-1) - logits.amin(-1)) == 0).any()):
        raise PearLensError(f"{what}'s logits are constant over the vocabulary with the τ of {where} (the model "
                            "predicts nothing); nothing was written: retrain with `pear-lens train --overwrite`")


def changed_slices(model: "PreTrainedModel", artifact: Artifact) -> list[dict[str, Any]]:
    """Which parameter slice was multiplied by which τ (for the note beside the folded model)."""
    from pear_lens.convert import n_layers_heads

    _, n_heads = n_layers_heads(model)
    rows = []
    for (layer, head), tau in artifact.coefficients().items():
        weight, family = output_projection(model, layer)
        view = head_slice(weight, family, head, n_heads)
        d = view.shape[1] if family.layout == "linear" else view.shape[0]
        span = f"{head * d}:{(head + 1) * d}"
        rows.append({"layer": layer, "head": head, "tau": tau,
                     "parameter": family.o_proj.format(layer=layer) + ".weight",
                     "slice": f"[:, {span}]" if family.layout == "linear" else f"[{span}, :]"})
    return rows


FOLD_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
"""The default tolerance of the fold's check per dtype of the weights: the folded and the hooked model round
differently (a scaled weight vs a scaled activation), by about the dtype's precision (on the tiny models 4e-7 of
the largest |logit| in float32, 1e-3 in float16, 9e-3 in bfloat16); a wrong head layout moves logits by |τ - 1|."""


def check_tolerance(tolerance: float) -> None:
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise PearLensError(f"tolerance must be a positive number (a relative logit difference such as 1e-4), "
                            f"got {tolerance!r} (tolerance= in Python, --tolerance on the command line)")


def fold_verified(run_dir: Path, tolerance: float | None, model: "LoadedModel | None" = None, *,
                  artifact: "Artifact | None" = None, device: str | None = None, dtype: str | None = None,
                  device_map: "str | dict[str, Any] | None" = None,
                  ) -> tuple["PreTrainedModel", dict[str, Any], "LoadedModel"]:
    """Fold the artifact of ``run_dir`` into a fresh Hugging Face copy and verify it; nothing is written.

    ``artifact``: that run's artifact if already loaded (read from ``run_dir`` otherwise). ``model``: its base
    model if already loaded, else loaded on ``device`` (default CPU) or over ``device_map``'s devices (the folded
    copy then spreads over them too) in ``dtype`` (default: the dtype the
    artifact's training loaded it in, float32 for artifacts that record none); its fingerprint is compared as
    the training computed it (:meth:`~pear_lens.models.loaded.LoadedModel.fingerprint_as`). ``tolerance``: None
    for the loaded dtype's :data:`FOLD_TOLERANCE`."""
    from pear_lens.models.loaded import load_model

    if tolerance is not None:
        check_tolerance(tolerance)
    artifact = artifact or load_artifact(run_dir)
    recorded = artifact.base_model.get("dtype")
    model = model or load_model(artifact.base_model["name"], dtype=dtype or recorded or "float32",
                                device_map=device_map, device=device if device_map is not None else device or "cpu")
    artifact.check_fingerprint(model.fingerprint_as(recorded or "float32"), what=f"the weights of {model.name}")
    tolerance = FOLD_TOLERANCE.get(model.dtype, FOLD_TOLERANCE["float32"]) if tolerance is None else tolerance
    hf = model.fresh_hf()
    fold_into_hf(hf, artifact)
    measured: dict[str, float] = {}
    diffs = verify_fold(model, hf, artifact, scale=measured)
    scale = measured["logit_scale"]
    worst = max(diffs.values())
    relative = worst / scale
    if not relative <= tolerance:
        raise PearLensError(
            f"the folded model's logits differ from the unfolded re-weighting by {diffs} (relative "
            f"{relative:.3g} of the largest |logit| {scale:.3g}) > tolerance {tolerance:g} (--tolerance); "
            "nothing was written. "
            f"Is {model.model_type} laid out as pear_lens.families says?"
        )
    note = {
        "kind": "pear_lens folded model",
        "pear_lens_version": __version__,
        "what": "each listed head's output is multiplied by τ, folded into its output-projection slice; "
                "nothing else changed (same architecture, parameter count and speed)",
        "base_model": artifact.base_model,
        "folded_fingerprint": fingerprint(hf),
        "artifact": str(Path(run_dir).resolve()),
        "changed": changed_slices(hf, artifact),
        "verified_max_abs_logit_diff": worst,
        "verified_max_rel_logit_diff": relative,
        "verification": {**diffs, "logit_scale": scale, "tokens": "4 proxy sequences of 64 tokens, fp32",
                         "tolerance": tolerance, "tolerance_is": "relative to the largest |logit|"},
        "load_with": "transformers.AutoModelForCausalLM.from_pretrained(<this folder>)",
        "ran_on": model.placement(),  # where the fold was verified, and the dtype of the folded weights
    }
    drop_gguf_quantizer(hf)
    return hf, note, model


def save_folded(folder: Path, hf: "PreTrainedModel", tokenizer: Any, note: dict[str, Any]) -> None:
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    atomic_write_json(Path(folder) / constants.PEAR_NOTE_JSON, note)
