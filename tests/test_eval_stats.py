"""Bootstrap intervals and the exact McNemar test against hand-worked cases."""
import math

import numpy as np
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.stats import bootstrap_ci, mcnemar_exact


def test_bootstrap_ci_contains_mean_narrows_and_is_seeded():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.6
    large = rng.random(2000) < 0.6
    lo_s, hi_s = bootstrap_ci(small, seed=1)
    lo_l, hi_l = bootstrap_ci(large, seed=1)
    assert lo_s <= small.mean() <= hi_s
    assert lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 3  # width shrinks like 1/sqrt(n): 40× the items, ~6× narrower
    assert bootstrap_ci(small, seed=1) == (lo_s, hi_s)
    assert bootstrap_ci(large, seed=2) != (lo_l, hi_l)  # n=50 CIs sit on a coarse grid; n=2000 do not
    # the normal approximation of a proportion's CI is close for n = 2000
    half = 1.96 * math.sqrt(large.mean() * (1 - large.mean()) / large.size)
    assert abs((hi_l - lo_l) / 2 - half) < 0.005


def test_bootstrap_ci_degenerate_and_bad_input():
    assert bootstrap_ci(np.ones(20, bool)) == (1.0, 1.0)
    assert bootstrap_ci(np.zeros(20, bool)) == (0.0, 0.0)
    with pytest.raises(PearLensError):
        bootstrap_ci(np.array([], bool))


def _pairs(a_only, b_only, both=3, neither=2):
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return np.array(a, bool), np.array(b, bool)


@pytest.mark.parametrize("a_only, b_only", [(5, 1), (1, 5), (10, 0), (3, 3), (7, 2), (0, 0), (40, 25)])
def test_mcnemar_exact_matches_the_binomial_formula(a_only, b_only):
    n, k = a_only + b_only, min(a_only, b_only)
    expected = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) * 0.5 ** n)
    res = mcnemar_exact(*_pairs(a_only, b_only))
    assert (res.a_only, res.b_only) == (a_only, b_only)
    assert res.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_hand_worked_values():
    assert mcnemar_exact(*_pairs(5, 1)).p_value == pytest.approx(14 / 64)  # 2·(1+6)/2^6
    assert mcnemar_exact(*_pairs(10, 0)).p_value == pytest.approx(2 / 1024)
    assert mcnemar_exact(*_pairs(3, 3)).p_value == 1.0
    # concordant items do not matter
    assert mcnemar_exact(*_pairs(5, 1, both=100, neither=50)).p_value == pytest.approx(14 / 64)
    # huge discordant counts do not overflow
    assert 0.0 <= mcnemar_exact(*_pairs(1500, 1400)).p_value <= 1.0
