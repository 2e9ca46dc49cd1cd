"""What each stage of the pipeline runs, counted pass by pass from the code that runs it.

A stage is a list of :class:`Pass` objects: a kind of forward (or forward and backward), its shape (rows,
tokens fed, blocks run, positions attended, positions whose logits are computed) and how many times it runs.
The lists mirror the code:

- the head scan (``pear-lens discover``, path patching): the clean copy check, in micro-batches of 20 sequences
  with the copy half's logits (:func:`pear_lens.copy_accuracy.clean_copy`); per setting one clean forward up to
  ``end`` (:func:`pear_lens.mediation.path.clean_end`) and per layer one forward of one token per prompt and
  patched head through the blocks from that layer up (:func:`pear_lens.mediation.path.scan_layer`);
- one training (:func:`pear_lens.reweight.train_coefficients`): per step, one forward and backward per
  micro-batch, logits on the copy half, the backward reaching down to the lowest trained layer;
- an evaluation (:mod:`pear_lens.evaluation`): per condition and batch of prompts (longest first), one prompt
  pass and one-token steps of greedy decoding until the batch's answers end (expected: the longest gold answer
  and what closes it; at most ``max_new_tokens``); the likelihood endpoints add one prompt pass per batch and one
  pass per candidate answer longer than one token; context-aware decoding (CAD) runs each of these passes again
  on the context-free prompts.

How many seconds a pass of each kind takes is the probes' business (:mod:`pear_lens.cost.probes`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pear_lens.vocabulary import StrEnum

if TYPE_CHECKING:
    from pear_lens.cost.shape import ModelShape
    from pear_lens.proxy_task import ProxyTask
    from pear_lens.recipe import Recipe

COPY_CHECK_ROWS = 20
"""Sequences per forward of the clean copy check (:func:`pear_lens.copy_accuracy.clean_copy`'s micro-batch)."""


class Kind(StrEnum):
    """The kinds of pass, each timed by its own probe (their speed per operation differs)."""

    COPY_CHECK = "copy_check"
    """Bridge forward without gradients, logits on the copy half (the clean copy check)."""
    SCAN_CLEAN = "scan_clean"
    """Bridge forward without gradients up to ``end``, logits at ``end``, every layer's activations kept."""
    SCAN_LAYER = "scan_layer"
    """One token per prompt and patched head through the blocks above a layer (path patching's step)."""
    TRAIN_STEP = "train_step"
    """Bridge forward and backward of one micro-batch with τ hooks, logits on the copy half."""
    PREFILL = "prefill"
    """Hugging Face forward over left-padded prompts, filling the key-value cache; logits at the last position."""
    DECODE = "decode"
    """One step of greedy decoding: one new token per prompt on the cache."""
    CONTINUATION = "continuation"
    """Candidate answers teacher-forced on a copy of the prompt's cache, logits at every position."""
    BUILD = "build"
    """A condition's fresh Hugging Face copy of the model (read and folded): a fixed cost, no rows."""

    @property
    def through_bridge(self) -> bool:
        """The bridge's attention is eager (it materialises the pattern); evaluation's Hugging Face copy is not."""
        return self in (Kind.COPY_CHECK, Kind.SCAN_CLEAN, Kind.SCAN_LAYER, Kind.TRAIN_STEP)


@dataclass(frozen=True)
class Pass:
    """``count`` alike passes of one kind and shape."""

    kind: Kind
    rows: int
    """Sequences in the pass."""
    tokens: int
    """Tokens fed per sequence."""
    blocks: int
    """Transformer blocks run."""
    context: float | int
    """Mean number of positions a fed token attends to (the cache included)."""
    logits: int = 0
    """Positions per sequence whose logits are computed."""
    backward_blocks: int = 0
    """Blocks the backward pass runs through (0: no backward)."""
    count: int = 1

    def flops(self, shape: "ModelShape") -> float:
        """Floating-point operations of one such pass, a backward (activation gradients only: the weights are
        frozen) counted as one forward of the blocks and logits it reaches."""
        per_block = self.rows * self.tokens * shape.block_flops(self.context)
        unembed = self.rows * self.logits * shape.logit_flops
        return (self.blocks + self.backward_blocks) * per_block + (2 if self.backward_blocks else 1) * unembed

    @property
    def on_cache(self) -> bool:
        """The pass extends a key-value cache: every layer's keys and values are copied to append the new ones
        and read by attention (and a candidate pass starts from a copy of the prompt's cache)."""
        return self.kind in (Kind.DECODE, Kind.CONTINUATION)

    def features(self, shape: "ModelShape") -> tuple[float, float, float, float]:
        """What the probes' fit prices, for all ``count`` passes: calls, block calls, GFLOP, and GB of key-value
        cache the passes move (the cost that grows with a long prompt once the FLOPs are few)."""
        cache = self.rows * self.context * shape.kv_bytes_per_token if self.on_cache else 0.0
        return (float(self.count), float(self.count * (self.blocks + self.backward_blocks)),
                self.count * self.flops(shape) / 1e9, self.count * cache / 1e9)

    def activation_bytes(self, shape: "ModelShape", act_bytes: int) -> int:
        """Memory one such pass takes beyond the weights, at its peak (an estimate from the shapes)."""
        tokens = self.rows * self.tokens
        live = tokens * shape.live_floats_per_token * act_bytes
        if self.kind.through_bridge:  # eager attention: scores and pattern of one layer at a time
            live += 2 * self.rows * shape.n_heads * self.tokens * math.ceil(self.context) * act_bytes
        logit_copies = {Kind.COPY_CHECK: 2, Kind.TRAIN_STEP: 3, Kind.CONTINUATION: 2}.get(self.kind, 1)
        logits = self.rows * self.logits * shape.d_vocab * 4 * logit_copies  # scored in float32
        saved = 0
        if self.backward_blocks:
            pattern = 2 * shape.n_heads * math.ceil(self.context)
            saved = tokens * self.backward_blocks * (shape.saved_floats_per_token + pattern) * act_bytes
        cache = 0
        if self.kind in (Kind.PREFILL, Kind.DECODE, Kind.CONTINUATION):
            cache = self.rows * math.ceil(self.context + self.tokens) * shape.kv_bytes_per_token
            cache *= 2 if self.kind is Kind.CONTINUATION else 1  # the prompt's cache and the copy it runs on
        return int(live + logits + saved + cache)


# --------------------------------------------------------------------------- the stages


def scan_passes(shape: "ModelShape", task: "ProxyTask", heads_per_pass: int, readout: bool) -> list[Pass]:
    """The head scan of ``pear-lens discover`` with path patching: the copy check, then every setting's scan.

    ``heads_per_pass``: heads of a layer patched in one forward (:func:`pear_lens.mediation.path.heads_per_pass`);
    ``readout``: the metric is read from the final hidden state (no logits in the layer steps)."""
    L, offset = shape.n_layers, int(task.prepend_bos)
    passes = []
    for batch, n in task.settings:
        seq = 2 * n + offset
        copy_tokens = seq - 1  # the last token is only ever a target
        for start in range(0, batch, COPY_CHECK_ROWS):
            rows = min(COPY_CHECK_ROWS, batch - start)
            passes.append(Pass(Kind.COPY_CHECK, rows, copy_tokens, L, copy_tokens / 2, logits=n))
    for batch, n in task.settings:
        end = 2 * n + offset - 2  # the scored position: the second-to-last token
        passes.append(Pass(Kind.SCAN_CLEAN, batch, end + 1, L, (end + 1) / 2, logits=1))
        for layer in range(L):
            for start in range(0, shape.n_heads, heads_per_pass):
                g = min(heads_per_pass, shape.n_heads - start)
                passes.append(Pass(Kind.SCAN_LAYER, g * batch, 1, L - layer, 1, logits=0 if readout else 1))
    return _merged(passes)


def train_passes(shape: "ModelShape", recipe: "Recipe", lowest_layer: int = 0) -> list[Pass]:
    """One training with ``recipe``: every micro-batch's forward and backward, ``recipe.steps`` times; the
    backward runs from the loss down to ``lowest_layer``, the lowest layer with a trained head."""
    seq = 2 * recipe.n + int(recipe.prepend_bos)
    tokens = seq - 1
    passes = []
    for start in range(0, recipe.batch_size, recipe.micro_batch):
        rows = min(recipe.micro_batch, recipe.batch_size - start)
        passes.append(Pass(Kind.TRAIN_STEP, rows, tokens, shape.n_layers, tokens / 2, logits=recipe.n,
                           backward_blocks=shape.n_layers - lowest_layer, count=recipe.steps))
    return _merged(passes)


def batches_of(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Item indices in the batches evaluation runs: longest prompt first, ties in item order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


ANSWER_END_TOKENS = 2
"""Tokens decoding is expected to add after an answer as long as the gold one: what closes it (a quote, a full
stop) and the line break or end of sequence that stops it."""


def decode_steps(max_new_tokens: int, answer_tokens: Sequence[int] | None) -> int:
    """Decoding steps after the prompt pass (which gives the first new token) of a batch whose gold answers take
    ``answer_tokens``: the longest one and :data:`ANSWER_END_TOKENS`, at most ``max_new_tokens`` in all (None:
    every answer runs to ``max_new_tokens``, the upper bound)."""
    if answer_tokens is None:
        return max_new_tokens - 1
    return min(max_new_tokens, max(answer_tokens) + ANSWER_END_TOKENS) - 1


def generation_passes(shape: "ModelShape", prompt_lengths: Sequence[int], batch_size: int,
                      max_new_tokens: int, conditions: int = 1,
                      answer_tokens: Sequence[int] | None = None,
                      context_free_lengths: Sequence[int] | None = None) -> list[Pass]:
    """Greedy decoding of every prompt once per condition (:func:`pear_lens.evaluation.generate.greedy_generate`):
    per batch one prompt pass and the decoding steps of :func:`decode_steps` (a batch stops once every answer has
    ended its first line; ``answer_tokens``: each item's gold answer in tokens, None for the upper bound).

    With ``context_free_lengths`` (each item's context-free prompt, in tokens) decoding is context-aware: the
    batch's context-free prompts get their own prompt pass and one single-token pass per decoding step
    (:class:`pear_lens.evaluation.decoding.ContextAwareLogits`), so every pass runs twice."""
    passes = []
    for idx in batches_of(prompt_lengths, batch_size):
        steps = decode_steps(max_new_tokens, None if answer_tokens is None else [answer_tokens[i] for i in idx])
        sides = [prompt_lengths] + ([context_free_lengths] if context_free_lengths is not None else [])
        for lengths in sides:
            width = max(lengths[i] for i in idx)
            passes.append(Pass(Kind.PREFILL, len(idx), width, shape.n_layers, width / 2, logits=1, count=conditions))
            if steps:
                passes.append(Pass(Kind.DECODE, len(idx), 1, shape.n_layers, width + 1 + steps / 2, logits=1,
                                   count=steps * conditions))
    return _merged(passes)


def likelihood_passes(shape: "ModelShape", prompt_lengths: Sequence[int],
                      candidate_lengths: Sequence[Sequence[int]], batch_size: int, conditions: int = 1,
                      context_free_lengths: Sequence[int] | None = None) -> list[Pass]:
    """Teacher-forced scores of every item's candidates once per condition
    (:func:`pear_lens.evaluation.likelihood.continuation_logprobs`): per batch one prompt pass, then for the j-th
    candidates of its items one pass over all but their last token (none when every one is a single token).
    With ``context_free_lengths`` (context-aware decoding's scores) each of these passes runs again on the
    context-free prompts."""
    passes = []
    for idx in batches_of(prompt_lengths, batch_size):
        sides = [prompt_lengths] + ([context_free_lengths] if context_free_lengths is not None else [])
        for lengths in sides:
            width = max(lengths[i] for i in idx)
            passes.append(Pass(Kind.PREFILL, len(idx), width, shape.n_layers, width / 2, logits=1, count=conditions))
            for j in range(max(len(candidate_lengths[i]) for i in idx)):
                longest = max(candidate_lengths[i][j] if j < len(candidate_lengths[i]) else 1 for i in idx)
                if longest > 1:
                    fed = longest - 1
                    passes.append(Pass(Kind.CONTINUATION, len(idx), fed, shape.n_layers, width + fed / 2,
                                       logits=fed, count=conditions))
    return _merged(passes)


def _merged(passes: list[Pass]) -> list[Pass]:
    """Alike passes as one with their counts summed (order of first appearance)."""
    counts: dict[Pass, int] = {}
    for p in passes:
        key = Pass(p.kind, p.rows, p.tokens, p.blocks, p.context, p.logits, p.backward_blocks, 1)
        counts[key] = counts.get(key, 0) + p.count
    return [Pass(k.kind, k.rows, k.tokens, k.blocks, k.context, k.logits, k.backward_blocks, c)
            for k, c in counts.items()]


def describe(passes: Sequence[Pass]) -> str:
    """``4 copy_check, 4 scan_clean, 120 scan_layer passes``: how many passes of each kind."""
    totals: dict[Kind, int] = {}
    for p in passes:
        totals[p.kind] = totals.get(p.kind, 0) + p.count
    return ", ".join(f"{n:,} {kind.value}" for kind, n in totals.items()) + " passes"
