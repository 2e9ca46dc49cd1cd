"""Error bars, tests per head and stability (pear_lens.uncertainty and the HeadScores methods built on it),
on synthetic per-prompt values: no model is loaded."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from statsmodels.stats.multitest import multipletests

from pear_lens import uncertainty as u
from pear_lens.errors import PearLensError
from pear_lens.results import HeadScores
from pear_lens.scores_folder import SCORES_JSON, SCORES_SAFETENSORS

SIZES = (15, 30, 45)
"""Prompts in each of the three settings (unequal, as the proxy task's settings can be)."""
CLEAN = (2.0, 3.0, 4.0)
"""True clean mean of each setting."""
L, H = 5, 6


def simulate(rng: np.random.Generator, mu: np.ndarray, sd: np.ndarray):
    """Per-prompt values of one dataset: π ~ N(c_s, 0.5) and π̃ = π + μ[s, l, h] + N(0, sd[l, h])."""
    setting = np.repeat(np.arange(len(SIZES)), SIZES)
    clean = np.concatenate([rng.normal(c, 0.5, n) for c, n in zip(CLEAN, SIZES)])
    patched = clean[:, None, None] + mu[setting] + rng.normal(0.0, 1.0, (len(setting), *sd.shape)) * sd
    return patched.astype(np.float32), clean.astype(np.float32), setting


def true_score(mu: np.ndarray, difference: str) -> np.ndarray:
    """The score the data estimate: the mean over settings of μ_s (absolute) or μ_s / c_s (relative)."""
    return (mu if difference == "absolute" else mu / np.array(CLEAN)[:, None, None]).mean(0)


def make_scores(patched, clean, setting, difference="absolute", **kw) -> HeadScores:
    """A HeadScores built the way a scan builds it: per-setting Δπ of the setting means, scores their mean."""
    patched, clean, setting = map(torch.as_tensor, (patched, clean, setting))
    per_setting, clean_metric = [], []
    for s in range(int(setting.max()) + 1):
        pm, cm = patched[setting == s].double().mean(0), clean[setting == s].double().mean()
        per_setting.append(pm - cm if difference == "absolute" else pm / cm - 1)
        clean_metric.append(float(cm))
    per_setting = torch.stack(per_setting).float()
    return HeadScores(scores=per_setting.mean(0), per_setting=per_setting, clean_metric=clean_metric,
                      model=kw.pop("model", "made-up"), method="path", metric="prob", difference=difference,
                      task={"settings": [[1, n] for n in SIZES[:len(clean_metric)]]}, per_prompt=patched.float(),
                      clean_per_prompt=clean.float(), prompt_setting=setting, **kw)


def strong_and_null(seed: int = 0, difference: str = "absolute") -> tuple[HeadScores, set, set]:
    """Scores where heads (0, 0), (1, 2), (3, 4) have a large effect (two positive, one negative) and the rest none."""
    rng = np.random.default_rng(seed)
    mu = np.zeros((len(SIZES), L, H))
    mu[:, 0, 0], mu[:, 1, 2], mu[:, 3, 4] = 1.5, 0.8, -1.0
    scores = make_scores(*simulate(rng, mu, np.full((L, H), 0.5)), difference)
    return scores, {(0, 0), (1, 2), (3, 4)}, {(l, h) for l in range(L) for h in range(H)} - {(0, 0), (1, 2), (3, 4)}


# --------------------------------------------------------------------------- calibration by simulation


@pytest.mark.parametrize("difference", ["absolute", "relative"])
def test_bootstrap_ci_covers_the_true_effect_and_the_test_holds_its_level(difference):
    """200 datasets × 30 heads (true effects drawn once) per difference.

    Coverage of the 95 % interval, pooled over 6000 intervals: binomial sd sqrt(0.95·0.05/6000) = 0.0028 (more
    in truth: the heads of one dataset share its resamples and clean values). A percentile interval with
    settings of 15–45 prompts covers a little less than 95 % (normal rather than Student quantiles in effect,
    and a ratio's skew for relative); measured 0.936 (absolute) and 0.928 (relative). The bounds
    [0.91, 0.975] (0.95 − 14 sd, + 9 sd) admit that known shortfall and catch an interval whose width is off by
    a third (normal theory: a third too narrow covers 0.81, a third too wide 0.99).
    False positives of the t-test at α = 0.05 under the null, pooled over 6000 tests: sd 0.0028; bounds
    [0.035, 0.065] (± 5 sd); measured 0.0485 for both differences.
    """
    rng = np.random.default_rng(7)
    mu = rng.normal(0.0, 0.5, (1, L, H)) + rng.normal(0.0, 0.2, (len(SIZES), L, H))
    sd = rng.uniform(0.3, 1.0, (L, H))
    truth = true_score(mu, difference)
    covered, false_positive = [], []
    for r in range(200):
        lo, hi = u.bootstrap_ci(*simulate(rng, mu, sd), difference, n_boot=1000, seed=r)
        covered.append((lo <= truth) & (truth <= hi))
        false_positive.append(u.head_pvalues(*simulate(rng, np.zeros_like(mu), sd), difference) < 0.05)
    coverage, fpr = float(np.mean(covered)), float(np.mean(false_positive))
    assert 0.91 <= coverage <= 0.975, coverage
    assert 0.035 <= fpr <= 0.065, fpr


# --------------------------------------------------------------------------- the statistic and its pieces


@pytest.mark.parametrize("difference", ["absolute", "relative"])
def test_score_statistic_reproduces_the_scores_and_the_linearisation_averages_to_it(difference):
    scores, _, _ = strong_and_null(1, difference)
    p, c, s = scores.per_prompt.numpy(), scores.clean_per_prompt.numpy(), scores.prompt_setting.numpy()
    stat = u.score_statistic(p, c, s, difference)
    assert stat.dtype == np.float64
    assert np.abs(stat - scores.scores.numpy()).max() < 1e-6
    independent = np.mean([
        (p[s == k].mean(0) - c[s == k].mean()) if difference == "absolute" else p[s == k].mean(0) / c[s == k].mean() - 1
        for k in range(3)], axis=0)
    assert np.abs(stat - independent).max() < 1e-6
    assert np.abs(u.linearised_effects(p, c, s, difference).mean(0) - stat).max() < 1e-12


def test_ci_brackets_the_point_is_cached_and_is_seeded():
    scores, _, _ = strong_and_null(2)
    lo, hi = scores.ci(n_boot=1000)
    point = torch.from_numpy(u.score_statistic(scores.per_prompt.numpy(), scores.clean_per_prompt.numpy(),
                                               scores.prompt_setting.numpy(), "absolute"))
    assert lo.shape == hi.shape == (L, H) and bool((lo <= point).all() and (point <= hi).all())
    assert scores.ci(n_boot=1000)[0] is lo  # the cached result
    again = make_scores(scores.per_prompt, scores.clean_per_prompt, scores.prompt_setting).ci(n_boot=1000)
    assert torch.equal(again[0], lo) and torch.equal(again[1], hi)
    assert not torch.equal(scores.ci(n_boot=1000, seed=1)[0], lo)
    wider = scores.ci(n_boot=1000, level=0.99)
    assert bool((wider[0] <= lo).all() and (wider[1] >= hi).all())


def test_too_few_replicates_and_a_zero_clean_mean_are_refused_with_one_line():
    scores, _, _ = strong_and_null(3)
    with pytest.raises(PearLensError, match=r"n_boot=999 .* n_boot >= 1000") as e:
        scores.ci(n_boot=999)
    assert "\n" not in str(e.value)
    p, c, s = simulate(np.random.default_rng(0), np.zeros((3, 2, 2)), np.ones((2, 2)))
    c[s == 0] = 0.0  # setting 0's clean mean is 0
    with pytest.raises(PearLensError, match="difference='absolute'") as e:
        u.bootstrap_ci(p, c, s, "relative", n_boot=1000)
    assert "\n" not in str(e.value)
    with pytest.raises(PearLensError, match="difference='absolute'"):
        u.head_pvalues(p, c, s, "relative")
    u.bootstrap_ci(p, c, s, "absolute", n_boot=1000)  # the fix it names works


def test_a_resample_with_zero_clean_mean_is_refused():
    # setting 0: clean values 0, 0, 1 (mean 1/3); a resample of two zeros has clean mean 0
    p = np.zeros((3, 1, 1), dtype=np.float32)
    c = np.array([0.0, 0.0, 1.0], dtype=np.float32)
    with pytest.raises(PearLensError, match="resample.*difference='absolute'"):
        u.bootstrap_ci(p, c, np.zeros(3, dtype=np.int64), "relative", n_boot=1000)


def test_significant_finds_the_strong_heads_and_not_the_null_ones():
    scores, strong, null = strong_and_null(4)
    found = scores.significant(0.05)
    assert set(found) == strong
    assert found == [(0, 0), (1, 2), (3, 4)]  # by score, largest first
    assert not set(found) & null
    p = scores.pvalues()
    assert p.shape == (L, H) and float(p[0, 0]) < 1e-6


def test_fdr_agrees_with_statsmodels_and_never_rejects_nan():
    p = np.random.default_rng(0).uniform(0, 0.1, (4, 5)) ** 2
    reject, q = u.fdr(p, 0.05)
    ref_reject, ref_q, _, _ = multipletests(p.ravel(), alpha=0.05, method="fdr_bh")
    assert np.array_equal(reject.ravel(), ref_reject) and np.allclose(q.ravel(), ref_q)
    p[1, 2] = p[3, 0] = np.nan
    reject, q = u.fdr(p, 0.05)
    kept = ~np.isnan(p.ravel())
    ref_reject, ref_q, _, _ = multipletests(p.ravel()[kept], alpha=0.05, method="fdr_bh")
    assert not reject[1, 2] and not reject[3, 0] and np.isnan(q[1, 2]) and np.isnan(q[3, 0])
    assert np.array_equal(reject.ravel()[kept], ref_reject) and np.allclose(q.ravel()[kept], ref_q)
    assert not u.fdr(np.full((2, 2), np.nan))[0].any()


@pytest.mark.parametrize("difference", ["absolute", "relative"])
def test_heads_with_the_same_effect_on_every_prompt_are_named_never_findings(difference):
    scores, strong, _ = strong_and_null(5, difference)
    patched = scores.per_prompt.clone()
    patched[:, 2, 2] = scores.clean_per_prompt  # patching head (2, 2) changes nothing
    if difference == "absolute":
        patched[:, 4, 5] = scores.clean_per_prompt + 0.25  # the same shift on every prompt
    scores = make_scores(patched, scores.clean_per_prompt, scores.prompt_setting, difference)
    arrays = (patched.numpy(), scores.clean_per_prompt.numpy())
    constant = {(2, 2), (4, 5)} if difference == "absolute" else {(2, 2)}
    assert {tuple(x) for x in np.argwhere(u.constant_effects(*arrays))} == constant
    with pytest.warns(UserWarning, match=r"same effect on every prompt.*L2\.H2"):
        p = scores.pvalues()
    for head in constant:
        assert torch.isnan(p[head])
    lo, hi = scores.ci(n_boot=1000)
    point = u.score_statistic(*arrays, scores.prompt_setting.numpy(), difference)
    for head in constant:
        assert float(lo[head]) == float(hi[head]) == point[head]  # the interval is the point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert set(scores.significant()) == strong  # a constant shift is never listed as a finding
        df = scores.to_dataframe(ci=True, n_boot=1000)
    assert df.loc[(df.layer == 2) & (df["head"] == 2), "q_value"].isna().all()


def test_without_per_prompt_values_every_uncertainty_method_says_rescore():
    scores, _, _ = strong_and_null(6)
    old = HeadScores(scores=scores.scores, per_setting=scores.per_setting, clean_metric=scores.clean_metric,
                     model="made-up", method="path", metric="prob", difference="absolute", task={})
    calls = [old.ci, old.pvalues, old.significant, lambda: old.to_dataframe(ci=True), old.caterpillar,
             lambda: old.heatmap(mark_significant=True)]
    for call in calls:
        with pytest.raises(PearLensError, match="no per-prompt values.*rescore it") as e:
            call()
        assert "\n" not in str(e.value)
    assert list(old.to_dataframe().columns) == list(scores.to_dataframe().columns)  # the default is unchanged


def test_to_dataframe_with_ci_adds_the_interval_and_test_columns():
    scores, _, _ = strong_and_null(7)
    plain = scores.to_dataframe()
    df = scores.to_dataframe(ci=True, n_boot=1000, level=0.9)
    assert list(plain.columns) == ["layer", "head", "score", "rank", "model", "method", "metric", "difference"]
    assert set(df.columns) - set(plain.columns) == {"ci_low", "ci_high", "p_value", "q_value", "n_boot", "level"}
    lo, hi = scores.ci(n_boot=1000, level=0.9)
    assert np.array_equal(df["ci_low"].to_numpy(), lo.flatten().numpy())
    assert np.array_equal(df["ci_high"].to_numpy(), hi.flatten().numpy())
    assert np.allclose(df["q_value"], u.fdr(scores.pvalues().numpy())[1].ravel())
    assert (df["n_boot"] == 1000).all() and (df["level"] == 0.9).all()


# --------------------------------------------------------------------------- stability across seeds


def test_stability_on_hand_made_maps():
    a = np.array([[5.0, 4.0, 0.0], [3.0, 0.0, 0.0]])  # top 2: (0, 0), (0, 1)
    b = np.array([[5.0, 0.0, 4.0], [3.0, 0.0, 0.0]])  # top 2: (0, 0), (0, 2)
    c = np.array([[1.0, 1.0, 0.5], [0.5, 0.5, 0.2]])  # ties inside and outside the top 2 decide nothing
    st = u.stability([a, b, c], k=2)
    assert np.array_equal(st.top_k_probability, np.array([[1.0, 2 / 3, 1 / 3], [0.0, 0.0, 0.0]]))
    assert np.array_equal(st.overlap, np.array([[1.0, 0.5, 1.0], [0.5, 1.0, 0.5], [1.0, 0.5, 1.0]]))
    assert st.mean_overlap == pytest.approx(2 / 3)
    assert st.stable_heads() == [(0, 0)]
    assert st.stable_heads(2 / 3) == [(0, 0), (0, 1)]
    df = st.to_dataframe()
    assert list(df.columns) == ["layer", "head", "top_k_probability", "mean_score", "rank"]
    assert df.loc[0, "mean_score"] == pytest.approx(11 / 3) and df.loc[0, "rank"] == 1
    assert sorted(df["rank"]) == list(range(1, 7))
    # the tie rule is HeadScores.top_k's; a map whose top k the rule alone picks: tests/test_degenerate_statistics.py
    c = np.ones((2, 3))
    ties = make_scores(*simulate(np.random.default_rng(0), np.zeros((3, 2, 3)), np.ones((2, 3))))
    ties.scores = torch.tensor(c, dtype=torch.float32)
    assert [tuple(divmod(int(i), 3)) for i in u.top_k_flat(c, 4)] == ties.top_k(4)


def test_headscores_stability_checks_what_it_compares():
    maps = [strong_and_null(seed)[0] for seed in (10, 11, 12)]
    st = maps[0].stability(maps[1:], k=3)
    assert st.n_maps == 3 and st.stable_heads() == [(0, 0), (1, 2)]  # the negative head is never in the top 3
    assert st.overlap.shape == (3, 3)
    with pytest.raises(PearLensError, match="at least 2 score maps"):
        maps[0].stability([], k=3)
    other = make_scores(maps[1].per_prompt, maps[1].clean_per_prompt, maps[1].prompt_setting, model="another")
    with pytest.raises(PearLensError, match="one model; got 'made-up' and 'another'"):
        maps[0].stability([other], k=3)
    small = make_scores(maps[1].per_prompt[:, :2], maps[1].clean_per_prompt, maps[1].prompt_setting)
    with pytest.raises(PearLensError, match=r"one shape; got \(5, 6\) and \(2, 6\)"):
        maps[0].stability([small], k=3)
    with pytest.raises(PearLensError, match="one \\[n_layers, n_heads\\] shape"):
        u.stability([np.zeros((2, 3)), np.zeros((3, 2))], k=1)


# --------------------------------------------------------------------------- save and load


def assert_same(a: HeadScores, b: HeadScores) -> None:
    for name in ("scores", "per_setting", "per_prompt", "clean_per_prompt", "prompt_setting"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or (torch.equal(x, y) and x.dtype == y.dtype), name
    for name in ("clean_metric", "model", "method", "metric", "difference", "task", "options", "fingerprint", "extra"):
        assert getattr(a, name) == getattr(b, name), name


def test_save_and_load_round_trip_bit_exact(tmp_path):
    scores, _, _ = strong_and_null(8, "relative")
    scores.options, scores.extra, scores.fingerprint = {"ablation": "mean"}, {"seconds": 1.5}, "abc123"
    out = scores.save(tmp_path / "scores")
    assert sorted(p.name for p in out.iterdir()) == [SCORES_SAFETENSORS, SCORES_JSON]
    assert_same(scores, HeadScores.load(out))
    assert [p.name for p in tmp_path.iterdir()] == ["scores"]  # no staging folder left behind
    # without per-prompt values, too
    bare = HeadScores(scores=scores.scores, per_setting=scores.per_setting, clean_metric=scores.clean_metric,
                      model="m", method="path", metric="prob", difference="relative", task={})
    assert_same(bare, HeadScores.load(bare.save(tmp_path / "bare")))


def test_save_replaces_only_its_own_folder_and_only_when_asked(tmp_path):
    scores, _, _ = strong_and_null(9)
    out = scores.save(tmp_path / "s")
    with pytest.raises(PearLensError, match="overwrite=True"):
        scores.save(out)
    scores.scores = scores.scores + 1
    scores.save(out, overwrite=True)
    assert torch.equal(HeadScores.load(out).scores, scores.scores)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(PearLensError, match="not written by HeadScores.save"):
        scores.save(foreign, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_cut_or_edited_folder_is_refused_with_one_line(tmp_path):
    scores, _, _ = strong_and_null(10)
    out = scores.save(tmp_path / "s")
    tensors = out / SCORES_SAFETENSORS
    whole = tensors.read_bytes()
    tensors.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PearLensError, match="SHA-256 differs") as e:
        HeadScores.load(out)
    assert "\n" not in str(e.value)
    tensors.write_bytes(whole)
    meta = json.loads((out / SCORES_JSON).read_text())
    for edit in ({"per_setting": [[[0.0] * H] * L] * 3}, {"kind": "something else"},
                 {"tensors": {**meta["tensors"], "shapes": {**meta["tensors"]["shapes"], "scores": [6, 5]}}}):
        (out / SCORES_JSON).write_text(json.dumps({**meta, **edit}))
        with pytest.raises(PearLensError, match="damaged or foreign") as e:
            HeadScores.load(out)
        assert "\n" not in str(e.value)
    (out / SCORES_JSON).write_text(json.dumps(meta))
    assert_same(scores, HeadScores.load(out))


# --------------------------------------------------------------------------- figures


def test_caterpillar_draws_the_intervals_and_fills_the_significant_heads():
    scores, strong, _ = strong_and_null(11)
    fig = scores.caterpillar(top=8, n_boot=1000)
    lo, hi = scores.ci(n_boot=1000)
    q = u.fdr(scores.pvalues().numpy())[1]
    filled, hollow = fig.data
    assert filled.marker.symbol == "circle" and hollow.marker.symbol == "circle-open"
    drawn = {}
    for trace, is_filled in ((filled, True), (hollow, False)):
        for label, x, plus, minus in zip(trace.y, trace.x, trace.error_x.array, trace.error_x.arrayminus):
            layer, head = (int(part[1:]) for part in label.split("."))
            assert x == pytest.approx(float(scores.scores[layer, head]))
            assert x + plus == pytest.approx(float(hi[layer, head])) and x - minus == pytest.approx(float(lo[layer, head]))
            assert bool(q[layer, head] < 0.05) is is_filled
            drawn[(layer, head)] = is_filled
    assert list(fig.layout.yaxis.categoryarray) == [f"L{l}.H{h}" for l, h in scores.top_k(8)]
    assert {h for h, f in drawn.items() if f} == strong - {(3, 4)}  # the negative head is not in the top 8
    assert [s.x0 for s in fig.layout.shapes] == [0.0]
    assert "95 % bootstrap CI (B = 1000" in fig.layout.xaxis.title.text


def test_heatmap_marks_the_heads_whose_interval_excludes_zero_and_is_unchanged_otherwise():
    scores, _, _ = strong_and_null(12)
    plain = scores.heatmap()
    before = HeadScores(scores=scores.scores, per_setting=scores.per_setting, clean_metric=scores.clean_metric,
                        model=scores.model, method=scores.method, metric=scores.metric,
                        difference=scores.difference, task=scores.task).heatmap()
    assert plain.to_json() == before.to_json()
    fig = scores.heatmap(mark_significant=True, n_boot=1000)
    assert len(fig.data) == len(plain.data) + 1
    dots = fig.data[-1]
    lo, hi = scores.ci(n_boot=1000)
    expected = {(l, h) for l in range(L) for h in range(H) if lo[l, h] > 0 or hi[l, h] < 0}
    assert set(zip(dots.y, dots.x)) == expected and {(0, 0), (1, 2), (3, 4)} <= expected
    assert "excludes 0" in dots.name and "excludes 0" in fig.layout.title.text
