"""Fold learned head coefficients into a plain Hugging Face model.

A head's output enters the residual stream through the attention output
projection, whose input is the head-major concatenation of the per-query-head
outputs. Multiplying head ``h`` by ``τ`` is therefore the same as multiplying
the ``h``-th ``d_head``-wide slice of the projection's input dimension by
``τ``: the folded model has the same architecture, parameter count and speed
as the original.

This module depends only on torch, transformers, safetensors and the standard
library, plus pear_lens's own pure-Python modules (the family table, the
artifact reader, the error type), which keep one definition of each rule rather
than a second copy here; ``tests/test_convert.py`` imports it with
TransformerLens blocked.
"""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import torch

from pear_lens import __version__, constants
from pear_lens.errors import PearLensError
from pear_lens.families import Family, family_for
from pear_lens.fingerprint import fingerprint
from pear_lens.heads import Head

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pear_lens.artifact import Artifact



def _get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise PearLensError(
            f"{type(model).__name__} has no module {path!r}; is this a causal LM of the family "
            "its config claims? (pear_lens.families lists the expected module paths)"
        ) from None


def output_projection(model: "PreTrainedModel", layer: int) -> tuple[torch.Tensor, Family]:
    """The weight of layer ``layer``'s attention output projection, and its family."""
    family = family_for(model.config.model_type)
    module = _get_module(model, family.o_proj.format(layer=layer))
    return module.weight, family


def head_slice(weight: torch.Tensor, family: Family, head: int, n_heads: int) -> torch.Tensor:
    """The view of ``weight`` that multiplies query head ``head``'s output."""
    in_dim = weight.shape[1] if family.layout == "linear" else weight.shape[0]
    if in_dim % n_heads:
        raise PearLensError(f"projection input width {in_dim} is not divisible by {n_heads} heads")
    d_head = in_dim // n_heads
    cols = slice(head * d_head, (head + 1) * d_head)
    return weight[:, cols] if family.layout == "linear" else weight[cols, :]


def n_layers_heads(model: "PreTrainedModel") -> tuple[int, int]:
    cfg = getattr(model.config, "text_config", None) or model.config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


@torch.no_grad()
def fold_coefficients(model: "PreTrainedModel", coefficients: Mapping[Head, float]) -> "PreTrainedModel":
    """Scale each ``(layer, head)``'s output-projection slice by its coefficient, in place."""
    from pear_lens.artifact import check_tau

    n_layers, n_heads = n_layers_heads(model)
    for (layer, head), tau in coefficients.items():
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise PearLensError(
                f"head ({layer}, {head}) is outside this model ({n_layers} layers × {n_heads} heads)"
            )
        tau = float(tau)
        check_tau([tau], "fold_coefficients", [(layer, head)])
        weight, family = output_projection(model, layer)
        head_slice(weight, family, head, n_heads).mul_(tau)
    return model


@contextlib.contextmanager
def reweighted_hf(model: "PreTrainedModel", coefficients: Mapping[Head, float]) -> Iterator["PreTrainedModel"]:
    """Apply τ to a plain Hugging Face model without changing its weights (forward pre-hooks).

    Each output projection's input is scaled head by head on the fly: the
    unfolded equivalent of :func:`fold_into_hf`, with its overhead. Useful to
    try coefficients without TransformerLens, and as an independent check of
    the fold (same model, same attention kernels, only the fold differs).
    """
    n_layers, n_heads = n_layers_heads(model)
    family = family_for(model.config.model_type)
    scales: dict[int, torch.Tensor] = {}
    for (layer, head), tau in coefficients.items():
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise PearLensError(f"head ({layer}, {head}) is outside this model ({n_layers} layers × {n_heads} heads)")
        scales.setdefault(layer, torch.ones(n_heads))[head] = float(tau)

    def pre_hook(scale: torch.Tensor):
        def hook(module, args):
            x = args[0]  # [..., n_heads * d_head], head-major, for every family's projection
            x = (x.unflatten(-1, (n_heads, -1)) * scale.to(x.device, x.dtype)[:, None]).flatten(-2)
            return (x, *args[1:])
        return hook

    handles = [_get_module(model, family.o_proj.format(layer=layer)).register_forward_pre_hook(pre_hook(scale))
               for layer, scale in scales.items()]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def drop_gguf_quantizer(model: "PreTrainedModel") -> "PreTrainedModel":
    """Forget that the weights came from a GGUF file (they are plain floats once loaded).

    Otherwise ``save_pretrained`` writes a GGUF ``quantization_config`` that
    ``from_pretrained`` cannot honour for a safetensors folder.
    """
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model


def _is_training_result(x: Any) -> bool:
    """Whether ``x`` is a :class:`pear_lens.reweight.TrainResult` (or has its ``heads``, ``tau`` and base
    ``fingerprint``). Duck-typed: this module sits below :mod:`pear_lens.reweight` and may not import it."""
    return isinstance(getattr(x, "fingerprint", None), str) and hasattr(x, "heads") and hasattr(x, "tau")


