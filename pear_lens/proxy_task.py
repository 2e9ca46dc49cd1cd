"""The copy proxy task: random tokens, repeated.

A sequence is ``x_1 … x_n x_1 … x_n``. In the second half the model can only
predict the next token by finding it earlier in its context, the retrieval
skill that retrieval-augmented generation relies on. The scored position is
the second-to-last token (``end``), whose target is the last token.

Defaults follow the head search of the PEAR reference recipe (arXiv 2409.19745): ids drawn
uniformly from the whole vocabulary, no BOS, averaged over four (batch, n) settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from pear_lens.config import check_fields, option
from pear_lens.text_formats import Settings
from pear_lens.errors import PearLensError

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

REFERENCE_SETTINGS: tuple[tuple[int, int], ...] = ((20, 50), (40, 25), (80, 15), (100, 10))
"""(batch N, half-length n) pairs of the reference Llama-2/OPT head search."""

VocabChoice = Literal["all", "no_special"]

VOCAB_HELP = ("token ids drawn: all (every id from --min-token-id up) or no_special (the same without the "
              "tokenizer's special and added tokens)")
"""The help of ``--vocab``, one text for discovery's proxy task and training's sequences."""


class Batched:
    """The sizes of a batch of equal-length sequences, read off its ``tokens`` ``[batch, seq]``."""

    tokens: Int[Tensor, "batch seq"]

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.tokens.shape[1])


@dataclass(frozen=True)
class TaskBatch(Batched):
    """One batch of proxy sequences and where to read the model."""

    tokens: Int[Tensor, "batch seq"]
    n: int
    offset: int
    """1 when a BOS token was prepended, else 0."""
    setting: int = 0
    """Which of the task's (batch, n) settings this batch is."""

    foils = None
    """The proxy task has no foil tokens."""
    corrupted = None
    """Nor corrupted prompts."""
    prompt_index = None
    """Its prompts are numbered in batch order."""

    @property
    def label(self) -> str:
        """How a progress bar names the batch."""
        return f"N={self.batch_size} n={self.n}"

    @property
    def end(self) -> int:
        """The scored position: the second-to-last token."""
        return self.seq_len - 2

    @property
    def targets(self) -> Int[Tensor, " batch"]:
        """The token the model should copy at ``end``."""
        return self.tokens[:, -1]

    @property
    def copy_slice(self) -> slice:
        """Positions whose next token lies in the copy half (the training loss)."""
        return slice(self.offset + self.n - 1, self.seq_len - 1)


