"""Reuse τ trained before: training is seeded, so the same weights, heads and recipe give the same τ.

Two places keep trained τ: a run folder's artifact (:func:`matching_artifact`) and a small JSON file
per training (:func:`cached_training`, e.g. each random-K control of an evaluation). Both are keyed by
what determines the result: the weight fingerprint, the heads, and every setting of the
:class:`~pear_lens.reweight.TrainConfig` recipe. Anything else is trained again.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pear_lens import constants, reweight
from pear_lens.artifact import Artifact, load_artifact
from pear_lens.io import atomic_write_json
from pear_lens.results import HeadScores
from pear_lens.reweight import Head, TrainConfig, select_heads

if TYPE_CHECKING:
    from pear_lens.models import LoadedModel


def recipe(config: TrainConfig) -> dict[str, Any]:
    """The settings of ``config`` that decide τ for given heads (the head selection excluded)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "heads"}


def cached_training(model: "LoadedModel", heads: Sequence[Head], config: TrainConfig | None = None,
                    cache: Path | None = None, *, progress: bool = False) -> tuple[dict[Head, float], bool]:
    """τ per head for ``heads`` and whether it was trained now.

    With ``cache`` (a JSON file), τ trained before on the same weights, heads and recipe is read back;
    otherwise τ is trained and written there.
    """
    config = config or TrainConfig()
    key = json.loads(json.dumps({"fingerprint": model.fingerprint, "heads": [list(h) for h in heads],
                                 "recipe": recipe(config)}))
    if cache is not None and cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return {(int(l), int(h)): float(t) for (l, h), t in zip(key["heads"], saved["tau"])}, False
    result = reweight.train_coefficients(model, list(heads), config, progress=progress)
    if cache is not None:
        atomic_write_json(cache, {"key": key, "tau": [float(t) for t in result.tau]})
    return result.coefficients(), True


def matching_artifact(run_dir: str | Path, config: TrainConfig, model: "LoadedModel") -> Artifact | None:
    """The artifact in ``run_dir`` if it was trained on ``model``'s weights, on the heads ``config`` selects
    from the run's scores, with ``config``'s recipe; else None (no artifact, or another recipe or heads).

    An artifact for other weights is an error (:func:`~pear_lens.artifact.load_artifact` says what to do).
    """
    run_dir = Path(run_dir)
    if not (run_dir / constants.PEAR_JSON).exists():
        return None
    artifact = load_artifact(run_dir, model=model)
    train = TrainConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)})
    same = all(artifact.training.get(key) == value for key, value in recipe(train).items())
    return artifact if same and artifact.heads == select_heads(HeadScores.load(run_dir), train) else None
