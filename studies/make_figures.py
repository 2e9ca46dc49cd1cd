"""Regenerate the figures in figures/ from run folders.

    python -m studies.make_figures                    # score the three real models itself (cached), then plot
    python -m studies.make_figures RUN_DIR [RUN_DIR ...] --out figures

With no RUN_DIR it runs discovery itself into ``--cache`` (default ``runs/figures``,
git-ignored): path patching with the reference settings for every ``--models``
entry, each on a copy task it can do (without BOS, else with BOS: ``pear_lens.copy_check``),
and path, activation and attribution patching on a reduced task for
``--agreement-model`` (exact activation patching on the reference settings
takes many minutes on a CPU). A cached run is reused when its model, method and
settings match; ``--refresh`` scores again.

From the runs it writes, into ``--out``:
- ``heatmap_<model>``, ``relative_depth``, ``score_distributions``, ``concentration``: one path-patching run per model
  (the one with the most proxy settings), the models side by side;
- ``method_agreement_<a>_vs_<b>``: every pair of runs of one model and task that differ in method;
- ``compare.csv``, ``compare_summary.csv``: :func:`pear_lens.compare.compare` and ``run_summary`` of all runs;
- from any folder under the given ones (and, with no RUN_DIR, under ``artifacts/``) that holds them:
  ``ablation_curve`` (the K sweep, ``ablation.csv``), ``accuracy_by_position`` (evaluation ``summary.csv``) and
  ``coefficients_<run>`` (a re-weighting artifact, ``pear.json``).
Figures are HTML (plotly.js from its CDN, so the files stay small) plus PNG, PDF and SVG in the print style of
:mod:`pear_lens.drawing` (``--no-png``: HTML only).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd

from pear_lens import constants, plots
from pear_lens.compare import compare, concentration_curves, heads_by_depth, load_runs, run_summary
from pear_lens.errors import CopyTaskTooWeak, PearLensError
from pear_lens.io import atomic_write_text
from pear_lens.figure_files import figure_formats, save_figure
from pear_lens.proxy_task import REFERENCE_SETTINGS
from pear_lens.results import HeadScores
from pear_lens.runs import find_runs, is_run

ROOT = Path(__file__).resolve().parents[1]
REDUCED_SETTINGS = ((20, 25),)
FAST_SETTINGS = ((6, 12),)
AGREEMENT_METHODS = ("path", "activation", "attribution")
EVAL_COLUMNS = {"model", "task", "condition", "gold_position", "accuracy"}
K_SWEEP_COLUMNS = {"k", "selection", "copy_accuracy"}


def settings_key(scores: HeadScores) -> tuple:
    return tuple(tuple(s) for s in scores.task.get("settings", []))


def discover_cached(cache: Path, model: str, method: str, settings, refresh: bool,
                    allow_weak_copy_task: bool = False) -> Path:
    """A discovery run folder for (model, method, settings), scored only if not cached already."""
    from pear_lens.workflow import DiscoverConfig, discover
    from pear_lens.proxy_task import ProxyTask

    tag = "reference" if tuple(settings) == REFERENCE_SETTINGS else "x".join(map(str, settings[0])) + (
        f"+{len(settings) - 1}" if len(settings) > 1 else "")
    out = cache / f"{model}_{method}_{tag}"
    if not refresh and is_run(out):
        try:
            cached = HeadScores.load(out)
            if (cached.model, cached.method, settings_key(cached)) == (model, method, tuple(settings)):
                print(f"reusing {out}")
                return out
        except PearLensError:
            pass  # corrupt or foreign: score again
    print(f"scoring {model} with {method} patching, settings {settings} -> {out}", flush=True)
    # each model on a copy task it can do (pear_lens.copy_check.COPY_RULE): the reference task without BOS,
    # else with BOS; discover itself measures the copy accuracy and refuses a task the model cannot do
    for bos in (False, True):
        try:
            discover(DiscoverConfig(out=out, model=model, method=method, overwrite=True, no_png=True, quiet=True,
                                    task=ProxyTask(settings=tuple(settings), prepend_bos=bos),
                                    allow_weak_copy_task=allow_weak_copy_task))
            return out
        except CopyTaskTooWeak as e:
            if bos:
                raise
            print(f"{model}: {e}; trying the task with BOS", flush=True)
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class Writer:
    """Saves figures and tables under one folder and remembers what it wrote."""

    def __init__(self, out: Path, formats: list[str]):
        self.out, self.formats, self.written = out, formats, []

    def figure(self, fig, name: str) -> None:
        self.written += save_figure(fig, self.out / f"{_slug(name)}.html", formats=self.formats)

    def table(self, df: pd.DataFrame, name: str) -> None:
        self.written.append(atomic_write_text(self.out / name, df.to_csv(index=False)))


def discovery_figures(runs: dict[str, HeadScores], write: Writer, k: int) -> None:
    # one path run per model (the one with the most proxy settings) for the heatmaps and cross-model figures
    per_model: dict[str, HeadScores] = {}
    for s in runs.values():
        if s.method == "path" and (s.model not in per_model or len(settings_key(s)) > len(settings_key(per_model[s.model]))):
            per_model[s.model] = s
    for model, scores in per_model.items():
        write.figure(plots.head_heatmap(scores, top_k=k), f"heatmap_{model}")
    if per_model:
        write.figure(plots.relative_depth(heads_by_depth(per_model, k=k),
                                          title="Path-patching Δπ by relative depth"), "relative_depth")
        write.figure(plots.score_distributions(per_model, title="Δπ of every head (path patching)"),
                     "score_distributions")
        write.figure(plots.concentration(concentration_curves(per_model)), "concentration")

    for a, b in itertools.combinations(runs.values(), 2):
        if a.model == b.model and a.method != b.method and settings_key(a) == settings_key(b):
            a, b = sorted((a, b), key=lambda s: AGREEMENT_METHODS.index(s.method) if s.method in AGREEMENT_METHODS else 9)
            settings = ", ".join(f"{n}×{L}" for n, L in settings_key(a))
            fig = plots.method_agreement(a, b, top_k=k, title=f"{a.model}: {a.method} vs {b.method} patching "
                                                             f"(proxy task {settings})")
            write.figure(fig, f"method_agreement_{a.model}_{a.method}_vs_{b.method}")

    write.table(compare(runs, k=k), "compare.csv")
    write.table(run_summary(runs, k=k), "compare_summary.csv")


def other_branch_figures(folders: list[Path], write: Writer) -> None:
    """K-sweep, evaluation and coefficient figures, where both the outputs and their plot exist."""
    for csv in sorted(p for folder in folders for p in folder.rglob("*.csv")):
        columns = set(pd.read_csv(csv, nrows=0).columns)
        for needed, plot_name, stem in ((K_SWEEP_COLUMNS, "k_sweep_curve", "ablation_curve"),
                                        (EVAL_COLUMNS, "accuracy_by_position", "accuracy_by_position")):
            if not needed <= columns:
                continue
            plot = getattr(plots, plot_name, None)
            if plot is None:
                print(f"skipping {csv}: pear_lens.plots.{plot_name} is not in this installation")
                continue
            write.figure(plot(pd.read_csv(csv)), f"{stem}_{csv.parent.name}")
    for pear_json in sorted(p for folder in folders for p in folder.rglob(constants.PEAR_JSON)):
        try:
            from pear_lens.artifact import load_artifact
        except ImportError:
            print(f"skipping {pear_json}: pear_lens.artifact is not in this installation")
            continue
        artifact = load_artifact(pear_json.parent)
        # named by model, not folder: a discovery run folder is called `discovery` for every model
        write.figure(plots.coefficient_bars(artifact, step_limit=artifact_step_limit(artifact)),
                     f"coefficients_{artifact.base_model.get('name', pear_json.parent.name)}")


def artifact_step_limit(artifact) -> float | None:
    """The step limit of an artifact's training: recorded by newer artifacts, else from its recipe."""
    from pear_lens.recipe import Recipe
    from pear_lens.reweight import step_limit

    t = artifact.training
    if t.get("tau_step_limit") is not None:
        return float(t["tau_step_limit"])
    if not {"steps", "lr", "warmup_steps", "schedule_steps"} <= set(t):
        return None
    return step_limit(Recipe(steps=int(t["steps"]), lr=float(t["lr"]), warmup_steps=int(t["warmup_steps"]),
                             schedule_steps=int(t["schedule_steps"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (default: score the --models into --cache)")
    parser.add_argument("--out", type=Path, default=ROOT / "figures", help="where figures go (default: figures/)")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "figures", help="discovery runs made here")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts",
                        help="published artifacts drawn with no RUN_DIR (default: artifacts/)")
    parser.add_argument("--models", nargs="+",
                        default=["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"])
    parser.add_argument("--agreement-model", default="smollm2-135m-instruct",
                        help="model scored by every method on a reduced task ('' to skip)")
    parser.add_argument("--k", type=int, default=10, help="top-K heads marked and compared")
    parser.add_argument("--fast", action="store_true", help="one small proxy setting everywhere (smoke test)")
    parser.add_argument("--refresh", action="store_true", help="score again even where a cached run matches")
    parser.add_argument("--allow-weak-copy-task", action="store_true",
                        help="score models that copy the proxy task poorly (tiny random ones: a smoke test)")
    parser.add_argument("--no-png", action="store_true", help="HTML only (PNG, PDF and SVG need a Chrome for kaleido)")
    args = parser.parse_args(argv)

    folders = list(args.runs)
    if not folders:
        reference = FAST_SETTINGS if args.fast else REFERENCE_SETTINGS
        reduced = FAST_SETTINGS if args.fast else REDUCED_SETTINGS
        folders = [discover_cached(args.cache, m, "path", reference, args.refresh,
                                   args.allow_weak_copy_task) for m in args.models]
        if args.agreement_model:
            folders += [discover_cached(args.cache, args.agreement_model, method, reduced, args.refresh,
                                       args.allow_weak_copy_task)
                        for method in AGREEMENT_METHODS]
    found = [run for folder in folders for run in find_runs(folder)]
    discovery = list(dict.fromkeys(found))  # in the order given, each once
    if not discovery:
        raise SystemExit(f"no discovery run (a folder with {constants.DISCOVERY_JSON}) under {', '.join(map(str, folders))}")
    write = Writer(args.out, figure_formats(static=not args.no_png))
    discovery_figures(load_runs([str(p) for p in discovery]), write, args.k)
    published = args.artifacts  # the artifacts of studies/evaluate_all.py: K sweep, coefficients
    other_branch_figures(folders + ([published] if not args.runs and published.is_dir() else []), write)
    for path in write.written:
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
