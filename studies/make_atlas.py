"""The head atlas of the real models: tables and figures for the README, from their run folders.

    python -m studies.make_atlas            # atlases already in artifacts/MODEL (see --compute)
    python -m studies.make_atlas --compute  # run `pear-lens atlas` first on every run folder that lacks one

Each model's run folder is its published artifact (``artifacts/MODEL``: the discovery run on the
copy task the model can do, Gemma-3 with BOS). From each folder's ``head_atlas.*`` it writes into
``--out``:

- ``atlas_summary.csv``: per model and detector, Spearman ρ of Δπ with the score and its 95 % bootstrap
  interval (``HeadAtlas.statistics``: heads and prompts resampled together; ``interval`` prints it or says
  why it is undefined, ``resampled`` and ``note`` say what was resampled), how many of the top-K Δπ heads
  are in the detector's top K, and the needle copy rate behind the retrieval score;
- ``atlas_roles.csv``: each model's top-K Δπ heads with every score, rank and role;
- ``atlas_heatmaps_MODEL``, ``atlas_scatter_MODEL`` and ``atlas_across_models`` (HTML, PNG, PDF and SVG).

``studies/update_readme.py`` reads the two CSVs; nothing in the README's atlas section is typed by hand.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pear_lens import constants
from pear_lens.atlas import HeadAtlas
from pear_lens.atlas.figures import atlas_across_models
from pear_lens.errors import PearLensError
from studies.exploratory.config import PROTOCOL_MODELS
from pear_lens.io import atomic_path
from pear_lens.figure_files import figure_formats, save_figure
from pear_lens.uncertainty import MIN_BOOT

ROOT = Path(__file__).resolve().parents[1]


def _csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(PROTOCOL_MODELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "artifacts", help="folder of the models' run folders")
    parser.add_argument("--out", type=Path, default=ROOT / "figures")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--n-boot", type=int, default=MIN_BOOT, help=f"bootstrap replicates (at least {MIN_BOOT})")
    parser.add_argument("--compute", action="store_true", help="run `pear-lens atlas` where a run has no atlas yet")
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args(argv)
    formats = figure_formats(static=not args.no_png)
    summary, roles, tables = [], [], []
    for name in args.models:
        run = args.runs / name
        if not (run / constants.HEAD_ATLAS_JSON).exists():
            if not args.compute:
                print(f"{run} has no head atlas: run `pear-lens atlas {run}` or pass --compute", file=sys.stderr)
                return 2
            from pear_lens.commands.cli import main as cli
            if cli(["atlas", str(run), "--quiet", "--report-k", str(args.top_k), "--n-boot", str(args.n_boot)]
                   + (["--no-png"] if args.no_png else [])):
                return 2
        atlas = HeadAtlas.load(run)
        needle = atlas.prompts.get("needle", {})
        stats = atlas.statistics(args.top_k, args.n_boot)
        stats.insert(0, "model", name)
        stats.insert(1, "n_layers", atlas.delta_pi.n_layers)
        stats.insert(2, "n_heads", atlas.delta_pi.n_heads)
        stats.insert(3, "prepend_bos", bool(atlas.delta_pi.task.get("prepend_bos")))
        stats["needle_copied"] = needle.get("n_copied")
        stats["needle_prompts"] = needle.get("n_prompts")
        summary.append(stats)
        r = atlas.roles(args.top_k)
        r.insert(0, "model", name)
        roles.append(r)
        table = atlas.to_dataframe()
        table.insert(0, "model", name)
        tables.append(table)
        save_figure(atlas.heatmaps(top_k=args.top_k), args.out / f"atlas_heatmaps_{name}.html", formats=formats)
        save_figure(atlas.scatter(top_k=args.top_k, n_boot=args.n_boot), args.out / f"atlas_scatter_{name}.html",
                    formats=formats)
        print(f"{name}: {len(atlas.names)} detectors")
    _csv(pd.concat(summary), args.out / "atlas_summary.csv")
    _csv(pd.concat(roles), args.out / "atlas_roles.csv")
    both = pd.concat(tables)
    names = [c for c in summary[0]["detector"]]
    shorts = dict(zip(summary[0]["detector"], summary[0]["short"]))
    common = [n for n in names if n in both.columns and both[n].notna().all()]
    save_figure(atlas_across_models(both, {n: shorts[n] for n in common}, top_k=args.top_k),
                args.out / "atlas_across_models.html", formats=formats)
    print(f"wrote {args.out}/atlas_summary.csv, atlas_roles.csv and the atlas figures")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PearLensError as e:
        print(f"make_atlas: error: {e}", file=sys.stderr)
        sys.exit(2)
