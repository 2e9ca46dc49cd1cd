"""Reuse τ trained before: training is seeded, so the same weights, heads and recipe give the same τ.

:func:`matching_artifact` finds a run folder's artifact trained on the same weights (fingerprint), the
same heads and every setting of the :class:`~pear_lens.reweight.Recipe`; anything else is
trained again. (τ kept in a JSON file per training, e.g. an evaluation's controls, is
:func:`pear_lens.evaluation.protocol.cached_tau`.)
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pear_lens.artifact import Artifact, load_artifact
from pear_lens.results import HeadScores
from pear_lens.reweight import TrainConfig, select_heads
from pear_lens.runs import has_artifact

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


def matching_artifact(run_dir: str | Path, config: TrainConfig, model: "LoadedModel") -> Artifact | None:
    """The artifact in ``run_dir`` if it was trained on ``model``'s weights, on the heads ``config`` selects
    from the run's scores, with ``config``'s recipe; else None (no artifact, or another recipe or heads).

    An artifact for other weights is an error (:func:`~pear_lens.artifact.load_artifact` says what to do).
    """
    run_dir = Path(run_dir)
    if not has_artifact(run_dir):
        return None
    artifact = load_artifact(run_dir, model=model)
    same = all(artifact.training.get(key) == value for key, value in config.recipe.to_dict().items())
    return artifact if same and artifact.heads == select_heads(HeadScores.load(run_dir), config) else None
