"""``pear-lens train RUN_DIR``: learn τ for the heads of a discovery run and save the artifact.

Reads the run's scores, reloads its model (refusing weights that changed since
discovery), trains the top-K heads (or an explicit list) and adds to the same
folder the training log (``training_log.csv``, ``training.html``/``.png``) and,
last, the artifact (``coefficients.safetensors`` + ``pear.json``).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear_lens import constants
from pear_lens.artifact import Artifact
from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_path, check_writable_parent, read_text, staged_update
from pear_lens.results import HeadScores
from pear_lens.reweight import (DEFAULT_TOP_K, TrainConfig, TrainResult, at_step_limit, select_heads, step_limit,
                                train_coefficients)

if TYPE_CHECKING:
    from pear_lens.models import LoadedModel


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


def read_discovery(run_dir: Path) -> tuple[HeadScores, dict[str, Any]]:
    """The scores and ``discovery.json`` of a run folder."""
    scores = HeadScores.load(run_dir)
    return scores, json.loads(read_text(Path(run_dir) / constants.DISCOVERY_JSON))


def run_model(scores: HeadScores, info: dict[str, Any], model: "LoadedModel | None" = None) -> "LoadedModel":
    """The model of a discovery run (loaded unless given), refused if its weights changed since."""
    from pear_lens.models import load_model

    model = model or load_model(info["model"]["name"])
    if scores.fingerprint and model.fingerprint != scores.fingerprint:
        raise PearLensError(
            f"the weights of {model.name} changed since the discovery run ({scores.fingerprint} then, "
            f"{model.fingerprint} now); rerun `pear-lens discover` for these weights"
        )
    return model


def warn_if_bos_differs(info: dict[str, Any], prepend_bos: bool) -> None:
    """Warn when training sequences and the discovery's proxy task disagree on BOS.

    The heads were ranked on one kind of sequence; re-weighting them on the other is allowed (it is an
    experiment one may want), but it should not happen by accident.
    """
    discovered = info.get("scores", {}).get("task", {}).get("prepend_bos")
    if discovered is not None and bool(discovered) != bool(prepend_bos):
        with_bos = {True: "with", False: "without"}
        warnings.warn(f"the discovery run ranked heads on sequences {with_bos[bool(discovered)]} BOS, but training "
                      f"uses sequences {with_bos[bool(prepend_bos)]} it; pass "
                      f"{'--prepend-bos' if discovered else 'no --prepend-bos'} to match", stacklevel=3)


def discovery_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The discovery settings an artifact keeps (what produced the head ranking)."""
    s = info.get("scores", {})
    return {"config": info.get("config", {}), "method": s.get("method"), "metric": s.get("metric"),
            "difference": s.get("difference"), "options": s.get("options", {}), "task": s.get("task", {})}


def step_limit_record(result: TrainResult) -> dict[str, Any]:
    """pear.json's record of the step limit (:func:`pear_lens.reweight.step_limit`): the bound and which τ sit at it."""
    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"heads", "top_k"}  # the recipe alone
    config = TrainConfig(**{k: v for k, v in result.config.items() if k in names})
    at = at_step_limit(result.tau.tolist(), config)
    return {"tau_step_limit": round(step_limit(config), 6), "tau_at_step_limit": at}


def step_limit_message(result: TrainResult) -> str | None:
    """One line when any τ sits at the step limit (its value was set by the budget, not the loss), else None."""
    rec = step_limit_record(result)
    held = [f"L{l}.H{h} ({float(t):.3f})" for (l, h), t, a in zip(result.heads, result.tau, rec["tau_at_step_limit"]) if a]
    if not held:
        return None
    return (f"note: τ of {', '.join(held)} sit at the optimizer's step limit (|τ - 1| ≥ 90 % of "
            f"{rec['tau_step_limit']:.3f}, the summed learning rate of {result.config['steps']} steps): they were "
            "still moving when training stopped; more steps or a larger --lr would move them further")


def build_artifact(result: TrainResult, base_model: dict[str, Any], scores: HeadScores | None,
                   discovery: dict[str, Any]) -> Artifact:
    """The artifact of a training run; Δπ and rank come from ``scores`` when given."""
    ranks = scores.ranks() if scores is not None else None
    return Artifact(
        heads=result.heads, tau=result.tau, base_model=base_model,
        scores=[float(scores.scores[l, h]) if scores is not None else None for l, h in result.heads],
        ranks=[int(ranks[l, h]) if ranks is not None else None for l, h in result.heads],
        training={**result.config, "seconds": round(result.seconds, 2), "loss_first": result.loss_curve[0],
                  "loss_last": result.loss_curve[-1], **step_limit_record(result)},
        discovery=discovery,
    )


TRAIN_OUTPUTS = (constants.PEAR_JSON, constants.COEFFICIENTS_SAFETENSORS, constants.TRAINING_CSV,
                 constants.TRAINING_HTML, constants.TRAINING_PNG)
"""What ``train`` writes into a run folder (an earlier training's copies are dropped, not mixed in)."""


def write_training_log(result: TrainResult, run_dir: Path, png: bool) -> None:
    from pear_lens.plots import save_figure

    with atomic_path(run_dir / constants.TRAINING_CSV) as tmp:
        result.to_dataframe().to_csv(tmp, index=False)
    save_figure(result.figure(), run_dir / constants.TRAINING_HTML, formats=["html"] + (["png"] if png else []))


def train_run(config: TrainRunConfig, model: "LoadedModel | None" = None) -> tuple[Artifact, TrainResult]:
    """Train the coefficients of a discovery run and write the artifact into it.

    ``model``: the run's model if already loaded (it is checked against the run's fingerprint).
    """
    run_dir = Path(config.run_dir)
    scores, info = read_discovery(run_dir)
    if (run_dir / constants.PEAR_JSON).exists() and not config.overwrite:
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
        from pear_lens.plots import check_static_export

        check_static_export()
    model = run_model(scores, info, model)
    result = train_coefficients(model, heads, train_cfg, progress=not config.quiet)
    message = step_limit_message(result)
    if message and not config.quiet:
        print(message, file=sys.stderr)
    artifact = build_artifact(result, model.describe(), scores, discovery_summary(info))
    # the whole new run folder (discovery files copied, training outputs added) is swapped in at once:
    # a failure or Ctrl-C while saving leaves the old folder as it was
    with staged_update(run_dir, replaced=TRAIN_OUTPUTS) as stage:
        write_training_log(result, stage, png=not config.no_png)
        artifact.save(stage)
    artifact.path = run_dir
    return artifact, result
