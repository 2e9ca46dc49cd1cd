"""``pear-lens rescore RUN_DIR``: every prompt's Δπ for a discovery run that kept only its scores.

A run from before pear_lens kept per-prompt values holds ``head_scores.csv`` alone, so nothing that reads it can
resample its prompts: the atlas's ρ intervals hold Δπ fixed, and no error bar of a head's Δπ can be drawn. This
command reruns the run's scan (:func:`pear_lens.rescore`: its task, method, metric, options and seed, on the
weights its fingerprint names), checks that the rescan reproduces the run's scores, and adds ``scores/``
(:meth:`HeadScores.save <pear_lens.results.HeadScores.save>`, as ``pear-lens discover`` writes it today) to the run
folder: the run's own scores with the rescan's per-prompt values (:meth:`HeadScores.with_prompt_values`). Nothing
the run holds is changed; every later reader of the run (``HeadScores.load``, ``pear-lens atlas``, the intervals)
resamples its prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pear_lens import constants
from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.models.loaded import Placement
from pear_lens.results import HeadScores


@dataclass(kw_only=True)
class RescoreConfig(Placement):
    """Settings of ``pear-lens rescore``: the run folder, the weights and where they run, how close is the same."""

    run_dir: Path = option(positional=True, help="a `pear-lens discover` run folder that keeps no per-prompt values "
                                                 "(no scores/ folder)")
    model: str | None = option(None, help="the weights to load (default: the run's model); must be the weights "
                                          "the run scored")
    tolerance: float = option(1e-4, help="the largest difference from the run's scores the rescan may have, as a "
                                         "fraction of the largest |score| (another device or batch shape changes "
                                         "the last digits)")
    quiet: bool = option(False, help="no progress bars")

    def __post_init__(self) -> None:
        Placement.__post_init__(self)
        if not self.tolerance >= 0:
            raise PearLensError(f"--tolerance must be a fraction ≥ 0 of the largest |score|, got {self.tolerance}")


def rescore_run(config: RescoreConfig) -> HeadScores:
    """Rescan the run, check the rescan against its scores and add ``scores/`` to it; returns what was added."""
    from pear_lens.mediation import rescore
    from pear_lens.models.loaded import load_model
    from pear_lens.runs import read_info, recorded_dtype, scored_model

    run_dir = Path(config.run_dir)
    if not run_dir.is_dir():
        raise PearLensError(f"{run_dir} is not a folder; give a `pear-lens discover` run folder")
    out = run_dir / constants.RUN_SCORES_DIR
    if out.exists():
        raise PearLensError(f"{run_dir} keeps its per-prompt values already ({out}); nothing to rescore")
    scores = HeadScores.load(run_dir)
    run_model, _ = scored_model(run_dir)
    config.check_placement()
    recorded = recorded_dtype(read_info(run_dir))  # the fingerprint is compared as the run computed it
    model = load_model(config.model or run_model, **config.load_options(recorded))
    rescan = rescore(model, scores, dtype=recorded, progress=not config.quiet)
    added = scores.with_prompt_values(rescan, config.tolerance)
    added.save(out)  # built beside the run's files and moved into place whole
    return added
