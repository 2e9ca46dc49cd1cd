"""Intervals for the head atlas's rank correlations, with heads and prompts resampled together.

Spearman's ρ of Δπ with a detector's score is a statistic of a sample of heads, and each head's two scores
are means over samples of prompts. So each bootstrap replicate draws the heads with replacement (the
correlation's units) and recomputes both scores from prompts drawn with replacement: Owen's (2007)
"pigeonhole" bootstrap for data crossed in two sampled factors, which errs on the conservative side. The
interval is the replicates' percentile interval. Resampling prompts alone, with the heads fixed, misses the
variability that matters and gives intervals a few hundredths wide.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pear_lens.errors import PearLensError
from pear_lens.uncertainty import bootstrap_replicates
from pear_lens.vocabulary import StrEnum

if TYPE_CHECKING:
    from pear_lens.results import HeadScores

MIN_HEADS = 3
"""Fewer heads than this leave a rank correlation undefined (the rule of :func:`pear_lens.agreement.spearman`)."""


class Resampled(StrEnum):
    """What a correlation's bootstrap replicates resample."""

    HEADS_AND_PROMPTS = "heads, Δπ prompts, detector prompts"
    """Heads, the detector's prompts and Δπ's prompts (within each proxy-task setting)."""
    HEADS_AND_SHARED_PROMPTS = "heads, shared prompts"
    """Heads and the prompts both maps scored, drawn once for both (``paired``: two methods on one task)."""
    HEADS_AND_DETECTOR_PROMPTS = "heads, detector prompts"
    """Heads and the detector's prompts; Δπ held at its scores, because its per-prompt values are missing
    (a run from before pear_lens kept them) or cannot be resampled (the statistics' note says why)."""


@dataclass(frozen=True)
class RankCorrelation:
    """Spearman's ρ over heads and its bootstrap interval; ``undefined`` names why when there is none."""

    rho: float
    """NaN when undefined (fewer than 3 heads, or a score constant over the heads)."""
    low: float
    high: float
    """The interval's ends: NaN when ``undefined`` is set."""
    undefined: str
    """Empty when the interval is defined, else why it is not."""
    resampled: Resampled
    n_boot: int
    level: float
    n_undefined: int
    """Replicates whose ρ is undefined (a score constant over the heads drawn), left out of the quantiles."""

    @property
    def text(self) -> str:
        """``0.21 [0.05, 0.37]``, or the word "undefined" and why: never a NaN."""
        if np.isnan(self.rho):
            return f"undefined ({self.undefined or 'ρ is not a number'})"
        if self.undefined:
            return f"{self.rho:.2f} [interval undefined: {self.undefined}]"
        return f"{self.rho:.2f} [{self.low:.2f}, {self.high:.2f}]"


def delta_pi_replicates(delta_pi: "HeadScores", n_boot: int, rng: np.random.Generator
                        ) -> tuple[np.ndarray | None, str]:
    """``([n_boot, n_heads] replicates of the flat Δπ, "")`` from its per-prompt values, resampled as
    :func:`pear_lens.uncertainty.bootstrap_ci` does; ``(None, why)`` where they cannot be."""
    if delta_pi.per_prompt is None:
        return None, ("Δπ keeps no per-prompt values (a run from before pear_lens kept them), so its prompts were "
                      "held fixed")
    missing = set(range(delta_pi.per_setting.shape[0])) - set(delta_pi.prompt_setting.unique().tolist())
    if missing:
        return None, f"Δπ's settings {sorted(missing)} have no per-prompt values, so its prompts were held fixed"
    try:
        reps = bootstrap_replicates(delta_pi.per_prompt.numpy(), delta_pi.clean_per_prompt.numpy(),
                                    delta_pi.prompt_setting.numpy(), delta_pi.difference, n_boot=n_boot, seed=rng)
    except PearLensError as e:  # a relative Δπ whose clean mean is 0 in a resample
        return None, f"Δπ's prompts were held fixed: {e}"
    return reps.reshape(n_boot, -1), ""


def score_replicates(per_prompt: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_heads]`` replicates of a detector's score (the mean over the prompts it used,
    ``per_prompt [n_prompts, n_layers, n_heads]``), its prompts resampled as Δπ's are within a setting."""
    n = per_prompt.shape[0]
    return bootstrap_replicates(per_prompt, np.zeros(n), np.zeros(n, dtype=np.int64), "absolute", n_boot=n_boot,
                                seed=rng).reshape(n_boot, -1)


def row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row of ``x [B, n]`` with the same row of ``y`` (average ranks for ties);
    NaN for a row where either is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx * rx).sum(1) * (ry * ry).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(1) / den, np.nan)


def why_undefined(delta: np.ndarray, score: np.ndarray, label: str) -> str:
    """Why ρ of the two flat score maps is undefined, or ``""``: fewer than 3 heads, a NaN or infinite score, or
    a map the same for every head (then every head ties, and ρ's average ranks carry no order)."""
    if delta.size < MIN_HEADS:
        return f"fewer than {MIN_HEADS} heads"
    for values, name in ((delta, "Δπ"), (score, f"the {label} score")):
        bad = int((~np.isfinite(values)).sum())
        if bad:
            return f"{name} is NaN or infinite for {bad} of {values.size} heads"
        if np.ptp(values) == 0:
            return f"{name} is the same for every head"
    return ""


