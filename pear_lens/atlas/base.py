"""What every head detector shares: the registry and the recorded forward passes they read.

A detector answers one question about every head ("does it attend to the previous token?", "does it
copy the needle?") from activations recorded once per prompt set and shared by every detector that
reads that set. It is a function ``(model, recording, options) -> Tensor[batch, n_layers, n_heads]``
(one score per prompt of the batch, averaged later) registered under a name with an options
dataclass, the prompt set it reads, its definition and its source. The registry reaches
``pear-lens atlas`` and :func:`pear_lens.atlas.head_atlas` like the scoring methods' registry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from pear_lens import hooks
from pear_lens.errors import PearLensError
from pear_lens.proxy_task import Batched
from pear_lens.vocabulary import StrEnum

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


class PromptSet(StrEnum):
    """The prompts a detector reads."""

    PROXY = "proxy"
    """The discovery run's copy proxy task: random tokens, repeated (the sequences Δπ was scored on)."""
    NEEDLE = "needle"
    """Needle-in-a-haystack prompts from invented facts, with the model's own greedy answer appended."""


@dataclass
class Recording(Batched):
    """One batch of a prompt set and the activations every detector reads, recorded in one forward.

    Sequences of a batch have one length and no padding. ``patterns[l]`` is layer ``l``'s attention
    ``[batch, n_heads, query, key]``; ``z[l]`` its per-query-head output before the output projection
    ``[batch, pos, n_heads, d_head]``; ``resid_final`` the residual stream entering the final norm.
    """

    tokens: Int[Tensor, "batch seq"]
    patterns: list[Float[Tensor, "batch n_heads seq seq"]]
    z: list[Float[Tensor, "batch seq n_heads d_head"]]
    resid_final: Float[Tensor, "batch seq d_model"]
    offset: int = 0
    """1 when the sequences start with a BOS token, else 0."""
    n: int | None = None
    """Proxy task: the half-length (the copy half starts at ``offset + n``)."""
    needle: list[dict] = field(default_factory=list)
    """Needle prompts: per sequence ``prompt_len``, ``needle_start``, ``needle_end`` (the answer's span in the
    prompt) and ``copied`` (whether the greedy answer reproduced it)."""


def record(model: "LoadedModel", tokens: Tensor, *, pattern_hook: Callable | None = None, **info) -> Recording:
    """Run ``tokens`` once and keep what the detectors read (``pattern_hook`` may edit the patterns: tests)."""
    n_layers = model.n_layers
    store: dict[str, Tensor] = {}

    def saver(name: str):
        def save(t: Tensor, hook) -> None:
            store[name] = t.detach().float().cpu()
        return save

    fwd = []
    for layer in range(n_layers):
        if pattern_hook is not None:
            fwd.append((hooks.pattern(layer), _edit(pattern_hook, layer)))
        fwd += [(hooks.pattern(layer), saver(f"p{layer}")), (hooks.z(layer), saver(f"z{layer}"))]
    fwd.append((hooks.final_norm_input(), saver("resid")))
    with torch.no_grad():
        model.bridge.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=fwd)
    return Recording(tokens=tokens.cpu(), patterns=[store[f"p{l}"] for l in range(n_layers)],
                     z=[store[f"z{l}"] for l in range(n_layers)], resid_final=store["resid"], **info)


def _edit(fn: Callable, layer: int):
    def hook_fn(pattern: Tensor, hook) -> Tensor:
        return fn(layer, pattern)
    return hook_fn


@dataclass(frozen=True)
class NoOptions:
    """A detector without options of its own."""


@dataclass(frozen=True)
class Detector:
    """A registered head detector."""

    name: str
    short: str
    """Short label for legends and table columns."""
    definition: str
    """What the score measures, in one or two sentences."""
    source: str
    """Where the score comes from (paper or library)."""
    prompts: PromptSet
    fn: Callable[..., Tensor] = field(repr=False)
    options: type = NoOptions
    """Dataclass of the detector's own options."""
    higher_is_role: bool = True
    """True when a larger score means more of the role (the heads the detector finds rank first);
    False when the role is the negative end (copy suppression lowers the attended token's logit)."""


DETECTORS: dict[str, Detector] = {}


def register_detector(name: str, short: str, definition: str, source: str, *, prompts: PromptSet,
                      options: type = NoOptions, higher_is_role: bool = True):
    """Register ``fn`` as head detector ``name``; a name registered twice is refused."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of head detector {name!r} must be a dataclass, got {options!r}")
    if name in DETECTORS:
        raise PearLensError(f"a head detector named {name!r} is already registered; choose another name")

    def wrap(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        DETECTORS[name] = Detector(name, short, definition, source, PromptSet(prompts), fn, options, higher_is_role)
        return fn
    return wrap


def detector_options(name: str, options=None, **opts):
    """The options dataclass of detector ``name``: ``options`` as given, else built from ``opts``."""
    from pear_lens.config import coerce

    if name not in DETECTORS:
        raise PearLensError(f"unknown head detector {name!r}; choose from: {', '.join(DETECTORS)}")
    cls = DETECTORS[name].options
    if options is not None:
        if opts:
            raise PearLensError("give detector options either as an options object or as keywords, not both")
        if not isinstance(options, cls):
            raise PearLensError(f"detector {name!r} takes {cls.__name__} options, got {type(options).__name__}")
        return options
    return cls(**coerce(cls, opts))
