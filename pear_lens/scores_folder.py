"""The folder :meth:`HeadScores.save <pear_lens.results.HeadScores.save>` writes: ``scores.json`` plus safetensors.

``scores.json`` holds the metadata, the tensors' shapes and the SHA-256 of ``head_scores.safetensors``; reading
back (:func:`read_scores`) checks the whole folder (kind, format version, hash, shapes, the copy of
``per_setting`` in both files), so a cut, edited or foreign folder is refused with one line saying so.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from pear_lens import constants
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_write_json, file_sha256, normalise_permissions, save_safetensors, swap_in
from pear_lens.output_lock import stage_folder

SCORES_JSON = "scores.json"
"""The metadata of a saved scores folder (its marker: ``kind`` is :data:`SCORES_KIND`)."""
SCORES_SAFETENSORS = "head_scores.safetensors"
"""The tensors of a saved scores folder."""
SCORES_KIND = "pear_lens head scores"
TENSORS = ("scores", "per_setting", "per_prompt", "clean_per_prompt", "prompt_setting")
"""The tensors a saved folder may hold (``scores`` and ``per_setting`` always)."""


def write_scores(folder: str | Path, tensors: dict[str, Tensor], metadata: dict[str, Any], *,
                 overwrite: bool = False) -> Path:
    """Write ``tensors`` and ``metadata`` as a scores folder, built beside ``folder`` and swapped in whole."""
    from pear_lens import __version__

    out = Path(folder)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise PearLensError(f"{out} exists and is not a folder; choose another folder")
        if any(out.iterdir()):
            if saved_kind(out) != SCORES_KIND:
                raise PearLensError(f"{out} already exists and was not written by HeadScores.save; it is never "
                                    "replaced: choose a new folder")
            if not overwrite:
                raise PearLensError(f"{out} already holds saved head scores; choose a new folder or pass "
                                    "overwrite=True to replace them")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = stage_folder(out)  # named, so the next writer of `out` removes it if this run is killed
    try:
        save_safetensors(tensors, stage / SCORES_SAFETENSORS,
                         metadata={"format_version": str(constants.FORMAT_VERSION), "kind": SCORES_KIND})
        meta = {"kind": SCORES_KIND, "pear_lens_version": __version__, **metadata,
                "tensors": {"file": SCORES_SAFETENSORS, "sha256": file_sha256(stage / SCORES_SAFETENSORS),
                            "shapes": {name: list(t.shape) for name, t in tensors.items()}}}
        atomic_write_json(stage / SCORES_JSON, meta)
        normalise_permissions(stage)
        swap_in(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return out


def read_scores(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata of a folder :func:`write_scores` wrote, checked whole."""
    meta_path, tensor_path = folder / SCORES_JSON, folder / SCORES_SAFETENSORS
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        kind, version = meta["kind"], meta["format_version"]
        recorded = meta["tensors"]
        expected_sha, shapes = recorded["sha256"], {k: tuple(v) for k, v in recorded["shapes"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise damaged(meta_path, f"not the scores.json HeadScores.save writes: {e}") from None
    if kind != SCORES_KIND:
        raise damaged(meta_path, f"its kind is {kind!r}, not {SCORES_KIND!r}")
    if version != constants.FORMAT_VERSION:
        raise PearLensError(f"{meta_path} has format version {version!r}; this pear_lens reads version "
                            f"{constants.FORMAT_VERSION}: use the pear_lens that wrote it "
                            f"({meta.get('pear_lens_version', 'unknown')}) or rescore")
    if not tensor_path.is_file():
        raise damaged(tensor_path, "missing")
    if file_sha256(tensor_path) != expected_sha:
        raise damaged(tensor_path, f"its SHA-256 differs from the one recorded in {SCORES_JSON}: cut, edited "
                                    "or from another save")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(tensor_path))
    except (SafetensorError, OSError) as e:
        raise damaged(tensor_path, f"unreadable: {' '.join(str(e).split())}") from None
    found = {k: tuple(t.shape) for k, t in tensors.items()}
    if found != shapes or not {"scores", "per_setting"} <= set(found) or not set(found) <= set(TENSORS):
        raise damaged(meta_path, f"its tensors {found} differ from those recorded {shapes}")
    try:
        same = np.array_equal(np.asarray(meta["per_setting"], dtype=np.float32), tensors["per_setting"].numpy(),
                              equal_nan=True)
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        raise damaged(meta_path, f"its per_setting differs from the one in {SCORES_SAFETENSORS}, whose "
                                  f"SHA-256 matches the one recorded: {SCORES_JSON} was edited")
    return tensors, meta


def saved_kind(folder: Path) -> str | None:
    """The ``kind`` recorded in ``folder``'s ``scores.json``, or None if it has none that parses."""
    try:
        meta = json.loads((folder / SCORES_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def damaged(path: Path, why: str) -> PearLensError:
    return PearLensError(f"{path} is damaged or foreign ({why}); save the scores again with HeadScores.save")
