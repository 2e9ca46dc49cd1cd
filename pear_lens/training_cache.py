"""Reuse τ trained before: training is seeded, so the same weights, heads and recipe give the same τ.

:func:`matching_artifact` finds a run folder's artifact trained on the same weights (fingerprint), the
same heads and every setting of the :class:`~pear_lens.recipe.Recipe`; anything else is
trained again. :func:`cached_tau` keeps τ of one training in a JSON file of its own (an evaluation's
controls), keyed the same way (:mod:`pear_lens.stage_cache`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pear_lens import reweight
from pear_lens.artifact import Artifact, load_artifact
from pear_lens.heads import Head
from pear_lens.recipe import Recipe, TrainConfig, select_heads
from pear_lens.results import HeadScores
from pear_lens.runs import has_artifact
from pear_lens.stage_cache import cached_stage

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


def cached_tau(model: "LoadedModel", heads: Sequence[Head], config: Recipe,
               path: Path) -> tuple[dict[Head, float], float, bool]:
    """τ for ``heads`` trained with ``config`` on ``model`` (frozen), read back from ``path`` when trained
    before on the same weights, heads and recipe (training is seeded, so it would come out the same).

    Returns ``(τ per head, seconds the training took, trained_now)``.
    """
    heads = [(int(l), int(h)) for l, h in heads]
    recipe = config.recipe.to_dict()
    key = {"fingerprint": model.fingerprint, "heads": heads, "recipe": recipe}

    def train() -> list[float]:
        return [float(t) for t in reweight.train_coefficients(model, heads, config.recipe, progress=False).tau]

    tau, seconds, ran = cached_stage(path, key, train)
    return dict(zip(heads, (float(t) for t in tau))), seconds, ran
