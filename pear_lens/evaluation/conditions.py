"""The models compared side by side: each condition is a recipe for a fresh Hugging Face model.

A condition is the base model with a ``{(layer, head): τ}`` mapping folded into
its output projections (:func:`pear_lens.convert.fold_coefficients`): empty
for the baseline, the learned PEAR coefficients, coefficients learned for
randomly chosen heads (the control that rules out "any re-weighting helps"),
one scalar on every head (all heads scaled alike), τ = 0 on chosen heads (pruning)
or one untrained τ on them (damping). Context-aware decoding (CAD) changes no
weight: its condition is the base model with ``cad_alpha`` set, which the runner
honours when it decodes and scores. How the mapping was obtained (seed, training
budget, artifact) travels along as metadata and ends up in the results.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from pear_lens.convert import fold_coefficients
from pear_lens.errors import PearLensError
from pear_lens.evaluation.decoding import CAD_ALPHA
from pear_lens.heads import Head

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from pear_lens.models.loaded import LoadedModel, ModelLike

BASELINE = "baseline"


class ConditionKind(str, Enum):
    BASELINE = "baseline"
    """The unmodified model."""
    PEAR = "pear"
    """Learned coefficients on the discovered suppression heads."""
    RANDOM_K = "random-k"
    """Learned coefficients on K randomly chosen heads (control)."""
    ALL_HEADS = "uniform"
    """One scalar on every head (control). The recorded value stays ``"uniform"``, as in the committed records;
    heads *drawn* uniformly are :attr:`pear_lens.controls.ControlKind.UNIFORM`."""
    PRUNED = "pruned"
    """τ = 0 on chosen heads: head pruning (Jin et al. 2024, "Cutting Off the Head Ends the Conflict")."""
    DAMPED = "damped"
    """One untrained τ on chosen heads (e.g. random heads at PEAR's mean τ): a control that costs no training."""
    CAD = "cad"
    """The unmodified model decoded context-aware (Shi et al. 2023): two passes per step, no weights changed."""
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
    cad_alpha: float | None = None
    """Context-aware decoding's α when the condition decodes context-aware (``None``: ordinary decoding)."""

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for ``eval.json``."""
        taus = list(self.coefficients.values())
        return {"label": self.label, "kind": self.kind.value, "n_heads": len(taus),
                "heads": [[l, h, float(t)] for (l, h), t in sorted(self.coefficients.items())],
                "tau_mean": (sum(taus) / len(taus)) if taus else None,
                **({"cad_alpha": self.cad_alpha} if self.cad_alpha is not None else {}), **dict(self.metadata)}


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


def all_heads(model: "LoadedModel", tau: float, label: str | None = None) -> Condition:
    """Every head of every layer scaled by the same ``tau``."""
    heads = {(l, h): tau for l in range(model.n_layers) for h in range(model.n_heads)}
    return folded(model, heads, label or f"uniform τ={tau:g}", ConditionKind.ALL_HEADS, tau=tau)


def random_k(model: "LoadedModel", coefficients: Mapping[Head, float], seed: int, label: str | None = None,
             **metadata: Any) -> Condition:
    """The random-K control for one seed, from coefficients trained on :func:`pear_lens.controls.random_heads`.

    Put a reduced training budget in ``label`` (e.g. ``"random-K seed 0 (20 steps)"``) so tables state it.
    """
    return folded(model, coefficients, label or f"random-K seed {seed}", ConditionKind.RANDOM_K, seed=seed, **metadata)


def from_artifact(model: "LoadedModel", run_dir: str | Path, label: str = "PEAR") -> Condition:
    """The PEAR condition from a trained run folder (:func:`pear_lens.artifact.load_artifact` checks it,
    including that it was trained on ``model``'s weights)."""
    from pear_lens.artifact import load_artifact
    from pear_lens.runs import artifact_sha256

    art = load_artifact(run_dir, model=model)
    # the artifact by content, not by path: a run moved to another folder or machine is the same condition
    # (its cached outputs stay valid), and an artifact retrained in place is a new one
    sha = artifact_sha256(run_dir)
    return folded(model, art.coefficients(), label, ConditionKind.PEAR, artifact_sha256=sha,
                  base_model=art.base_model.get("name"), training_steps=art.training.get("steps"))


def pruned(model: "LoadedModel", heads: Sequence[Head], label: str, **metadata: Any) -> Condition:
    """``heads`` removed (τ = 0, the columns of their output projection zeroed), nothing trained."""
    return folded(model, {h: 0.0 for h in heads}, label, ConditionKind.PRUNED, **metadata)


def damped(model: "LoadedModel", heads: Sequence[Head], tau: float, label: str, **metadata: Any) -> Condition:
    """``heads`` scaled by one untrained ``tau`` (e.g. PEAR's mean τ on random heads): a control without training."""
    return folded(model, {h: float(tau) for h in heads}, label, ConditionKind.DAMPED, tau=float(tau), **metadata)


def context_aware(model: "LoadedModel", alpha: float = CAD_ALPHA, label: str | None = None) -> Condition:
    """The unmodified model, decoded and scored with context-aware decoding at ``alpha``."""
    if not alpha >= 0:
        raise PearLensError(f"CAD's α must be ≥ 0, got {alpha}")
    return Condition(label or f"CAD α={alpha:g}", ConditionKind.CAD, model.fresh_hf, cad_alpha=float(alpha))


# --------------------------------------------------------------------------- the intervention registry

Intervention = Callable[..., Condition]
"""``(model, heads, *, label=None, **params) -> Condition``: one signature for every way of changing a model."""

INTERVENTIONS: dict[str, Intervention] = {}
"""The interventions by name (:func:`register_intervention` adds one; :func:`intervention` builds one)."""


def register_intervention(name: str) -> Callable[[Intervention], Intervention]:
    """Register ``fn(model, heads, *, label=None, **params) -> Condition`` under ``name`` (refused if taken)."""

    def add(fn: Intervention) -> Intervention:
        if name in INTERVENTIONS:
            raise PearLensError(f"an intervention named {name!r} is registered already; choose another name")
        INTERVENTIONS[name] = fn
        return fn

    return add


def intervention(name: str, model: "ModelLike", heads: Sequence[Head] | Mapping[Head, float] = (), *,
                 label: str | None = None, **params: Any) -> Condition:
    """The condition of intervention ``name`` on ``heads`` of ``model`` (e.g. ``intervention("prune", model,
    [(3, 1)])``, ``intervention("damp", model, heads, tau=0.7)``, ``intervention("cad", model, alpha=0.5)``).
    ``model`` is any form :func:`~pear_lens.models.loaded.as_loaded` accepts (a name, a folder, a loaded model)."""
    from pear_lens.models.loaded import as_loaded

    if name not in INTERVENTIONS:
        raise PearLensError(f"no intervention named {name!r}; registered: {', '.join(sorted(INTERVENTIONS))}")
    return INTERVENTIONS[name](as_loaded(model), heads, label=label, **params)


def _heads_only(name: str, heads) -> list[Head]:
    if isinstance(heads, Mapping):
        raise PearLensError(f"the {name!r} intervention takes a list of heads, not a head → τ mapping")
    if not heads:
        raise PearLensError(f"the {name!r} intervention needs at least one head")
    return sorted((int(l), int(h)) for l, h in heads)


@register_intervention("scale")
def _scale(model, heads, *, label=None, **metadata):
    """Given τ per head (PEAR's learned coefficients, or any others), folded into the output projection."""
    if not isinstance(heads, Mapping) or not heads:
        raise PearLensError("the 'scale' intervention takes a head → τ mapping, e.g. {(3, 1): 0.7}")
    return folded(model, heads, label or "scaled heads", ConditionKind.CUSTOM, **metadata)


@register_intervention("prune")
def _prune(model, heads, *, label=None, **metadata):
    """τ = 0 on the heads (Jin et al. 2024)."""
    heads = _heads_only("prune", heads)
    return pruned(model, heads, label or f"{len(heads)} heads pruned", **metadata)


@register_intervention("damp")
def _damp(model, heads, *, label=None, tau: float, **metadata):
    """One untrained τ on the heads."""
    heads = _heads_only("damp", heads)
    return damped(model, heads, tau, label or f"{len(heads)} heads damped τ={tau:g}", **metadata)


@register_intervention("all-heads")
def _all_heads(model, heads, *, label=None, tau: float):
    """One τ on every head of the model (``heads`` must be empty)."""
    if heads:
        raise PearLensError("the 'all-heads' intervention scales every head; give no heads")
    return all_heads(model, tau, label)


@register_intervention("cad")
def _cad(model, heads, *, label=None, alpha: float = CAD_ALPHA):
    """Context-aware decoding (Shi et al. 2023): no weight changes, so no heads."""
    if heads:
        raise PearLensError("context-aware decoding changes no head; give no heads")
    return context_aware(model, alpha, label)
