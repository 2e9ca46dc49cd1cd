"""The models compared side by side: each condition is a recipe for a fresh Hugging Face model.

A condition is the base model with a ``{(layer, head): τ}`` mapping folded into
its output projections (:func:`pear_lens.convert.fold_coefficients`): empty
for the baseline, the learned PEAR coefficients, coefficients learned for
randomly chosen heads (the control that rules out "any re-weighting helps"),
or one scalar on every head (uniform scaling). How the mapping was obtained
(seed, training budget, artifact) travels along as metadata and ends up in the
results.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pear_lens import constants
from pear_lens.convert import fold_coefficients
from pear_lens.errors import PearLensError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pear_lens.models import LoadedModel

Head = tuple[int, int]
BASELINE = "baseline"


class ConditionKind(str, Enum):
    BASELINE = "baseline"
    """The unmodified model."""
    PEAR = "pear"
    """Learned coefficients on the discovered suppression heads."""
    RANDOM_K = "random-k"
    """Learned coefficients on K randomly chosen heads (control)."""
    UNIFORM = "uniform"
    """One scalar on every head (control)."""
    CUSTOM = "custom"
    """Any other mapping."""


@dataclass(frozen=True)
class Condition:
    """A labelled way to obtain a fresh model, plus what went into it."""

    label: str
    kind: ConditionKind
    build: Callable[[], "PreTrainedModel"] = field(repr=False, compare=False)
    """Returns a new Hugging Face model each call (never a booted bridge's model)."""
    coefficients: Mapping[Head, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for ``eval.json``."""
        taus = list(self.coefficients.values())
        return {"label": self.label, "kind": self.kind.value, "n_heads": len(taus),
                "heads": [[l, h, float(t)] for (l, h), t in sorted(self.coefficients.items())],
                "tau_mean": (sum(taus) / len(taus)) if taus else None, **dict(self.metadata)}


def baseline(model: "LoadedModel") -> Condition:
    return Condition(BASELINE, ConditionKind.BASELINE, model.fresh_hf)


def folded(model: "LoadedModel", coefficients: Mapping[Head, float], label: str,
           kind: ConditionKind = ConditionKind.CUSTOM, **metadata: Any) -> Condition:
    """The base model with ``coefficients`` folded in; ``metadata`` (seed, training budget, ...) is recorded."""
    if label == BASELINE and coefficients:
        raise PearLensError(f"the label {BASELINE!r} is reserved for the unmodified model")
    coefficients = {(int(l), int(h)): float(t) for (l, h), t in coefficients.items()}
    for (l, h) in coefficients:
        if not (0 <= l < model.n_layers and 0 <= h < model.n_heads):
            raise PearLensError(f"condition {label!r}: head ({l}, {h}) is outside {model.name} "
                                f"({model.n_layers} layers × {model.n_heads} heads)")

    def build() -> "PreTrainedModel":
        return fold_coefficients(model.fresh_hf(), coefficients)

    return Condition(label, kind, build, coefficients, dict(metadata))


def uniform(model: "LoadedModel", tau: float, label: str | None = None) -> Condition:
    """Every head of every layer scaled by the same ``tau``."""
    heads = {(l, h): tau for l in range(model.n_layers) for h in range(model.n_heads)}
    return folded(model, heads, label or f"uniform τ={tau:g}", ConditionKind.UNIFORM, tau=tau)


def random_heads(n_layers: int, n_heads: int, k: int, seed: int, exclude: Sequence[Head] = ()) -> list[Head]:
    """``k`` distinct heads drawn uniformly (seeded), optionally avoiding ``exclude`` (e.g. the PEAR heads)."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(map(tuple, exclude))]
    if not 1 <= k <= len(pool):
        raise PearLensError(f"cannot draw {k} random heads from {len(pool)} available")
    return sorted(random.Random(seed).sample(pool, k))


def random_k(model: "LoadedModel", coefficients: Mapping[Head, float], seed: int, label: str | None = None,
             **metadata: Any) -> Condition:
    """The random-K control for one seed, from coefficients trained on :func:`random_heads`.

    Put a reduced training budget in ``label`` (e.g. ``"random-K seed 0 (20 steps)"``) so tables state it.
    """
    return folded(model, coefficients, label or f"random-K seed {seed}", ConditionKind.RANDOM_K, seed=seed, **metadata)


def from_artifact(model: "LoadedModel", run_dir: str | Path, label: str = "PEAR") -> Condition:
    """The PEAR condition from a trained run folder; refuses an artifact made for other weights."""
    coefficients, info = _load_coefficients(run_dir)
    expected = info.get("fingerprint")
    if expected and expected != model.fingerprint:
        raise PearLensError(
            f"{run_dir} was trained on weights with fingerprint {expected}, but {model.name} has "
            f"{model.fingerprint}; evaluate it with the model it was trained on"
        )
    return folded(model, coefficients, label, ConditionKind.PEAR, artifact=str(run_dir), **{
        k: v for k, v in info.items() if k != "fingerprint"})


def _load_coefficients(run_dir: str | Path) -> tuple[dict[Head, float], dict[str, Any]]:
    """Read ``{(layer, head): τ}`` and the base-weight fingerprint from a re-weighting run folder.

    INTEGRATION POINT: this is the only place that knows the artifact format.
    When ``pear_lens.artifact`` lands, replace the body with::

        art = load_artifact(run_dir)
        return art.coefficients(), {"fingerprint": art.<base fingerprint>, "base_model": art.<base model name>}

    Until then it reads ``pear.json`` (``heads`` as ``[[layer, head], ...]`` or
    ``[{"layer", "head", ...}, ...]``; fingerprint under ``fingerprint``,
    ``base_fingerprint`` or ``model.fingerprint``) and ``coefficients.safetensors``
    (a 1-D tensor ``tau``, or ``coefficients``, in the order of ``heads``; a
    ``heads`` tensor ``[K, 2]`` there wins over pear.json).
    """
    run_dir = Path(run_dir)
    meta_path, tensor_path = run_dir / constants.PEAR_JSON, run_dir / constants.COEFFICIENTS_SAFETENSORS
    for p in (meta_path, tensor_path):
        if not p.exists():
            raise PearLensError(f"{p} is missing; is {run_dir} a trained pear_lens run folder (`pear-lens train`)?")
    from safetensors.torch import load_file

    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensor_path))
        tau = tensors.get("tau", tensors.get("coefficients"))
        if tau is None:
            raise KeyError("tau")
        if "heads" in tensors:
            heads = [tuple(int(v) for v in row) for row in tensors["heads"].tolist()]
        else:
            heads = [(int(h["layer"]), int(h["head"])) if isinstance(h, dict) else (int(h[0]), int(h[1]))
                     for h in meta["heads"]]
        if len(heads) != tau.numel():
            raise ValueError(f"{len(heads)} heads but {tau.numel()} coefficients")
        model_info = meta.get("model") if isinstance(meta.get("model"), dict) else {}
        info = {"fingerprint": meta.get("fingerprint") or meta.get("base_fingerprint") or model_info.get("fingerprint"),
                "base_model": meta.get("base_model") or model_info.get("name")}
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise PearLensError(f"{run_dir} holds a corrupt re-weighting artifact ({e!r}); retrain it") from None
    return dict(zip(heads, (float(t) for t in tau.flatten().tolist()))), {k: v for k, v in info.items() if v}
