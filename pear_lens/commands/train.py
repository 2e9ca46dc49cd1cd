"""``pear-lens train RUN_DIR``: learn τ for the heads of a discovery run and save the artifact.

The training settings are :class:`pear_lens.recipe.TrainConfig` plus where to read and write; the work is
:func:`pear_lens.workflow.train_into_run` (the training log and, last, the artifact are added to the run
folder through :func:`pear_lens.runs.write_training`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pear_lens.artifact import Artifact
from pear_lens.config import option
from pear_lens.models.loaded import Placement
from pear_lens.reweight import TrainResult
from pear_lens.recipe import TrainConfig
from pear_lens.workflow import train_into_run

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


@dataclass(kw_only=True)
class TrainRunConfig(TrainConfig, Placement):
    """``pear-lens train``: the training settings, where the model runs, and where to read and write."""

    run_dir: Path = option(help="discovery run folder (from `pear-lens discover`); the artifact is added to it",
                           positional=True)
    overwrite: bool = option(False, help="replace an artifact already in RUN_DIR")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bar")

    def __post_init__(self) -> None:
        TrainConfig.__post_init__(self)  # the MRO would run only the first base's: both check their fields
        Placement.__post_init__(self)

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


def train_run(config: TrainRunConfig, model: "LoadedModel | None" = None) -> tuple[Artifact, TrainResult]:
    """Train the coefficients of a discovery run and write the artifact into it.

    ``model``: the run's model if already loaded (it is checked against the run's fingerprint); else it is loaded
    on ``config.device`` (or over ``config.device_map``'s devices) in ``config.dtype`` (default: the dtype the
    discovery loaded it in).
    """
    return train_into_run(config.run_dir, config.train_config(), model=model, overwrite=config.overwrite,
                          png=not config.no_png, quiet=config.quiet, dtype=config.dtype, **config.device_options())
