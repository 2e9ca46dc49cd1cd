"""``pear-lens apply RUN_DIR --out HF_DIR``: fold an artifact into a plain Hugging Face model folder.

The fold and its check are :mod:`pear_lens.verified_fold`: the folded copy is saved only if its logits equal the
hooked bridge's (and an unfolded, pre-hooked Hugging Face copy's) on held-out proxy sequences, so the folder
``from_pretrained`` loads is the model that was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear_lens.artifact import load_artifact
from pear_lens.config import option
from pear_lens.models.loaded import Placement
from pear_lens.verified_fold import FOLD_TOLERANCE, check_tolerance, fold_verified, save_folded, verify_fold
from pear_lens.io import check_output, staged_dir

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

__all__ = ["ApplyConfig", "apply", "verify_fold"]  # verify_fold: re-exported for notebooks that import it here


@dataclass(kw_only=True)
class ApplyConfig(Placement):
    """``pear-lens apply``: fold the artifact of RUN_DIR into a Hugging Face model folder (the model runs on
    ``--device`` or over ``--device-map``'s devices, its weights in ``--dtype``, by default the artifact's; the
    folder is saved in that dtype)."""

    run_dir: Path = option(help="run folder holding the artifact (from `pear-lens train`)", positional=True)
    out: Path = option(help="Hugging Face model folder to write (loadable with AutoModelForCausalLM.from_pretrained)")
    tolerance: float | None = option(None, help="largest allowed |logit difference| between folded and hooked model, "
                                                "relative to the hooked model's largest |logit|; None: the rounding of "
                                                "the dtype, " + ", ".join(f"{v:g} in {k}" for k, v in FOLD_TOLERANCE.items()))
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier folded model folder")


def apply(config: ApplyConfig, model: "LoadedModel | None" = None) -> dict[str, Any]:
    """Fold, verify and write the model folder; return the note written beside it."""
    if config.tolerance is not None:
        check_tolerance(config.tolerance)
    artifact = load_artifact(config.run_dir)
    inputs = (config.run_dir, artifact.base_model["name"])  # the base model may be a local folder
    check_output(config.out, kind="folded", inputs=inputs, overwrite=config.overwrite)  # before the slow part
    hf, note, model = fold_verified(config.run_dir, config.tolerance, model, artifact=artifact,
                                    dtype=config.dtype, **config.device_options())
    with staged_dir(config.out, overwrite=config.overwrite, kind="folded", inputs=inputs) as stage:
        save_folded(stage, hf, model.tokenizer, note)
    return note
