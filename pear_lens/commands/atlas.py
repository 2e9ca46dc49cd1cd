"""``pear-lens atlas RUN_DIR``: every head's Δπ beside the head roles researchers already know.

Loads the model a discovery run scored (checked by its weight fingerprint), runs the chosen
detectors (default: all registered) and adds to the run folder ``head_atlas.csv`` (one row per
head), ``head_atlas.json``, ``head_atlas_prompts.safetensors`` and two figures,
``atlas_heatmaps`` and ``atlas_scatter`` (HTML, and PNG unless ``--no-png``). The folder is updated
as a whole: a failure or Ctrl-C leaves it byte-identical.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pear_lens import constants
from pear_lens.atlas import DETECTORS, HeadAtlas, NeedleConfig
from pear_lens.config import option
from pear_lens.models.loaded import Placement
from pear_lens.text_formats import Settings
from pear_lens.errors import PearLensError
from pear_lens.figure_files import STATIC_FORMATS
from pear_lens.uncertainty import MIN_BOOT
from pear_lens.workflow import REPORT_K

ATLAS_FILES = (constants.HEAD_ATLAS_CSV, constants.HEAD_ATLAS_JSON, constants.HEAD_ATLAS_PROMPTS,
               constants.ATLAS_HEATMAPS_HTML, constants.ATLAS_SCATTER_HTML,
               *(Path(html).with_suffix(f".{fmt}").name for html in (constants.ATLAS_HEATMAPS_HTML,
                                                                     constants.ATLAS_SCATTER_HTML)
                 for fmt in STATIC_FORMATS))


def _detector_options() -> dict[str, type]:
    return {name: d.options for name, d in DETECTORS.items()}


@dataclass(kw_only=True)
class AtlasConfig(Placement):
    """Settings of ``pear-lens atlas``: the run folder, the detectors and their prompts, where the model runs."""

    run_dir: Path = option(positional=True, help="a `pear-lens discover` run folder (the atlas is added to it)")
    detectors: tuple[str, ...] = option(default_factory=lambda: tuple(DETECTORS),
                                        help="head detectors to run, comma-separated (see pear_lens.atlas.DETECTORS)")
    options: Any = option(None, sections=_detector_options, selector="detectors",
                          help="each chosen detector's own options")
    needle: NeedleConfig = option(default_factory=NeedleConfig,
                                  help="needle-in-a-haystack prompts of the retrieval score")
    proxy_settings: Settings | None = option(None, help="replace the run's (batch, n) proxy settings, e.g. 10x20 "
                                                         "(same seed and BOS; default: the run's own sequences)")
    model: str | None = option(None, help="the weights to load (default: the run's model); must be the weights "
                                          "the run scored")
    report_k: int = option(REPORT_K, help="top-K Δπ heads compared with each detector's top K, and outlined on the "
                                          "figures (`pear-lens train --top-k` is the number of heads trained)")
    n_boot: int = option(MIN_BOOT, help=f"bootstrap replicates of each Spearman ρ's interval (at least {MIN_BOOT}); "
                                        "each resamples the heads, Δπ's prompts where the run kept per-prompt "
                                        "values, and the detector's prompts")
    overwrite: bool = option(False, help="replace an atlas already in RUN_DIR")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bars")


def atlas(config: AtlasConfig) -> HeadAtlas:
    """Load the run's model, run the detectors and add the atlas files to the run folder."""
    from pear_lens.atlas import check_detectors, head_atlas
    from pear_lens.io import staged_update
    from pear_lens.figure_files import check_static_export, figure_formats, save_figure
    from pear_lens.models.loaded import load_model
    from pear_lens.results import HeadScores
    from pear_lens.runs import read_info, record_stage, recorded_dtype, scored_model, seal_files

    if config.n_boot < MIN_BOOT:
        raise PearLensError(f"--n-boot must be at least {MIN_BOOT} (the interval's tails need them), "
                            f"got {config.n_boot}")
    run_dir = Path(config.run_dir)
    if not run_dir.is_dir():
        raise PearLensError(f"{run_dir} is not a folder; give a `pear-lens discover` run folder")
    scores = HeadScores.load(run_dir)
    run_model, run_fingerprint = scored_model(run_dir)
    options = check_detectors(config.detectors, config.options)
    present = [name for name in ATLAS_FILES if (run_dir / name).exists()]
    if present and not config.overwrite:
        raise PearLensError(f"{run_dir} already holds a head atlas ({present[0]}); pass --overwrite to replace it")
    if config.report_k < 1 or config.report_k > scores.scores.numel():
        raise PearLensError(f"--report-k must be between 1 and {scores.scores.numel()}, got {config.report_k}")
    config.check_placement()
    if not config.no_png:
        check_static_export()
    recorded = recorded_dtype(read_info(run_dir))  # the fingerprint is compared as the run computed it
    model = load_model(config.model or run_model, **config.load_options(recorded))
    if run_fingerprint and model.fingerprint_as(recorded) != run_fingerprint:
        raise PearLensError(f"{run_dir} was scored on other weights ({run_model}, fingerprint {run_fingerprint[:16]}…) "
                            f"than {config.model or run_model} ({model.fingerprint_as(recorded)[:16]}…, in {recorded} "
                            "as the run); give the model the run scored")
    result = head_atlas(model, scores, list(options), options, needle=config.needle,
                        proxy_settings=config.proxy_settings, progress=not config.quiet)
    formats = figure_formats(static=not config.no_png)
    with staged_update(run_dir, replaced=ATLAS_FILES) as stage:
        record_stage(stage, "atlas", model.placement())
        result.save(stage, top_k=config.report_k, n_boot=config.n_boot)
        seal_files(stage, constants.HEAD_ATLAS_CSV, constants.HEAD_ATLAS_JSON, constants.HEAD_ATLAS_PROMPTS)
        save_figure(result.heatmaps(top_k=config.report_k), stage / constants.ATLAS_HEATMAPS_HTML, formats=formats)
        save_figure(result.scatter(top_k=config.report_k, n_boot=config.n_boot), stage / constants.ATLAS_SCATTER_HTML,
                    formats=formats)
    return result