def rank_correlation(rho: float, delta: np.ndarray, score: np.ndarray, *, label: str,
                     delta_reps: np.ndarray | None, score_reps: np.ndarray, heads: np.ndarray,
                     level: float) -> RankCorrelation:
    """ρ (computed by the caller) of the flat score maps ``delta`` and ``score`` with its percentile interval.

    Replicate b pairs ``delta_reps[b]`` (``delta`` itself where None) and ``score_reps[b]`` at the heads
    ``heads[b]`` (``[B, n_heads]`` flat indices drawn with replacement). Replicates whose ρ is undefined
    are left out and counted; when they are more than a tail's share of B, ``(1 − level)/2``, the interval
    is named undefined rather than read from the rest.
    """
    n_boot = heads.shape[0]
    resampled = Resampled.HEADS_AND_DETECTOR_PROMPTS if delta_reps is None else Resampled.HEADS_AND_PROMPTS

    def result(low=np.nan, high=np.nan, undefined="", n_undefined=0) -> RankCorrelation:
        return RankCorrelation(float(rho), float(low), float(high), undefined, resampled, n_boot, level, n_undefined)

    reason = why_undefined(delta, score, label)
    if reason:
        return result(undefined=reason, n_undefined=n_boot)
    x = np.take_along_axis(delta_reps, heads, 1) if delta_reps is not None else delta[heads]
    boot = row_spearman(x, np.take_along_axis(score_reps, heads, 1))
    defined = boot[np.isfinite(boot)]
    n_undefined = n_boot - defined.size
    tail = (1.0 - level) / 2.0
    if n_undefined > tail * n_boot:
        return result(undefined=f"ρ is undefined in {n_undefined} of {n_boot} replicates (a score is the same "
                                f"for every head drawn)", n_undefined=n_undefined)
    low, high = np.quantile(defined, [tail, 1.0 - tail])
    return result(low, high, n_undefined=n_undefined)


def head_score_correlation(a: "HeadScores", b: "HeadScores", *, n_boot: int = 2000, level: float = 0.95,
                           seed: int = 0, label: str = "second", paired: bool = False) -> RankCorrelation:
    """Spearman's ρ over heads of two head-score maps of one model (e.g. the proxy task's Δπ and a RAG task's
    effect), with heads and both maps' prompts resampled as the atlas resamples Δπ and a detector.

    ``paired``: the two maps scored the same prompts (a scan and its approximation: two methods on one task), so
    each replicate draws the prompts once for both; the interval then measures how the maps differ on those
    prompts, not how two independent draws of them would (a map paired with itself gives [1, 1]).

    Ties take average ranks (:func:`pear_lens.agreement.spearman`). Where ρ is undefined (a map constant
    over the heads or holding a NaN or infinite score, fewer than 3 heads) the result's ``rho``, ``low`` and
    ``high`` are NaN and ``undefined`` names why; its ``text`` reads "undefined (...)", never a NaN."""
    from pear_lens.agreement import spearman

    if tuple(a.scores.shape) != tuple(b.scores.shape):
        raise PearLensError(f"the two score maps have different shapes {tuple(a.scores.shape)} and "
                            f"{tuple(b.scores.shape)}; compare maps of one model")
    x, y = a.scores.flatten(), b.scores.flatten()
    rng = np.random.default_rng(seed)
    reason = why_undefined(x.double().numpy(), y.double().numpy(), label)
    if reason:  # before resampling: a map of NaNs would fail there with a less useful message
        return RankCorrelation(float("nan"), float("nan"), float("nan"), reason,
                               Resampled.HEADS_AND_SHARED_PROMPTS if paired else Resampled.HEADS_AND_PROMPTS,
                               n_boot, level, n_boot)
    if paired:
        _check_paired(a, b, label)
        draw = int(rng.integers(2**63))  # one seed for both: the same prompts in every replicate
        a_reps, why_a = delta_pi_replicates(a, n_boot, np.random.default_rng(draw))
        b_reps, why = delta_pi_replicates(b, n_boot, np.random.default_rng(draw))
        if a_reps is None:
            raise PearLensError(f"the first map cannot be resampled with the {label} map: {why_a}")
    else:
        a_reps, _ = delta_pi_replicates(a, n_boot, rng)
        b_reps, why = delta_pi_replicates(b, n_boot, rng)
    if b_reps is None:
        raise PearLensError(f"the {label} map cannot be resampled: {why}")
    heads = rng.integers(0, x.numel(), size=(n_boot, x.numel()))
    out = rank_correlation(spearman(x, y), x.double().numpy(), y.double().numpy(), label=label,
                           delta_reps=a_reps, score_reps=b_reps, heads=heads, level=level)
    return dataclasses.replace(out, resampled=Resampled.HEADS_AND_SHARED_PROMPTS) if paired else out


def _check_paired(a: "HeadScores", b: "HeadScores", label: str) -> None:
    """Refuse to pair maps that did not score the same prompts in the same settings: their per-prompt values'
    shapes and their prompts' settings must agree, their tasks' digests (prompts, answers, foils, positions) where
    both record one, and every prompt's clean metric (the unmodified model's value of each prompt, in order)."""
    import torch

    same = (a.per_prompt is not None and b.per_prompt is not None
            and tuple(a.per_prompt.shape) == tuple(b.per_prompt.shape)
            and torch.equal(a.prompt_setting, b.prompt_setting)
            and torch.allclose(a.clean_per_prompt, b.clean_per_prompt, rtol=1e-4, atol=1e-5))
    digests = (a.task.get("digest"), b.task.get("digest")) if isinstance(a.task, dict) and isinstance(b.task, dict) \
        else (None, None)
    same = same and (None in digests or digests[0] == digests[1])
    if not same:
        raise PearLensError(f"the {label} map did not score the same prompts as the first (per-prompt values and "
                            "their settings must agree to pair them); compare them with paired=False")
