"""Bootstrap intervals (item-level, clustered, paired, PEAR against its controls), the exact McNemar test and
Holm's correction against hand-worked cases."""
import math

import numpy as np
import pytest

from pear_lens.errors import PearLensError
from pear_lens.evaluation.stats import (bootstrap_ci, cluster_bootstrap_ci, controls_distribution, holm, mcnemar_exact,
                                       paired_cluster_bootstrap_diff, paired_diff_vs_controls)


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


# --------------------------------------------------------------------------- Holm


def test_holm_textbook_example():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_does_not_depend_on_input_order():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.03])
    adjusted = holm(p)
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = rng.permutation(p.size)
        assert holm(p[perm]) == pytest.approx(adjusted[perm])
    assert np.all(adjusted >= p) and np.all(np.diff(adjusted[np.argsort(p)]) >= 0)  # never below raw, monotone


def test_holm_caps_at_one_and_passes_nan_through_uncounted():
    assert holm([0.4, 0.5]) == pytest.approx([0.8, 0.8])
    assert holm([0.6, 0.9]).tolist() == [1.0, 1.0]
    out = holm([0.01, np.nan, 0.04])  # two tests, not three: 0.02 and 0.04
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert holm([]).size == 0
    with pytest.raises(PearLensError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


# --------------------------------------------------------------------------- clustered bootstrap


def _clustered(n_clusters=40, size=5, seed=0):
    """Clusters whose items are all right or all wrong: the items are really only ``n_clusters`` outcomes."""
    rng = np.random.default_rng(seed)
    cluster_ok = rng.random(n_clusters) < 0.5
    return np.repeat(cluster_ok, size), np.repeat(np.arange(n_clusters), size)


def test_cluster_bootstrap_is_wider_when_clusters_move_together():
    correct, clusters = _clustered()
    lo_i, hi_i = bootstrap_ci(correct, seed=3)
    lo_c, hi_c = cluster_bootstrap_ci(correct, clusters, seed=3)
    assert lo_c <= correct.mean() <= hi_c
    # 40 independent outcomes, not 200: about √5 ≈ 2.2 times wider
    assert 1.8 < (hi_c - lo_c) / (hi_i - lo_i) < 2.7
    # cluster labels need not be sorted or numbers: only which items share a cluster matters
    names = np.array([f"fact {c}" for c in clusters])
    perm = np.random.default_rng(1).permutation(correct.size)
    lo_s, hi_s = cluster_bootstrap_ci(correct[perm], names[perm], seed=3)
    assert 1.8 < (hi_s - lo_s) / (hi_i - lo_i) < 2.7


def test_cluster_bootstrap_with_singleton_clusters_is_the_item_bootstrap():
    rng = np.random.default_rng(5)
    correct = rng.random(150) < 0.7
    assert cluster_bootstrap_ci(correct, np.arange(150), seed=2) == bootstrap_ci(correct, seed=2)  # draw for draw
    assert cluster_bootstrap_ci(correct, None, seed=2) == bootstrap_ci(correct, seed=2)
    # shuffled singleton labels give other draws but the same width in expectation
    widths = []
    for seed in range(20):
        labels = rng.permutation(150)
        lo_c, hi_c = cluster_bootstrap_ci(correct, labels, seed=seed)
        lo_i, hi_i = bootstrap_ci(correct, seed=seed + 100)
        widths.append((hi_c - lo_c) - (hi_i - lo_i))
    assert abs(np.mean(widths)) < 0.01  # each width is about 0.15


def test_cluster_bootstrap_bad_input():
    with pytest.raises(PearLensError, match="one cluster per item"):
        cluster_bootstrap_ci(np.ones(4, bool), [0, 1, 2])
    with pytest.raises(PearLensError, match="level"):
        cluster_bootstrap_ci(np.ones(4, bool), level=1.5)


def test_paired_cluster_diff_known_answer_and_clustering():
    correct, clusters = _clustered(n_clusters=60, seed=2)
    b = correct.copy()
    a = correct.copy()
    a[clusters < 12] = True  # A fixes every item of 12 clusters the baseline may get wrong
    res = paired_cluster_bootstrap_diff(a, b, clusters, seed=0)
    assert res.estimate == pytest.approx(a.mean() - b.mean())
    assert res.n_items == 300 and res.n_clusters == 60
    assert res.ci_low > 0 and res.p_value < 0.01
    item = paired_cluster_bootstrap_diff(a, b, None, seed=0)
    assert item.n_clusters == 300 and (item.ci_high - item.ci_low) < (res.ci_high - res.ci_low) / 1.8
    same = paired_cluster_bootstrap_diff(b, b, clusters)
    assert (same.estimate, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    swapped = paired_cluster_bootstrap_diff(b, a, clusters, seed=0)
    assert swapped.estimate == pytest.approx(-res.estimate) and swapped.ci_high == pytest.approx(-res.ci_low)


def test_paired_diff_is_narrower_than_unpaired_intervals():
    rng = np.random.default_rng(7)
    b = rng.random(300) < 0.5
    a = b.copy()
    a[rng.choice(np.flatnonzero(~b), 15, replace=False)] = True  # +5 points, on the same items
    res = paired_cluster_bootstrap_diff(a, b, seed=1)
    lo_a, _ = bootstrap_ci(a, seed=1)
    assert res.ci_low > 0 and bootstrap_ci(b, seed=2)[1] > lo_a  # separate intervals overlap, the paired one is clear
    assert res.estimate == pytest.approx(0.05)


# --------------------------------------------------------------------------- PEAR against its controls


def test_paired_diff_vs_controls_known_answer():
    n = 200
    pear = np.zeros(n, bool)
    pear[:120] = True                                  # 0.60
    controls = np.zeros((3, n), bool)
    controls[0, :100] = True                           # 0.50
    controls[1, 20:120] = True                         # 0.50
    controls[2, :80] = True                            # 0.40
    res = paired_diff_vs_controls(pear, controls, seed=0)
    assert res.estimate == pytest.approx(0.60 - (0.50 + 0.50 + 0.40) / 3)
    assert res.ci_low < res.estimate < res.ci_high and res.ci_low > 0 and res.p_value < 0.01
    assert res.n_items == n and res.n_clusters == n
    # one control: exactly the paired difference with the same draws
    one = paired_diff_vs_controls(pear, controls[:1], seed=4)
    two = paired_cluster_bootstrap_diff(pear, controls[0], seed=4)
    assert (one.estimate, one.ci_low, one.ci_high, one.p_value) == (two.estimate, two.ci_low, two.ci_high, two.p_value)


def test_paired_diff_vs_controls_resamples_items_jointly():
    # PEAR and every control differ only on the same item pairs; joint resampling sees no spread at all
    n = 100
    pear = np.arange(n) % 2 == 0
    controls = np.stack([np.arange(n) % 2 == 0] * 4)
    res = paired_diff_vs_controls(pear, controls, seed=0)
    assert (res.estimate, res.ci_low, res.ci_high, res.p_value) == (0.0, 0.0, 0.0, 1.0)
    # clusters of PEAR-only wins: clustered interval is wider than the item one
    clusters = np.arange(n) // 10
    pear2 = controls[0].copy()
    pear2[(clusters % 3 == 0) & ~pear2] = True
    item = paired_diff_vs_controls(pear2, controls, seed=0)
    clustered = paired_diff_vs_controls(pear2, controls, clusters, seed=0)
    assert clustered.n_clusters == 10 and (clustered.ci_high - clustered.ci_low) > (item.ci_high - item.ci_low)
    with pytest.raises(PearLensError, match="one row"):
        paired_diff_vs_controls(pear, np.zeros((0, n), bool))


def test_controls_distribution_quantiles():
    s = controls_distribution([0.04, 0.0, 0.03, 0.01, 0.02])  # order does not matter
    assert (s.median, s.q10, s.q90, s.n) == pytest.approx((0.02, 0.004, 0.036, 5))
    one = controls_distribution([-0.01])
    assert (one.median, one.q10, one.q90) == (-0.01, -0.01, -0.01)
    s6 = controls_distribution([-0.02, 0.0, 0.0, 0.01, 0.05, 0.30])  # one lucky control moves q90, not the median
    assert s6.median == pytest.approx(0.005) and s6.q90 == pytest.approx(0.175)
    assert (s6.low, s6.high) == (-0.02, 0.30)  # the extremes, which the quantiles of few controls interpolate away
    with pytest.raises(PearLensError):
        controls_distribution([])


def test_clustered_p_values_keep_their_level_where_item_level_ones_do_not():
    # no true difference, but whole clusters of 5 items flip together: items treated as independent
    # reject far too often; resampling clusters keeps false positives near 5 %
    rng = np.random.default_rng(0)
    g, size, sims = 60, 5, 100
    clusters = np.repeat(np.arange(g), size)
    clustered = item_level = 0
    for r in range(sims):
        a, b = (np.repeat(rng.random(g) < 0.5, size) for _ in range(2))
        clustered += paired_cluster_bootstrap_diff(a, b, clusters, n_resamples=500, seed=r).p_value < 0.05
        item_level += paired_cluster_bootstrap_diff(a, b, None, n_resamples=500, seed=r).p_value < 0.05
    assert clustered / sims <= 0.12
    assert item_level / sims >= 0.25


def test_docstring_examples_run():
    import doctest

    from pear_lens.evaluation import stats

    result = doctest.testmod(stats)
    assert result.attempted >= 3 and result.failed == 0