@dataclass
class ProxyTask:
    """Settings of the duplicated random-token task. Same seed → same tokens.

    >>> task = ProxyTask(settings=((4, 8),), seed=0)
    >>> task.settings
    ((4, 8),)
    """

    settings: Settings = REFERENCE_SETTINGS
    """(batch N, half-length n) pairs; scores are averaged over them to remove length bias."""
    vocab: VocabChoice | Sequence[int] = option("all", cli_type=VocabChoice,
                                                help=VOCAB_HELP + "; an explicit list of ids is the Python API's "
                                                                  "(ProxyTask(vocab=[...]))")
    """``all`` token ids of the model, ``no_special`` (drop special and added tokens), or an explicit id list."""
    min_token_id: int = option(0, help="smallest token id drawn; 0 because the reference head search draws from the "
                                       "whole vocabulary (training draws from 2, as the reference training data: "
                                       "`pear-lens train --min-token-id`)")
    """Smallest id drawn (the reference head search: 0; its training data: 2)."""
    prepend_bos: bool = False
    """Prepend the tokenizer's BOS token (many models behave badly without it)."""
    seed: int = 0
    """Seed of the proxy-task tokens: same seed, same sequences."""
    vocab_filter: Callable[[int, str], bool] | None = field(default=None, repr=False, metadata={"cli": False})
    """Optional custom filter ``(token_id, token_string) -> keep``, applied after ``vocab``."""

    def __post_init__(self) -> None:
        check_fields(self)  # prepend_bos="false" would act as True, seed=1.5 draw other tokens than asked
        self.settings = tuple((int(b), int(n)) for b, n in self.settings)
        if not self.settings:
            raise PearLensError("the proxy task needs at least one (batch, n) setting")
        for b, n in self.settings:
            if n < 2:
                raise PearLensError(f"n={n} is too short: the copy task needs n >= 2 repeated tokens")
            if b < 1:
                raise PearLensError(f"batch={b} must be at least 1")

    # ------------------------------------------------------------------ vocabulary
    def candidate_ids(self, model: "LoadedModel") -> Int[Tensor, " n_candidates"]:
        """The token ids the task draws from, after every filter."""
        vocab_size = model.d_vocab
        tok = model.tokenizer
        if isinstance(self.vocab, str):
            if self.vocab not in ("all", "no_special"):
                raise PearLensError(f"unknown vocab choice {self.vocab!r}; use 'all', 'no_special' or a list of ids")
            ids = torch.arange(self.min_token_id, vocab_size)
            if self.vocab == "no_special":
                ids = ids[ids < len(tok)]
                special = set(tok.all_special_ids)
                special.update(i for i, t in getattr(tok, "added_tokens_decoder", {}).items() if t.special)
                keep = torch.tensor([int(i) not in special for i in ids], dtype=torch.bool)
                ids = ids[keep]
        else:
            ids = torch.as_tensor(list(self.vocab), dtype=torch.long)
            bad = ids[(ids < 0) | (ids >= vocab_size)]
            if len(bad):
                raise PearLensError(f"vocabulary ids {bad[:5].tolist()} are outside the model's vocabulary of {vocab_size}")
            ids = ids[ids >= self.min_token_id]
        if self.vocab_filter is not None:
            strings = tok.convert_ids_to_tokens(ids.tolist())
            ids = ids[torch.tensor([bool(self.vocab_filter(int(i), s)) for i, s in zip(ids, strings)],
                                   dtype=torch.bool)]
        if len(ids) == 0:
            raise PearLensError("the vocabulary filter left no token ids to sample; relax vocab/vocab_filter/min_token_id")
        return ids

    # ------------------------------------------------------------------ sampling
    def check_fits(self, model: "LoadedModel") -> None:
        offset = int(self.prepend_bos)
        for b, n in self.settings:
            if 2 * n + offset > model.n_ctx:
                raise PearLensError(
                    f"a sequence of 2n{'+1' if offset else ''} = {2 * n + offset} tokens is longer than "
                    f"{model.name}'s context of {model.n_ctx}; use a smaller n"
                )
        if self.prepend_bos and model.tokenizer.bos_token_id is None:
            raise PearLensError(f"{model.name}'s tokenizer has no BOS token; set prepend_bos=False")

    def batches(self, model: "LoadedModel") -> list[TaskBatch]:
        """One :class:`TaskBatch` per setting, deterministic in ``seed``."""
        self.check_fits(model)
        ids = self.candidate_ids(model)
        gen = torch.Generator().manual_seed(self.seed)
        device = model.cfg.device
        out = []
        for setting, (b, n) in enumerate(self.settings):
            bos = model.tokenizer.bos_token_id if self.prepend_bos else None
            batch = sample_batch(ids, b, n, gen, bos)
            out.append(TaskBatch(batch.tokens.to(device), batch.n, batch.offset, setting))
        return out

    @property
    def default_difference(self) -> str:
        """How a change in π is reported unless told: relative, as in the paper."""
        return "relative"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["settings"] = [list(s) for s in self.settings]
        if not isinstance(self.vocab, str):
            d["vocab"] = list(map(int, self.vocab))
        d["vocab_filter"] = None if self.vocab_filter is None else getattr(self.vocab_filter, "__qualname__", repr(self.vocab_filter))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ProxyTask":
        d = dict(d)
        if d.pop("vocab_filter", None):
            raise PearLensError("this task used a custom vocab_filter function, which cannot be restored from JSON; pass it again")
        d["settings"] = tuple(tuple(s) for s in d["settings"])
        return cls(**d)


def sample_batch(
    candidate_ids: Tensor, batch: int, n: int, generator: torch.Generator, bos_id: int | None = None
) -> TaskBatch:
    """Draw ``batch`` sequences ``[BOS] x_1..x_n x_1..x_n`` from ``candidate_ids``."""
    idx = torch.randint(len(candidate_ids), (batch, n), generator=generator)
    half = candidate_ids[idx]
    tokens = torch.cat([half, half], dim=1)
    if bos_id is not None:
        tokens = torch.cat([torch.full((batch, 1), int(bos_id), dtype=tokens.dtype), tokens], dim=1)
    return TaskBatch(tokens=tokens, n=n, offset=int(bos_id is not None))
