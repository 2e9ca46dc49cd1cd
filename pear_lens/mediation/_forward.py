"""Forward passes that start in the middle of the model.

The fast scans rely on one trick: to recompute the model from block ``layer``
on, the blocks below are swapped for pass-throughs and the residual stream
entering block ``layer`` is injected with a hook. Everything the Hugging Face
model computes outside its blocks (attention masks, rotary tables, ALiBi
slopes) is still computed from the real tokens, so the trick is exact for every
family, and it costs nothing below ``layer``.
"""
from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch import Tensor

from pear_lens import hooks
from pear_lens.metrics import Metric

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HookFn = Callable[[Tensor, object], Tensor | None]
_RETURNS_TUPLE: "weakref.WeakKeyDictionary[TransformerBridge, bool]" = weakref.WeakKeyDictionary()


def _blocks_return_tuple(bridge: "TransformerBridge") -> bool:
    """Whether the model's block loop expects ``(hidden,)`` or a bare tensor (probed once)."""
    if bridge not in _RETURNS_TUPLE:
        seen: list[bool] = []
        handle = bridge.blocks[0].register_forward_hook(lambda m, a, out: seen.append(isinstance(out, tuple)))
        try:
            with torch.no_grad():
                bridge(torch.zeros(1, 1, dtype=torch.long, device=bridge.cfg.device))
        finally:
            handle.remove()
        _RETURNS_TUPLE[bridge] = seen[0]
    return _RETURNS_TUPLE[bridge]


@contextlib.contextmanager
def skipping_blocks(bridge: "TransformerBridge", below: int) -> Iterator[None]:
    """Make blocks ``0 .. below-1`` return their input unchanged."""
    if below <= 0:
        yield
        return
    as_tuple = _blocks_return_tuple(bridge)

    def passthrough(*args, **kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden,) if as_tuple else hidden

    skipped = list(bridge.blocks)[:below]
    try:
        for block in skipped:
            object.__setattr__(block, "forward", passthrough)
        yield
    finally:
        for block in skipped:
            block.__dict__.pop("forward", None)


@contextlib.contextmanager
def passing_kv_cache(bridge: "TransformerBridge") -> Iterator[None]:
    """Let every attention bridge see the key-value cache the decoder layer hands it.

    Transformers 5 decoder layers pass the cache to attention as ``cache=``;
    TransformerLens's attention bridges read it from ``past_key_values=`` (or
    ``layer_past=``) only, so without this a cached step silently attends to
    its own token alone. Checked against full forwards on every tiny family in
    the tests.
    """
    def alias(module, args, kwargs):
        if "cache" in kwargs and kwargs.get("past_key_values") is None and kwargs.get("layer_past") is None:
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    handles = [block.attn.register_forward_pre_hook(alias, with_kwargs=True) for block in bridge.blocks]
    try:
        with warnings.catch_warnings():
            # the bridge hands the cache to transformers 5 as `past_key_values` (renamed `cache`): one
            # deprecation warning per scan that tells the user nothing
            warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
            yield
    finally:
        for handle in handles:
            handle.remove()


def run_from(
    bridge: "TransformerBridge",
    tokens: Tensor,
    layer: int,
    resid: Tensor,
    fwd_hooks: Sequence[tuple[str, HookFn]] = (),
    **kwargs,
) -> Tensor:
    """Logits of a forward that starts at block ``layer`` with residual ``resid``.

    ``tokens`` only set the shape, the masks and the position tables; their
    embeddings never reach block ``layer``.
    """
    def inject(_resid: Tensor, hook) -> Tensor:
        return resid

    with skipping_blocks(bridge, layer):
        return bridge.run_with_hooks(tokens, fwd_hooks=[(hooks.resid_pre(layer), inject), *fwd_hooks], **kwargs)


def capture(
    bridge: "TransformerBridge",
    tokens: Tensor,
    names: Sequence[str],
    pos: int | slice | None = None,
    **kwargs,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Run clean and keep the named activations (optionally only at ``pos``)."""
    store: dict[str, Tensor] = {}
    index = (slice(None), pos) if pos is not None else (slice(None),)

    def saver(name: str) -> HookFn:
        # keyed by the requested name: the bridge reports aliases (hook_z) under
        # their canonical names (attn.o.hook_in)
        def save(t: Tensor, hook) -> None:
            store[name] = t[index].detach().clone()
        return save

    logits = bridge.run_with_hooks(tokens, fwd_hooks=[(n, saver(n)) for n in names], **kwargs)
    return logits, store


class LinearReadout:
    """A metric that is linear in the final hidden state, read without the full logits.

    ``logit[answer] − mean(logits)`` (PEAR's metric) and ``logit[answer] − logit[foil]`` (logit difference) are
    both linear in the final (normalised) hidden state, so neither needs the full ``[rows, vocab]`` logits: the
    unembedding is skipped (it is a third of the path scan's cost on a 49k vocabulary). Only valid for a plain
    linear unembedding, so :meth:`for_model` returns ``None`` when logits are soft-capped (or for any other
    metric).
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, metric: Metric):
        self.weight = weight  # [vocab, d_model]
        self.metric = metric
        self.bias = bias if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        self.weight_mean = weight.mean(0)
        self.bias_mean = self.bias.mean()

    @classmethod
    def for_model(cls, bridge: "TransformerBridge", metric: object) -> "LinearReadout | None":
        if metric not in (Metric.LOGIT_MINUS_MEAN, Metric.LOGIT_DIFF):
            return None
        config = bridge.original_model.config
        config = getattr(config, "text_config", None) or config
        if getattr(config, "final_logit_softcapping", None):
            return None
        head = bridge.unembed.original_component
        if not isinstance(head, torch.nn.Linear):
            return None
        return cls(head.weight, head.bias, metric)

    def _logit(self, hidden: Tensor, ids: Tensor) -> Tensor:
        return (hidden * self.weight[ids]).sum(-1) + self.bias[ids]

    def __call__(self, hidden: Tensor, batch, copies: int = 1) -> Tensor:
        """The metric of every row of ``hidden``: ``copies`` copies of ``batch`` stacked."""
        hidden = hidden.to(self.weight.device, self.weight.dtype)  # under a device map the final norm
        targets = batch.targets.repeat(copies).to(self.weight.device)  # and the unembedding may sit apart
        if self.metric is Metric.LOGIT_DIFF:
            foils = batch.foils.repeat(copies).to(self.weight.device)
            return (self._logit(hidden, targets) - self._logit(hidden, foils)).float()
        return (self._logit(hidden, targets) - (hidden @ self.weight_mean + self.bias_mean)).float()

    @contextlib.contextmanager
    def hidden_states(self, bridge: "TransformerBridge") -> Iterator[None]:
        """Make the model return its final (normalised) hidden state instead of logits."""
        object.__setattr__(bridge.unembed, "forward", lambda x, *args, **kwargs: x)
        try:
            yield
        finally:
            bridge.unembed.__dict__.pop("forward", None)
