"""Answer scoring as in "Lost in the Middle" (and the PEAR paper).

``best_subspan_em`` counts a greedy output as correct when any gold answer,
normalised like SQuAD (lowercase, no punctuation, no articles, single spaces),
is a substring of the normalised output. It is lenient on phrasing and strict
on content, which suits short factual answers.
"""
from __future__ import annotations

import re
import string
import unicodedata
from typing import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD)."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def best_subspan_em(prediction: str, answers: Iterable[str]) -> bool:
    """True when some normalised gold answer occurs in the normalised prediction."""
    pred = normalize_answer(prediction)
    for answer in answers:
        gold = normalize_answer(answer)
        if gold and gold in pred:
            return True
    return False
