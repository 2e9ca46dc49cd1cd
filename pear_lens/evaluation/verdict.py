"""The words a results table may use, fixed by a rule written down before the test items exist.

A confirmatory evaluation is only as honest as its reading: "PEAR helps" must
follow mechanically from the numbers, by a rule stated in the plan beforehand.
:class:`VerdictRule` holds that rule (significance level and multiple-comparison
correction), prints itself for the plan, and turns one endpoint's difference and
adjusted p-value into one of five words.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Sequence

import numpy as np

from pear_lens.errors import PearLensError
from pear_lens.evaluation.stats import holm
from pear_lens.vocabulary import parse_member


class EndpointKind(str, Enum):
    """What an endpoint is for: a claimed benefit, or a harm that must not happen."""

    EFFICACY = "efficacy"
    """Context use (KV, MDQA, counterfactual): a significant rise helps, a significant fall hurts."""
    SAFETY = "safety"
    """Knowledge retention (closed-book): only a significant fall counts, as knowledge lost."""

    @classmethod
    def parse(cls, value: "str | EndpointKind") -> "EndpointKind":
        return parse_member(cls, value, "endpoint kind", colon=False)


class Verdict(str, Enum):
    """The only words a table may use for one endpoint (the value is the word)."""

    HELPS = "helps"
    HURTS = "hurts"
    NO_SIGNIFICANT_CHANGE = "no significant change"
    KNOWLEDGE_KEPT = "knowledge kept"
    KNOWLEDGE_LOST = "knowledge lost"


CORRECTIONS = ("holm", "none")


@dataclass(frozen=True)
class VerdictRule:
    """Significance level and correction that turn (delta, adjusted p) into a :class:`Verdict`.

    >>> rule = VerdictRule(alpha=0.05, correction="holm")
    >>> rule.verdict(0.06, 0.01, "efficacy").value, rule.verdict(-0.02, 0.30, "safety").value
    ('helps', 'knowledge kept')
    """

    alpha: float = 0.05
    """Family-wise significance level the adjusted p-values are compared with (strictly below = significant)."""
    correction: str = "holm"
    """How raw p-values of the family are adjusted: ``holm`` (Holm–Bonferroni) or ``none`` (one endpoint only).
    A plain ``str`` checked in ``__post_init__``, so a wrong name gets the error that lists the choices."""

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise PearLensError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise PearLensError(f"unknown correction {self.correction!r}; choose one of {', '.join(CORRECTIONS)}")

    def adjust(self, pvalues: "np.ndarray | Sequence[float]") -> np.ndarray:
        """The family's raw p-values adjusted as the rule says (NaN = not tested, passed through)."""
        p = np.asarray(pvalues, dtype=np.float64)
        return holm(p) if self.correction == "holm" else p.copy()

    def verdict(self, delta: float, p_adjusted: float, endpoint_kind: "str | EndpointKind") -> Verdict:
        """The word for one endpoint: ``delta`` is PEAR minus its comparator, ``p_adjusted`` already corrected.

        A missing p-value is an error, not "no change": an untested endpoint must not read as a tested one.
        """
        kind = EndpointKind.parse(endpoint_kind)
        if math.isnan(delta) or math.isnan(p_adjusted):
            raise PearLensError(f"verdict needs a difference and an adjusted p-value, got delta={delta}, "
                                f"p={p_adjusted}; an endpoint without a test has no verdict: leave it out of the table")
        if not 0 <= p_adjusted <= 1:
            raise PearLensError(f"adjusted p-value must lie in [0, 1], got {p_adjusted}")
        significant = p_adjusted < self.alpha
        if kind is EndpointKind.SAFETY:
            return Verdict.KNOWLEDGE_LOST if significant and delta < 0 else Verdict.KNOWLEDGE_KEPT
        if significant and delta > 0:
            return Verdict.HELPS
        if significant and delta < 0:
            return Verdict.HURTS
        return Verdict.NO_SIGNIFICANT_CHANGE

    def describe(self) -> str:
        """The rule in words, for the plan written before any test item exists."""
        adjust = ("the raw p-values of all endpoints in the family are adjusted with Holm–Bonferroni (step-down)"
                  if self.correction == "holm" else "the p-values are used as they are (no correction)")
        return (f"Verdict rule: {adjust}; an endpoint is significant when its adjusted p-value is below "
                f"{self.alpha:g}. Efficacy endpoints (context use): significant and PEAR higher = \"helps\"; "
                f"significant and PEAR lower = \"hurts\"; otherwise \"no significant change\". Safety endpoints "
                f"(closed-book knowledge): significant and PEAR lower = \"knowledge lost\"; otherwise "
                f"\"knowledge kept\". No other words are used.")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "text": self.describe()}
