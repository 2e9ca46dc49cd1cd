"""``pear-lens report RUN_DIR``: one self-contained HTML page about a run folder (:mod:`pear_lens.run_page`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pear_lens.config import option


@dataclass
class ReportConfig:
    """Settings of ``pear-lens report``."""

    run_dir: Path = option(help="run folder written by `pear-lens discover` (and train, atlas, ablate, demo)",
                           positional=True)
    out: Path | None = option(None, help="HTML file to write; none given: RUN_DIR/report.html")
    evals: tuple[Path, ...] = option((), help="`pear-lens eval` folders of this run to show beside it",
                                     nargs="*", flag="eval")
    top: int = option(20, help="heads in the ranked table and the interval figure")
    n_boot: int = option(2000, help="bootstrap resamples of the intervals (runs that keep per-prompt values)")
    overwrite: bool = option(False, help="replace OUT even if `pear-lens report` did not write it (an earlier "
                                         "report is always replaced)")

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.out = None if self.out is None else Path(self.out)
        self.evals = tuple(Path(p) for p in self.evals)


def report(config: ReportConfig) -> Path:
    """Write the report page of ``config.run_dir`` and say where."""
    from pear_lens.run_page import run_report

    path = run_report(config.run_dir, config.out, evals=config.evals, overwrite=config.overwrite, top=config.top,
                      n_boot=config.n_boot)
    print(f"wrote {path} (open it in a browser; it needs no network)")
    return path
