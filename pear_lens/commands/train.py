"""``pear-lens train RUN_DIR``: learn τ for the heads of a discovery run and save the artifact.

Reads the run's scores, reloads its model (refusing weights that changed since
discovery), trains the top-K heads (or an explicit list) and adds to the same
folder the training log (``training_log.csv``, ``training.html``/``.png``) and,
last, the artifact (``coefficients.safetensors`` + ``pear.json``), through
:func:`pear_lens.runs.write_training`.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear_lens import constants
from pear_lens.artifact import Artifact
from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.io import check_static_export, check_writable_parent
from pear_lens.results import HeadScores
from pear_lens.reweight import (DEFAULT_TOP_K, Recipe, TrainConfig, TrainResult, at_step_limit, select_heads,
                                step_limit, train_coefficients)
from pear_lens.runs import (discovery_summary, has_artifact, read_info, run_model, warn_if_bos_differs,
                            write_training)

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


@dataclass(kw_only=True)
class TrainRunConfig(TrainConfig):
    """``pear-lens train``: the training settings plus where to read and write."""

    run_dir: Path = option(help="discovery run folder (from `pear-lens discover`); the artifact is added to it",
                           positional=True)
    overwrite: bool = option(False, help="replace an artifact already in RUN_DIR")
    no_png: bool = option(False, help="skip the static PNG of the training curves")
    quiet: bool = option(False, help="no progress bar")

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)})


def step_limit_record(result: TrainResult) -> dict[str, Any]:
    """pear.json's record of the step limit (:func:`pear_lens.reweight.step_limit`): the bound and which τ sit at it."""
    recipe = Recipe.from_dict(result.config)
    at = at_step_limit(result.tau.tolist(), recipe)
    return {"tau_step_limit": round(step_limit(recipe), 6), "tau_at_step_limit": at}


def step_limit_message(result: TrainResult) -> str | None:
    """One line when any τ sits at the step limit (its value was set by the budget, not the loss), else None."""
    rec = step_limit_record(result)
    held = [f"L{l}.H{h} ({float(t):.3f})" for (l, h), t, a in zip(result.heads, result.tau, rec["tau_at_step_limit"]) if a]
    if not held:
        return None
    return (f"note: τ of {', '.join(held)} sit at the optimizer's step limit (|τ - 1| ≥ 90 % of "
            f"{rec['tau_step_limit']:.3f}, the summed learning rate of {result.config['steps']} steps): they were "
            "still moving when training stopped; more steps or a larger --lr would move them further")


def build_artifact(result: TrainResult, config: TrainConfig, base_model: dict[str, Any], scores: HeadScores | None,
                   discovery: dict[str, Any]) -> Artifact:
    """The artifact of a training run with ``config`` (its head selection and recipe are pear.json's
    ``training``); Δπ and rank come from ``scores`` when given."""
    ranks = scores.ranks() if scores is not None else None
    return Artifact(
        heads=result.heads, tau=result.tau, base_model=base_model,
        scores=[float(scores.scores[l, h]) if scores is not None else None for l, h in result.heads],
        ranks=[int(ranks[l, h]) if ranks is not None else None for l, h in result.heads],
        training={**config.to_dict(), "seconds": round(result.seconds, 2), "loss_first": result.loss_curve[0],
                  "loss_last": result.loss_curve[-1], **step_limit_record(result)},
        discovery=discovery,
    )


def train_run(config: TrainRunConfig, model: "LoadedModel | None" = None) -> tuple[Artifact, TrainResult]:
    """Train the coefficients of a discovery run and write the artifact into it.

    ``model``: the run's model if already loaded (it is checked against the run's fingerprint).
    """
    run_dir = Path(config.run_dir)
    scores, info = HeadScores.load(run_dir), read_info(run_dir)
    if has_artifact(run_dir) and not config.overwrite:
        raise PearLensError(f"{run_dir} already holds an artifact ({constants.PEAR_JSON}); pass --overwrite "
                            "to replace it")
    train_cfg = config.train_config()
    if train_cfg.heads and train_cfg.top_k != DEFAULT_TOP_K:
        raise PearLensError("give either --heads or --top-k, not both (--heads names the heads, so --top-k "
                            "would be ignored)")
    warn_if_bos_differs(info, train_cfg.prepend_bos)
    heads = select_heads(scores, train_cfg)  # fail on bad heads before loading the model
    check_writable_parent(run_dir, "RUN_DIR")  # the new run folder is built beside the old one
    if not config.no_png:
        check_static_export()
    model = run_model(info, model)
    result = train_coefficients(model, heads, train_cfg.recipe, progress=not config.quiet)
    message = step_limit_message(result)
    if message and not config.quiet:
        print(message, file=sys.stderr)
    artifact = build_artifact(result, train_cfg, model.describe(), scores, discovery_summary(info))
    write_training(run_dir, artifact, result.to_dataframe(), result.figure(), png=not config.no_png)
    return artifact, result
