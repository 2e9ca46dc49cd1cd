"""The discovery run folder: the files it holds, and the one place each of them is written and read.

``pear-lens discover`` creates a run folder; ``train``, ``ablate`` and ``atlas`` add to it. Every function
here that writes builds the whole new folder beside the old one and swaps it in at once
(:func:`pear_lens.io.staged_dir`, :func:`pear_lens.io.staged_update`): a failure or Ctrl-C leaves the old
folder byte-identical. Commands and scripts call these functions, never each other's helpers.

Each file has one writer:

- ``head_scores.csv``, ``heatmap.html``/``.png``, ``discovery.json``: :func:`write_run` (``discover``), with
  ``scores/`` (every prompt's values, :meth:`HeadScores.save <pear_lens.results.HeadScores.save>`) and, after
  ``--seeds``, ``seeds/seed_S/`` and ``stability.csv``/``.json``;
  ``discovery.json``'s ``config.out`` is rewritten only by :func:`set_recorded_out` (``demo``). Read by
  :func:`read_score_table`, :func:`read_info` and :func:`scored_model`; :func:`has_scores` says whether
  they are there.
- ``pear.json``, ``coefficients.safetensors``: :meth:`Artifact.save <pear_lens.artifact.Artifact.save>`,
  called only by :func:`write_training`; read by :func:`pear_lens.artifact.load_artifact` (as recorded,
  unchecked, by :func:`read_pear_json`; its SHA-256 alone by :func:`artifact_sha256`).
- ``training_log.csv``, ``training.html``/``.png``: :func:`write_training` (``train``).
- ``ablation.csv``, ``ablation.html``/``.png``: :func:`write_k_sweep` (``ablate``).
- ``stages.json``: where each stage ran the model (device, dtype), :func:`record_stage`, called by each writer
  here and by ``atlas``; read by :func:`read_stages`.
- ``manifest.json``: the model and weight fingerprint the folder belongs to and each table's and record's SHA-256
  and row count (:mod:`pear_lens.manifest`), updated by every writer here, and by ``atlas``, for the files it
  writes (:func:`seal_files`); checked by :func:`read_score_table`, :func:`read_info`, :meth:`HeadAtlas.load
  <pear_lens.atlas.HeadAtlas.load>` and the run page, so a cut, edited or foreign file is refused (a folder without
  one, written before it existed, is read as before).
- ``head_atlas.*``, ``atlas_*.html``: ``pear-lens atlas`` through :meth:`HeadAtlas.save
  <pear_lens.atlas.HeadAtlas.save>`, read by :meth:`HeadAtlas.load <pear_lens.atlas.HeadAtlas.load>`.

Where the readers of types live: a file's *format* stays with the type it holds, and its *place in the
folder* is here. :class:`~pear_lens.results.HeadScores` turns the score table into scores and back
(``to_dataframe``/``metadata``, ``from_dataframe``) and keeps :meth:`HeadScores.load
<pear_lens.results.HeadScores.load>` for users, which reads the files through :func:`read_score_table`;
nothing else in pear_lens opens ``head_scores.csv``. The artifact's two files are
:mod:`pear_lens.artifact`'s format (it checks their SHA-256 and τ against each other), written only
through :func:`write_training`, so an artifact enters a run folder only with the training log beside it.
This module takes plain tables, records and figures (it sits below the result types, which call it).
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from pear_lens import constants, manifest
from pear_lens.environment import environment
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_path, atomic_write_json, read_text, staged_dir, staged_update
from pear_lens.figure_files import save_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from pear_lens.artifact import Artifact
    from pear_lens.models.loaded import LoadedModel

KIND = "pear_lens discovery run"
"""``discovery.json``'s ``kind``."""

TRAIN_OUTPUTS = (constants.PEAR_JSON, constants.COEFFICIENTS_SAFETENSORS, constants.TRAINING_CSV,
                 constants.TRAINING_HTML, constants.TRAINING_PNG)
