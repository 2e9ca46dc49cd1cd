"""Needle-in-a-haystack prompts built offline from invented facts, and the model's greedy answers.

Every fact is made up (an invented place, an invented attribute value), so no parametric knowledge
can answer it: the model must find the needle in its context. The haystack is invented filler of the
same kind; the needle sits at depths spread evenly over the prompts. The prompt ends by restating the
needle's subject ("... is"), so a model that retrieves it continues with the needle's value, whose
token span in the prompt is known exactly (the prompt is assembled from token pieces, never
re-tokenised as a whole).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pear_lens.errors import PearLensError
from pear_lens.models.loaded import input_device

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

_SYLLABLES = ("vel", "mor", "quin", "dar", "os", "tre", "vik", "pal", "un", "zer", "ith", "bra", "nol", "ka",
              "sil", "dro", "fen", "wy", "lor", "tam", "gri", "sel", "hav", "oth", "rin", "mek", "ul", "cas")
_ATTRIBUTES = ("the secret password of the {} archive", "the name of the {} lighthouse keeper",
               "the codeword of the {} guild", "the motto carved above the {} gate",
               "the name of the ship that founded {}", "the password to the {} vault")
_WORDS = ("amber", "falcon", "copper", "lantern", "violet", "harbor", "granite", "willow", "cobalt", "thistle",
          "ember", "meadow", "silver", "raven", "saffron", "glacier", "orchid", "tundra", "marble", "comet")
_FILLER = ("The {a} of {p} was known for its {w} markets and {w2} roofs.",
           "Travellers from {p} often spoke of the {w} hills beyond {p2}.",
           "In {p}, the {a} kept records of every {w} harvest.",
           "The river near {p2} ran past {w} mills and old {w2} bridges.",
           "Merchants of {p} traded {w} cloth for {w2} spice every spring.",
           "Nobody in {p2} remembered when the {w} tower was built.")
_ROLES = ("council", "archivist", "harbour master", "guild", "weaver", "mapmaker")


@dataclass(frozen=True)
class NeedleConfig:
    """The needle-in-a-haystack prompts of the retrieval score."""

    n_prompts: int = 20
    """Prompts, each with another invented fact and needle depth."""
    haystack_tokens: int = 300
    """Filler tokens around the needle (the prompt adds the needle and the question)."""
    seed: int = 0
    """Seed of the invented facts and filler."""

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise PearLensError(f"--needle.n-prompts must be at least 1, got {self.n_prompts}")
        if self.haystack_tokens < 0:
            raise PearLensError(f"--needle.haystack-tokens must be 0 or more, got {self.haystack_tokens}")


@dataclass(frozen=True)
class NeedlePrompt:
    """One prompt as token ids, and where the needle's value lies in it."""

    ids: list[int]
    needle_start: int
    needle_end: int
    value: str
    depth: float


def _name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _filler(rng: random.Random) -> str:
    return rng.choice(_FILLER).format(a=rng.choice(_ROLES), p=_name(rng), p2=_name(rng), w=rng.choice(_WORDS),
                                      w2=rng.choice(_WORDS))


def build_prompts(model: "LoadedModel", config: NeedleConfig, max_new_tokens: int = 3) -> list[NeedlePrompt]:
    """``config.n_prompts`` prompts; refused in one line when one would not fit the model's context."""
    tok = model.tokenizer
    rng = random.Random(config.seed)
    prompts = []
    for i in range(config.n_prompts):
        place = _name(rng)
        attribute = rng.choice(_ATTRIBUTES).format(place)
        value = f"{rng.choice(_WORDS)} {_name(rng).lower()} {rng.randint(10, 99)}"
        filler_ids: list[list[int]] = []
        total = 0
        while total < config.haystack_tokens:
            ids = tok(" " + _filler(rng), add_special_tokens=False)["input_ids"]
            filler_ids.append(ids)
            total += len(ids)
        depth = (i + 0.5) / config.n_prompts
        cut = round(depth * len(filler_ids))
        before = [t for ids in filler_ids[:cut] for t in ids]
        after = [t for ids in filler_ids[cut:] for t in ids]
        head = tok("Read the notes and answer the question.\n", add_special_tokens=True)["input_ids"]
        subject = f" {attribute[0].upper()}{attribute[1:]} is"
        piece_subject = tok(subject, add_special_tokens=False)["input_ids"]
        piece_value = tok(" " + value, add_special_tokens=False)["input_ids"]
        piece_end = tok(".", add_special_tokens=False)["input_ids"]
        question = tok(f"\n\nQuestion: What is {attribute}?\nAnswer:{subject}", add_special_tokens=False)["input_ids"]
        start = len(head) + len(before) + len(piece_subject)
        ids = head + before + piece_subject + piece_value + piece_end + after + question
        prompts.append(NeedlePrompt(ids=ids, needle_start=start, needle_end=start + len(piece_value), value=value,
                                    depth=depth))
    longest = max(len(p.ids) for p in prompts) + max(p.needle_end - p.needle_start for p in prompts) + max_new_tokens
    if longest > model.n_ctx:
        raise PearLensError(f"needle prompts of up to {longest} tokens (with the answer) do not fit {model.name}'s "
                            f"context of {model.n_ctx}; use a smaller --needle.haystack-tokens")
    return prompts


def greedy_answers(model: "LoadedModel", prompts: list[NeedlePrompt], extra_tokens: int = 3) -> list[list[int]]:
    """Each prompt's greedy continuation (the needle's length plus ``extra_tokens``), from a separate
    Hugging Face copy of the weights: the bridge rebuilds its own copy, whose ``generate`` is unusable."""
    hf = model.fresh_hf()
    device = input_device(hf)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else model.tokenizer.eos_token_id
    answers = []
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([p.ids], device=device)
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=p.needle_end - p.needle_start + extra_tokens, pad_token_id=pad,
                              temperature=None, top_p=None, top_k=None)
            answers.append(out[0, len(p.ids):].tolist())
    del hf
    return answers


def copied(prompt: NeedlePrompt, answer: list[int]) -> bool:
    """Whether the answer starts with the needle's value, token for token."""
    value = prompt.ids[prompt.needle_start:prompt.needle_end]
    return answer[:len(value)] == value
