"""The verdict words follow from the written rule alone: one number changed in a fixture changes the word."""
import math

import numpy as np
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.verdict import EndpointKind, Verdict, VerdictRule

RULE = VerdictRule(alpha=0.05, correction="holm")


@pytest.mark.parametrize("delta, p, kind, word", [
    (0.06, 0.01, "efficacy", "helps"),
    (0.06, 0.05, "efficacy", "no significant change"),   # p = alpha is not below alpha
    (0.06, 0.049, "efficacy", "helps"),
    (-0.06, 0.01, "efficacy", "hurts"),
    (-0.06, 0.20, "efficacy", "no significant change"),
    (0.0, 0.01, "efficacy", "no significant change"),
    (-0.03, 0.01, "safety", "knowledge lost"),
    (-0.03, 0.06, "safety", "knowledge kept"),
    (0.03, 0.001, "safety", "knowledge kept"),            # more knowledge is not a loss
])
def test_verdict_table(delta, p, kind, word):
    assert RULE.verdict(delta, p, kind) == Verdict(word)
    assert RULE.verdict(delta, p, EndpointKind(kind)).value == word


def test_one_number_changes_the_word():
    assert RULE.verdict(0.04, 0.03, "efficacy") is Verdict.HELPS
    assert RULE.verdict(0.04, 0.07, "efficacy") is Verdict.NO_SIGNIFICANT_CHANGE      # p
    assert RULE.verdict(-0.04, 0.03, "efficacy") is Verdict.HURTS                     # sign of delta
    assert VerdictRule(alpha=0.01).verdict(0.04, 0.03, "efficacy") is Verdict.NO_SIGNIFICANT_CHANGE  # alpha
    assert RULE.verdict(-0.04, 0.03, "safety") is Verdict.KNOWLEDGE_LOST
    assert RULE.verdict(-0.04, 0.07, "safety") is Verdict.KNOWLEDGE_KEPT


def test_correction_is_part_of_the_rule():
    raw = [0.03, 0.04, np.nan]  # two tested endpoints: Holm makes both 0.06
    holm_adj = RULE.adjust(raw)
    assert holm_adj[:2] == pytest.approx([0.06, 0.06]) and math.isnan(holm_adj[2])
    assert [RULE.verdict(0.05, p, "efficacy") for p in holm_adj[:2]] == [Verdict.NO_SIGNIFICANT_CHANGE] * 2
    plain = VerdictRule(correction="none")
    assert [plain.verdict(0.05, p, "efficacy") for p in plain.adjust(raw)[:2]] == [Verdict.HELPS] * 2


def test_describe_states_every_number_and_word():
    text = RULE.describe()
    assert "0.05" in text and "Holm" in text
    for word in Verdict:
        assert f'"{word.value}"' in text
    assert "0.01" in VerdictRule(alpha=0.01).describe() and "no correction" in VerdictRule(correction="none").describe()
    assert RULE.to_dict() == {"alpha": 0.05, "correction": "holm", "text": text}


def test_bad_rules_and_inputs_are_refused():
    with pytest.raises(PearLensError, match="alpha"):
        VerdictRule(alpha=0.0)
    with pytest.raises(PearLensError, match="correction"):
        VerdictRule(correction="bonferroni")
    with pytest.raises(PearLensError, match="endpoint kind"):
        RULE.verdict(0.1, 0.01, "primary")
    with pytest.raises(PearLensError, match="without a test"):
        RULE.verdict(0.1, float("nan"), "efficacy")
    with pytest.raises(PearLensError, match=r"\[0, 1\]"):
        RULE.verdict(0.1, 1.5, "efficacy")


def test_docstring_example_runs():
    import doctest

    from pear_lens.evaluation import verdict

    result = doctest.testmod(verdict)
    assert result.attempted >= 2 and result.failed == 0