"""What ``train`` writes into a run folder (an earlier training's copies are dropped, not mixed in)."""

K_SWEEP_OUTPUTS = (constants.K_SWEEP_CSV, constants.K_SWEEP_HTML, constants.K_SWEEP_PNG)
"""What ``ablate`` writes into a run folder."""


def _formats(png: bool) -> list[str]:
    from pear_lens.figure_files import figure_formats

    return figure_formats(static=png)  # HTML, and PNG, PDF and SVG unless --no-png


# --------------------------------------------------------------------------- discovery: writing


def write_run(out: Path, *, table: pd.DataFrame, scores: dict[str, Any], heatmap: "go.Figure", config: dict,
              overwrite: bool, png: bool, model_info: dict, copy_task: dict | None = None,
              seconds: float | None = None, inputs: tuple = (), extras: Callable[[Path], None] | None = None,
              placement: dict[str, str] | None = None) -> Path:
    """Write a complete discovery run folder atomically.

    ``table``: the scores as :meth:`HeadScores.to_dataframe <pear_lens.results.HeadScores.to_dataframe>`
    gives them; ``scores``: their :meth:`~pear_lens.results.HeadScores.metadata`; ``config``: the
    settings of the run, flat; ``extras(folder)`` writes the files of result types into the folder being built
    (``scores/``, ``seeds/``, ``stability.*``); ``placement``: where the model ran (``stages.json``).
    """
    with staged_dir(out, overwrite=overwrite, kind="run", inputs=inputs) as stage:
        if extras is not None:
            extras(stage)
        record_stage(stage, "discover", placement)
        table.to_csv(stage / constants.HEAD_SCORES_CSV, index=False)
        save_figure(heatmap, stage / constants.HEATMAP_HTML, formats=_formats(png))
        _write_info(stage, {
            "format_version": constants.FORMAT_VERSION,
            "kind": KIND,
            "config": config,
            "model": model_info,
            "environment": environment(),
            "scores": scores,
            **({"copy_task": copy_task} if copy_task is not None else {}),
            **({"seconds": round(seconds, 2)} if seconds is not None else {}),
        })
        seal_files(stage, constants.HEAD_SCORES_CSV, constants.DISCOVERY_JSON, constants.STABILITY_CSV,
              constants.STABILITY_JSON)
    return out


def set_recorded_out(run_dir: Path, out: Path) -> None:
    """Record ``out`` as the run's folder in ``discovery.json`` (a run written into a staging folder that is
    moved to ``out`` afterwards, as ``pear-lens demo`` does, would otherwise name the staging folder)."""
    info = read_info(run_dir)
    info["config"]["out"] = str(out)
    _write_info(run_dir, info)
    seal_files(run_dir, constants.DISCOVERY_JSON)


def _write_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / constants.DISCOVERY_JSON, info)


def seal_files(run_dir: Path, *names: str) -> None:
    """List ``names`` (just written into ``run_dir``, by a writer here or by ``atlas``) in its ``manifest.json``
    under the run's model and weights (:mod:`pear_lens.manifest`), so a later read refuses them cut, edited or
    another run's."""
    model, fingerprint = _owner(json.loads(read_text(Path(run_dir) / constants.DISCOVERY_JSON)))
    manifest.seal(run_dir, names, model=model, fingerprint=fingerprint)


def _owner(info: dict[str, Any]) -> tuple[str, str]:
    """``(model name, weight fingerprint)`` as a run's ``discovery.json`` records them ("" where it does not)."""
    model, scores = info.get("model"), info.get("scores")
    return (str(model.get("name", "")) if isinstance(model, dict) else "",
            str(scores.get("fingerprint", "")) if isinstance(scores, dict) else "")


_FIX = "rerun `pear-lens discover`"


# --------------------------------------------------------------------------- discovery: reading


