"""``pear-lens compare RUN_DIR ... --out DIR``: compare discovery runs and write the tables and the figure.

The statistics are :mod:`pear_lens.compare`'s; this command loads the run folders, writes
``compare.csv``, ``summary.csv``, the relative-depth and the concentration figures into a new folder atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pear_lens import constants
from pear_lens.compare import compare, concentration_curves, heads_by_depth, load_runs, run_summary
from pear_lens.config import option


@dataclass
class CompareConfig:
    """Settings of ``pear-lens compare``."""

    run_dirs: tuple[Path, ...] = option(help="discovery run folders to compare", positional=True)
    out: Path = option(help="folder to create with compare.csv, summary.csv, the relative-depth and the "
                            "concentration figures")
    k: int = option(10, help="top-K heads per run")
    bins: int = option(10, help="relative-depth bins for comparing different models")
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier compare folder")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")

    def __post_init__(self) -> None:
        self.run_dirs = tuple(Path(p) for p in self.run_dirs)
        self.out = Path(self.out)


def compare_runs(config: CompareConfig) -> pd.DataFrame:
    """Compare the run folders of ``config`` and write the output folder atomically."""
    from pear_lens.io import check_distinct, check_output, staged_dir
    from pear_lens.figure_files import check_static_export, figure_formats, save_figure
    from pear_lens.plots import concentration as concentration_figure
    from pear_lens.plots import relative_depth as depth_figure

    check_distinct(config.run_dirs, "run folder")
    check_output(config.out, kind="compare", inputs=config.run_dirs, overwrite=config.overwrite)
    if not config.no_png:
        check_static_export()
    runs = load_runs([str(p) for p in config.run_dirs])
    pairs = compare(runs, k=config.k, bins=config.bins)
    with staged_dir(config.out, overwrite=config.overwrite, kind="compare", inputs=config.run_dirs) as stage:
        pairs.to_csv(stage / constants.COMPARE_CSV, index=False)
        run_summary(runs, k=config.k).to_csv(stage / constants.COMPARE_SUMMARY_CSV, index=False)
        formats = figure_formats(static=not config.no_png)
        save_figure(depth_figure(heads_by_depth(runs, k=config.k)), stage / constants.RELATIVE_DEPTH_HTML,
                    formats=formats)
        save_figure(concentration_figure(concentration_curves(runs)), stage / constants.CONCENTRATION_HTML,
                    formats=formats)
    return pairs
