"""``pear-lens eval-report``: accuracy-by-position figures and a results table from eval folders.

The table has one row per model, task and condition (overall accuracy, 95%
bootstrap CI, difference to the baseline and the exact McNemar p-value on the
same items), in Markdown for a README and in HTML. Figures are written per
model and task into the report folder's ``figures/``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pear_lens import constants, manifest
from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_write_text, check_distinct, check_output, read_text, staged_dir
from pear_lens.figure_files import check_static_export, figure_formats, save_figure
from pear_lens.tables import markdown_table


@dataclass
class EvalReportConfig:
    """Settings of ``pear-lens eval-report``."""

    eval_dirs: tuple[Path, ...] = option(help="eval folders written by `pear-lens eval`", positional=True)
    out: Path = option(help="report folder to create")
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier eval-report folder")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")


def load_summaries(eval_dirs: Sequence[Path]) -> pd.DataFrame:
    """The summaries of several eval folders, with each task's settings (size, prompt style) attached.

    A folder given twice (under any spelling) is refused: its results would count twice; a summary without a
    column ``pear-lens eval`` writes is named as malformed.
    """
    from pear_lens.evaluation.runner import SUMMARY_COLUMNS

    frames = []
    check_distinct(eval_dirs, "eval folder")
    for d in eval_dirs:
        d = Path(d)
        path, meta = d / constants.EVAL_SUMMARY_CSV, d / constants.EVAL_JSON
        if not path.exists() or not meta.exists():
            raise PearLensError(f"{d} has no {constants.EVAL_SUMMARY_CSV}/{constants.EVAL_JSON}; "
                                "is it a `pear-lens eval` folder?")
        for name in (constants.EVAL_SUMMARY_CSV, constants.EVAL_JSON):  # cut, edited or copied: refused whole
            manifest.check(d, name, fix="rerun `pear-lens eval` into a new folder")
        try:
            frame = pd.read_csv(path, dtype={"gold_position": str})
            info = json.loads(read_text(meta))
        except (ValueError, KeyError) as e:  # pandas' and json's parse errors, a non-UTF-8 file
            raise PearLensError(f"{d} holds a damaged eval folder ({' '.join(str(e).split())}); "
                                "rerun `pear-lens eval`") from None
        missing = [c for c in SUMMARY_COLUMNS if c not in frame.columns]
        if missing:
            raise PearLensError(f"{path} is malformed: it lacks the column{'s' * (len(missing) > 1)} "
                                f"{', '.join(missing)} that `pear-lens eval` writes; rerun `pear-lens eval`")
        frame["setup"] = describe_setup(frame["task"].iloc[0] if len(frame) else "", info.get("settings", {}),
                                        info.get("items", {}))
        frames.append(frame)
    if not frames:
        raise PearLensError("give at least one eval folder")
    return pd.concat(frames, ignore_index=True)


def describe_setup(task: str, settings: dict, items: dict | None = None) -> str:
    """One phrase for the table: task size, prompt style and, for counterfactual QA, how many facts were known."""
    size = settings.get("n_context")
    unit = {"kv": f"{size} pairs ({settings.get('key_format')}→{settings.get('value_format')})",
            "mdqa": f"{size} documents", "counterfactual": f"{size} sentences"}.get(task, "no context")
    known = ""
    if items and "known_facts" in items:
        known = f", on the {items['known_facts']} of {items['facts']} facts known closed-book"
    return f"{unit}, {settings.get('prompt_style', '?')} prompt{known}"


def results_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Overall rows only, formatted for reading: accuracy with CI, Δ and p against the baseline."""
    rows = summary[summary["gold_position"].astype(str) == "all"]
    out = pd.DataFrame({
        "model": rows["model"], "task": rows["task"], "setup": rows.get("setup", ""), "condition": rows["condition"],
        "n": rows["n"],
        "accuracy (95% CI)": [f"{a:.1%} [{lo:.1%}, {hi:.1%}]" for a, lo, hi in
                              zip(rows["accuracy"], rows["ci_low"], rows["ci_high"])],
        "Δ vs baseline (points)": ["" if pd.isna(d) else f"{100 * d:+.1f}" for d in rows["delta_vs_baseline"]],
        "p (McNemar)": ["" if pd.isna(p) else (f"{p:.3g}") for p in rows["p_vs_baseline"]],
    })
    return out.reset_index(drop=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def write_report(config: EvalReportConfig) -> Path:
    from pear_lens.plots import accuracy_by_position

    check_output(config.out, kind="report", inputs=config.eval_dirs, overwrite=config.overwrite)
    if not config.no_png:
        check_static_export()
    summary = load_summaries(config.eval_dirs)
    table = results_table(summary)
    with staged_dir(config.out, overwrite=config.overwrite, kind="report", inputs=config.eval_dirs) as stage:
        atomic_write_text(stage / constants.REPORT_TABLE_MD, markdown_table(table))
        atomic_write_text(stage / constants.REPORT_TABLE_HTML, table.to_html(index=False, border=0))
        summary.to_csv(stage / constants.EVAL_SUMMARY_CSV, index=False)
        for (model, task), sub in summary.groupby(["model", "task"], sort=False):
            if (sub["gold_position"].astype(str) == "all").all():
                continue  # closed-book: nothing to plot against position
            fig = accuracy_by_position(sub, title=f"{model} · {task}: accuracy by gold position (95% CI)")
            save_figure(fig, stage / "figures" / f"accuracy_{_slug(model)}_{_slug(task)}.html",
                        formats=figure_formats(static=not config.no_png))
    return config.out