def is_run(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a discovery run folder (it holds a ``discovery.json``)."""
    return (Path(folder) / constants.DISCOVERY_JSON).exists()


def has_scores(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished discovery (its ``discovery.json`` and ``head_scores.csv``)."""
    return is_run(folder) and (Path(folder) / constants.HEAD_SCORES_CSV).exists()


def find_runs(folder: str | Path) -> list[Path]:
    """The discovery run folders at or under ``folder``, in path order."""
    return [p.parent for p in sorted(Path(folder).rglob(constants.DISCOVERY_JSON))]


def read_info(run_dir: str | Path) -> dict[str, Any]:
    """``discovery.json`` of a run folder: settings, model, environment, scores' metadata, copy task (checked
    against the folder's ``manifest.json`` when it has one)."""
    manifest.check(run_dir, constants.DISCOVERY_JSON, fix=_FIX)
    return json.loads(read_text(Path(run_dir) / constants.DISCOVERY_JSON))


def existing(run_dir: Path, *names: str, fix: str) -> list[Path]:
    """The files ``names`` of ``run_dir``; the first one missing is refused, the message ending with ``fix``."""
    paths = [run_dir / name for name in names]
    for p in paths:
        if not p.exists():
            raise PearLensError(f"{p} is missing; {fix}")
    return paths


def read_score_table(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The checked ``head_scores.csv`` and ``discovery.json`` of a run folder (what
    :meth:`HeadScores.load <pear_lens.results.HeadScores.load>` builds the scores from).

    A missing file, one that does not parse, and a table that cannot be trusted are refused, naming the fix.
    """
    run_dir = Path(run_dir)
    csv, meta = existing(run_dir, constants.HEAD_SCORES_CSV, constants.DISCOVERY_JSON,
                         fix=f"is {run_dir} a `pear-lens discover` run folder?")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        df = pd.read_csv(csv, encoding="utf-8")
        info["scores"]  # a discovery.json without scores is no run's
    except (KeyError, TypeError, ValueError) as e:  # also json's, pandas' and UTF-8 decoding errors
        raise corrupt_run(run_dir, e) from None
    _check_score_table(df, csv, _model_shape(info))
    model, fingerprint = _owner(info)
    for name in (constants.DISCOVERY_JSON, constants.HEAD_SCORES_CSV):
        manifest.check(run_dir, name, fix=_FIX, model=model, fingerprint=fingerprint)
    if not csv.read_bytes().endswith(b"\n"):  # every writer ends the last row: caught without a manifest too
        raise PearLensError(f"{csv} ends inside its last row (cut); {_FIX}")
    return df, info


def corrupt_run(run_dir: Path, error: Exception) -> PearLensError:
    """The error for a run folder whose files do not hold what ``discover`` writes."""
    return PearLensError(f"{run_dir} holds a corrupt discovery run ({' '.join(str(error).split())}); "
                         "rerun `pear-lens discover`")


def scored_model(run_dir: Path) -> tuple[str, str]:
    """``(model name, weight fingerprint)`` the run scored."""
    meta = Path(run_dir) / constants.DISCOVERY_JSON
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        return str(info["model"]["name"]), str(info["scores"]["fingerprint"])
    except (OSError, KeyError, TypeError, ValueError):
        raise PearLensError(f"{meta} is missing or unreadable; is {run_dir} a `pear-lens discover` run folder?") from None


def recorded_dtype(info: dict[str, Any]) -> str:
    """The dtype a discovery run loaded its model in (``info``: its ``discovery.json``): the model record's, else
    the settings' (runs written before the model record kept it), else float32 (the only dtype then)."""
    return str((info.get("model") or {}).get("dtype") or (info.get("config") or {}).get("dtype") or "float32")


def run_model(info: dict[str, Any], model: "LoadedModel | None" = None, *, device: str | None = None,
              dtype: str | None = None, device_map: "str | dict[str, Any] | None" = None) -> "LoadedModel":
    """The model of a discovery run (``info``: its ``discovery.json``), loaded unless given, refused if its
    weights changed since.

    ``device`` (default CPU) or ``device_map`` (several devices), and ``dtype`` (default: the dtype the run loaded
    the model in) say how to load it.
    The run's fingerprint is compared with the fingerprint of the weights loaded as the run loaded them
    (:meth:`~pear_lens.models.loaded.LoadedModel.fingerprint_as`), so a run discovered in bfloat16 and trained in
    float32 (or the other way) is not taken for changed weights.
    """
    from pear_lens.models.loaded import load_model

    recorded = recorded_dtype(info)
    model = model or load_model(info["model"]["name"], dtype=dtype or recorded, device_map=device_map,
                                device=device if device_map is not None else device or "cpu")
    fingerprint = info["scores"].get("fingerprint", "")
    if fingerprint and model.fingerprint_as(recorded) != fingerprint:
        raise PearLensError(
            f"the weights of {model.name} changed since the discovery run ({fingerprint} then, "
            f"{model.fingerprint_as(recorded)} now, both of the weights in {recorded}); rerun `pear-lens discover` "
            "for these weights"
        )
    return model


def record_stage(folder: Path, stage: str, placement: dict[str, str] | None) -> None:
    """Record in ``folder``'s ``stages.json`` where ``stage`` ran its model (``placement``:
    :meth:`LoadedModel.placement <pear_lens.models.loaded.LoadedModel.placement>`, device and dtype) and on which
    hardware: minutes and the last digits of results depend on them. A stage's entry replaces its earlier one;
    ``placement=None`` records nothing."""
    if placement is None:
        return
    from pear_lens.models.loaded import device_description

    path = Path(folder) / constants.STAGES_JSON
    stages = json.loads(read_text(path)) if path.exists() else {}
    # the dtype is recorded beside it; a device map names every device the weights were spread over
    hardware = " + ".join(device_description(d).removesuffix(" (fp32)")
                          for d in placement.get("devices") or [placement["device"]])
    stages[stage] = {**placement, "hardware": hardware}
    atomic_write_json(path, stages)


def read_stages(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``stages.json`` of a run folder: ``{stage: {"device", "dtype", "hardware"}}``, with ``"devices"`` for a stage
    whose device map spread the weights over several ({} before any was recorded)."""
    path = Path(folder) / constants.STAGES_JSON
    return json.loads(read_text(path)) if path.exists() else {}


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


def _model_shape(info: Any) -> tuple[int, int] | None:
    """``(n_layers, n_heads)`` of the model a discovery run scored, read from its ``discovery.json`` (the
    per-setting scores, written with the table; else the model's record)."""
    try:
        per_setting = info["scores"]["per_setting"]
        return len(per_setting[0]), len(per_setting[0][0])
    except (KeyError, IndexError, TypeError):
        pass
    model = info.get("model") if isinstance(info, dict) else None
    shape = (model or {}).get("n_layers"), (model or {}).get("n_heads")
    return shape if all(isinstance(v, int) and v > 0 for v in shape) else None  # type: ignore[return-value]


def _check_score_table(df: pd.DataFrame, csv: Path, shape: tuple[int, int] | None = None) -> None:
    """Refuse a head_scores.csv whose heads or scores cannot be trusted (edited or damaged), naming the row.

    A NaN score would otherwise rank its head first and end up in pear.json; a head beyond ``shape`` (the
    model's ``(n_layers, n_heads)``) would otherwise make the table describe a larger model.
    """
    fix = "the file was edited or damaged: rerun `pear-lens discover`"
    missing = {"layer", "head", "score"} - set(df.columns)
    if missing:
        raise PearLensError(f"{csv} lacks the columns {sorted(missing)}; {fix}")
    if df.empty:
        raise PearLensError(f"{csv} lists no heads; {fix}")
    numeric = {c: pd.to_numeric(df[c], errors="coerce") for c in ("layer", "head", "score")}
    for i in range(len(df)):
        line = i + 2  # the header is line 1
        for c in ("layer", "head"):
            v = numeric[c].iloc[i]
            if pd.isna(v) or v < 0 or v != int(v):
                raise PearLensError(f"{csv} line {line}: {c} {str(df[c].iloc[i])!r} is not a head index; {fix}")
        layer, head = int(numeric["layer"].iloc[i]), int(numeric["head"].iloc[i])
        if shape is not None and not (layer < shape[0] and head < shape[1]):
            raise PearLensError(f"{csv} line {line}: L{layer}.H{head} is outside the model ({shape[0]} layers × "
                                f"{shape[1]} heads, as discovery.json records it); {fix}")
        v = numeric["score"].iloc[i]
        if pd.isna(v) or not math.isfinite(float(v)):
            raise PearLensError(f"{csv} line {line}: the score {str(df['score'].iloc[i])!r} of "
                                f"L{int(numeric['layer'].iloc[i])}.H{int(numeric['head'].iloc[i])} is not a finite "
                                f"number; {fix}")
    pairs = list(zip(numeric["layer"].astype(int), numeric["head"].astype(int)))
    n_layers, n_heads = max(l for l, _ in pairs) + 1, max(h for _, h in pairs) + 1
    if len(set(pairs)) != len(pairs) or len(pairs) != n_layers * n_heads:
        raise PearLensError(f"{csv} should list each of the {n_layers} × {n_heads} heads once, but lists "
                            f"{len(pairs)} rows ({len(set(pairs))} distinct heads); {fix}")


# --------------------------------------------------------------------------- what later commands add


def has_artifact(run_dir: str | Path) -> bool:
    """Whether ``pear-lens train`` has added an artifact to the run folder."""
    return (Path(run_dir) / constants.PEAR_JSON).exists()


def read_pear_json(run_dir: str | Path) -> dict[str, Any]:
    """``pear.json`` of a run folder as recorded, unchecked (:func:`~pear_lens.artifact.load_artifact` checks it
    against the coefficient file and builds the artifact)."""
    return json.loads(read_text(Path(run_dir) / constants.PEAR_JSON))


def artifact_sha256(run_dir: str | Path) -> str:
    """The artifact by content: the SHA-256 of its coefficient file as ``pear.json`` records it (which
    :func:`~pear_lens.artifact.load_artifact` checks against the file; load it first)."""
    return str(read_pear_json(run_dir)["coefficients_file"]["sha256"])


def write_training(run_dir: Path, artifact: "Artifact", log: pd.DataFrame, figure: "go.Figure",
                   png: bool, placement: dict[str, str] | None = None) -> "Artifact":
    """Add a training's outputs to a run folder: the log (``training_log.csv``, ``training.html``/``.png``)
    and, last, the artifact (``coefficients.safetensors`` + ``pear.json``). ``artifact.path`` is set to
    ``run_dir``."""
    # the whole new run folder (discovery files copied, training outputs added) is swapped in at once:
    # a failure or Ctrl-C while saving leaves the old folder as it was
    with staged_update(run_dir, replaced=TRAIN_OUTPUTS) as stage:
        with atomic_path(stage / constants.TRAINING_CSV) as tmp:
            log.to_csv(tmp, index=False)
        save_figure(figure, stage / constants.TRAINING_HTML, formats=_formats(png))
        record_stage(stage, "train", placement)
        artifact.save(stage)
        seal_files(stage, constants.TRAINING_CSV)
    artifact.path = Path(run_dir)
    return artifact


def write_k_sweep(run_dir: Path, table: pd.DataFrame, figure: "go.Figure", png: bool,
                  placement: dict[str, str] | None = None) -> None:
    """Add the curve over K (``ablation.csv``, ``ablation.html``/``.png``) to a run folder."""
    with staged_update(run_dir, replaced=K_SWEEP_OUTPUTS) as stage:
        record_stage(stage, "ablate", placement)
        table.to_csv(stage / constants.K_SWEEP_CSV, index=False)
        save_figure(figure, stage / constants.K_SWEEP_HTML, formats=_formats(png))
        seal_files(stage, constants.K_SWEEP_CSV)