def _as_artifact(artifact: "Artifact | str | os.PathLike | Mapping[Head, float] | Any",
                 ) -> tuple[dict[Head, float], Any]:
    """``(coefficients, their source or None)`` from a run folder, a loaded artifact, a training result
    or ``{(layer, head): τ}``; the source has the ``fingerprint`` of the weights τ were trained on."""
    from pear_lens.artifact import Artifact, load_artifact

    if isinstance(artifact, (str, os.PathLike)):
        artifact = load_artifact(artifact)
    if isinstance(artifact, Artifact):
        return artifact.coefficients(), artifact
    if _is_training_result(artifact):
        heads = [(int(l), int(h)) for l, h in artifact.heads]
        tau = [float(t) for t in artifact.tau]
        if len(heads) != len(tau) or len(set(heads)) != len(heads):
            raise PearLensError(f"the training result's heads {heads} and its {len(tau)} τ do not pair up, one τ "
                                "per distinct head; retrain with pear_lens.train_coefficients")
        return dict(zip(heads, tau)), artifact
    if isinstance(artifact, Mapping):
        return {(int(l), int(h)): float(t) for (l, h), t in artifact.items()}, None
    raise PearLensError(
        f"expected a run folder, a pear_lens Artifact, a TrainResult (from pear_lens.train_coefficients) or a "
        f"{{(layer, head): tau}} mapping, got {type(artifact).__name__}"
    )


def _check_trained_on(source: Any, model: "PreTrainedModel") -> None:
    """Refuse weights other than those ``source`` (an Artifact or a training result) was trained on."""
    from pear_lens.artifact import Artifact

    what, got = f"the weights of this {type(model).__name__}", fingerprint(model)
    if isinstance(source, Artifact):
        source.check_fingerprint(got, what=what)
    elif got != source.fingerprint:
        name = getattr(source, "model", "its base model")
        raise PearLensError(
            f"{what} are not the weights this training result was trained on (expected fingerprint "
            f"{source.fingerprint} of {name}; got {got}). Fold into a fresh copy of the original float32 weights "
            f"(`pear_lens.load_model({name!r}).fresh_hf()`); an already folded copy cannot be folded again."
        )


def _refuse_hooked(model: Any) -> None:
    """Refuse a pear_lens LoadedModel or a TransformerLens model: folding edits weights in place, and such a
    model would keep the fingerprint (and the name) of the original weights it no longer has."""
    bases = {cls.__name__ for cls in type(model).__mro__}
    if hasattr(model, "bridge") and hasattr(model, "fresh_hf"):  # a LoadedModel (duck-typed: models sits above)
        what = "a pear_lens LoadedModel"
    elif bases & {"TransformerBridge", "HookedTransformer"}:
        what = f"a TransformerLens {type(model).__name__}"
    else:
        return
    raise PearLensError(
        f"fold_into_hf folds into a Hugging Face model, got {what}; fold into a fresh Hugging Face copy instead, "
        "e.g. `pear_lens.fold_into_hf(loaded.fresh_hf(), result)` for a LoadedModel `loaded` (to try τ on the "
        "hooked model without changing it, use `pear_lens.reweighted`)"
    )


def fold_into_hf(
    model: "PreTrainedModel",
    artifact: "Artifact | str | os.PathLike | Mapping[Head, float] | Any",
    *,
    check_fingerprint: bool = True,
) -> "PreTrainedModel":
    """Fold learned τ into ``model``'s output projections, in place, and return it.

    ``model`` is a Hugging Face model (for a pear_lens ``LoadedModel``: its ``.fresh_hf()``; the
    LoadedModel itself and TransformerLens models are refused). ``artifact`` is a run folder written by
    ``pear-lens train``, a loaded :class:`~pear_lens.artifact.Artifact`, a
    :class:`~pear_lens.reweight.TrainResult` from :func:`~pear_lens.reweight.train_coefficients`, or a
    plain ``{(layer, head): τ}`` mapping (which carries no fingerprint, so only the already-folded check
    applies). The weights must be those the coefficients were trained on: a
    foreign or already folded model is refused. The folded model records what
    was folded in ``model.config.pear_lens_folded`` (saved in ``config.json``).
    """
    _refuse_hooked(model)
    coefficients, art = _as_artifact(artifact)
    family_for(model.config.model_type)  # an unsupported family fails before the fingerprint is hashed
    previous = getattr(model.config, constants.PEAR_CONFIG_KEY, None)
    if previous:
        raise PearLensError(
            f"this model already has PEAR coefficients folded in ({previous.get('heads')}); folding twice "
            "would apply τ twice. Fold into the original weights instead (for a registry model: "
            "`pear_lens.load_model(name).fresh_hf()`)."
        )
    if art is not None and check_fingerprint:
        _check_trained_on(art, model)
    fold_coefficients(model, coefficients)
    setattr(model.config, constants.PEAR_CONFIG_KEY, {
        "pear_lens_version": __version__,
        "heads": [[l, h] for l, h in coefficients],
        "tau": list(coefficients.values()),
        "base_fingerprint": art.fingerprint if art is not None else None,
    })
    return model
