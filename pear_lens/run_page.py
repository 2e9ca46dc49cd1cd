"""One self-contained HTML page per run folder: its figures, tables, settings and provenance (``pear-lens report``).

The page reads what ``discover``, ``train``, ``atlas``, ``ablate`` and ``demo`` wrote into a run folder (through
the readers of :mod:`pear_lens.runs`, :class:`~pear_lens.results.HeadScores`, :func:`~pear_lens.artifact.load_artifact`
and :class:`~pear_lens.atlas.HeadAtlas`) and draws it with the figures those result types already offer; a
section appears only when its files are there. plotly.js is copied once into the page from the installed plotly
package, so the page opens offline and asks no server for anything. The skeleton and its CSS are the template
``templates/run_page.html``.
"""
from __future__ import annotations

import html
import json
import os
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

from pear_lens import constants
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_write_text, check_writable_parent, read_text
from pear_lens.output_lock import writing

if TYPE_CHECKING:
    import plotly.graph_objects as go

GENERATOR = "pear_lens run report"
"""The page's ``<meta name="generator">``: how a later report knows it may replace the file."""


@dataclass
class _Section:
    """One part of the page: an anchor, a heading and its body (HTML), and its figures' div ids."""

    id: str
    title: str
    body: list[str] = field(default_factory=list)

    def text(self, text: str, cls: str = "note") -> None:
        self.body.append(f'<p class="{cls}">{html.escape(text)}</p>')


class _Page:
    """The sections being built and the figures drawn into them (each figure's div id is unique)."""

    def __init__(self) -> None:
        self.sections: list[_Section] = []
        self.figures: list[str] = []

    def section(self, id: str, title: str) -> _Section:
        s = _Section(id, title)
        self.sections.append(s)
        return s

    def figure(self, section: _Section, name: str, draw: Callable[[], "go.Figure"]) -> None:
        """Draw a figure into ``section``; a figure that cannot be drawn becomes a note saying why."""
        div_id = f"figure-{name}"
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fig = draw()
        except PearLensError as e:
            section.text(f"{name}: not drawn ({e})", "note warning")
            return
        for w in caught:
            section.text(f"note: {w.message}", "note warning")
        self.figures.append(div_id)
        section.body.append('<div class="figure">' + fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=div_id,
            config={"displaylogo": False, "responsive": True}) + "</div>")


def _table(df: pd.DataFrame, floats: str = "{:.4g}") -> str:
    """An HTML table of ``df`` (escaped), numbers right-aligned."""
    head = "".join(f'<th class="{"num" if pd.api.types.is_numeric_dtype(df[c]) else ""}">{html.escape(str(c))}</th>'
                   for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, (bool, np.bool_)):
                text, cls = str(bool(v)), ""
            elif isinstance(v, (float, np.floating)):
                text, cls = ("" if v != v else floats.format(float(v))), "num"
            elif isinstance(v, (int, np.integer)):
                text, cls = str(int(v)), "num"
            else:
                text, cls = str(v), ""
            cells.append(f'<td class="{cls}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _record(record: dict[str, Any]) -> str:
    """A flat key/value table of a recorded dict (nested values as compact JSON)."""
    rows = [{"setting": k, "value": v if isinstance(v, str) else json.dumps(v, default=str)}
            for k, v in record.items()]
    return _table(pd.DataFrame(rows, columns=["setting", "value"]))


def _link(target: Path, page: Path, label: str | None = None) -> str:
    """A link from the page to ``target``, relative so the folder can move with the page."""
    rel = Path(os.path.relpath(target.resolve(), page.parent.resolve())).as_posix()
    return f'<a href="{html.escape(rel)}">{html.escape(label or target.name)}</a>'


# --------------------------------------------------------------------------- the sections


def _scores_sections(page: _Page, run_dir: Path, out: Path, top: int, n_boot: int) -> tuple[Any, dict]:
    from pear_lens.results import HeadScores

    scores, info = HeadScores.load_run(run_dir)
    has_intervals = scores.per_prompt is not None
    s = page.section("scores", "Head scores")
    s.text(f"Δπ of each of the {scores.scores.numel()} heads of {scores.model} ({scores.method} patching, "
           f"{scores.metric}, {scores.difference} difference): positive Δπ means that removing the head helps "
           "the model use its context.")
    page.figure(s, "heatmap", lambda: scores.heatmap(top_k=min(10, top), mark_significant=has_intervals,
                                                     n_boot=n_boot))
    if has_intervals:
        page.figure(s, "intervals", lambda: scores.caterpillar(top=top, n_boot=n_boot))
    else:
        s.text("This run keeps no per-prompt values (written before pear_lens kept them), so it has no intervals; "
               "rerun `pear-lens discover` to get them.")

    h = page.section("heads", "Ranked heads")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = scores.to_dataframe(ci=has_intervals, n_boot=n_boot)
    columns = ["rank", "layer", "head", "score"] + (["ci_low", "ci_high", "p_value", "q_value"] if has_intervals else [])
    ranked = df.sort_values("rank", kind="stable")[columns].head(top).rename(columns={"score": "Δπ"})
    ranked.insert(1, "label", [f"L{l}.H{hd}" for l, hd in zip(ranked["layer"], ranked["head"])])
    unranked = scores.why_unranked()
    h.text((f"No ranking: {unranked}, so every order of the heads would be the tie rule's, not Δπ's; the first "
            f"{len(ranked)} of {len(df)} heads in layer order" if unranked else
            f"The top {len(ranked)} of {len(df)} heads by Δπ")
           + (f"; 95% stratified bootstrap intervals ({n_boot} resamples), t-test p and Benjamini–Hochberg q over "
              "all heads." if has_intervals else "."))
    for w in caught:
        h.text(f"note: {w.message}", "note warning")
    h.body.append(_table(ranked))
    h.body.append(f'<p class="note">Every head: {_link(run_dir / constants.HEAD_SCORES_CSV, out)}.</p>')

    stability = run_dir / constants.STABILITY_JSON
    if stability.is_file():
        h.body.append("<h3>Stability over seeds</h3>")
        record = json.loads(read_text(stability))
        h.body.append(_record({k: v for k, v in record.items() if not isinstance(v, (list, dict)) or k.startswith("heads")}))
        if (run_dir / constants.STABILITY_CSV).is_file():
            h.body.append(f'<p class="note">Table: {_link(run_dir / constants.STABILITY_CSV, out)}.</p>')
    return scores, info


def _atlas_section(page: _Page, run_dir: Path, top: int) -> dict | None:
    if not (run_dir / constants.HEAD_ATLAS_JSON).is_file():
        return None
    from pear_lens.atlas import HeadAtlas

    s = page.section("atlas", "Head atlas")
    try:
        atlas = HeadAtlas.load(run_dir)
    except PearLensError as e:
        s.text(f"The atlas could not be read: {e}", "note warning")
        return None
    k = min(10, top)
    s.text(f"Δπ beside {len(atlas.names)} known head roles ({', '.join(atlas.names)}).")
    page.figure(s, "atlas-heatmaps", lambda: atlas.heatmaps(top_k=k))
    page.figure(s, "atlas-scatter", lambda: atlas.scatter(top_k=k))
    s.body.append(f"<h3>Roles of the top {k} heads by Δπ</h3>")
    s.body.append(_table(atlas.roles(top_k=k)))
    return json.loads(read_text(run_dir / constants.HEAD_ATLAS_JSON))


def _training_curve(log: pd.DataFrame, model: str) -> "go.Figure":
    """The training figure (:func:`pear_lens.drawing.training_curves`) redrawn from ``training_log.csv``."""
    from pear_lens.drawing import require_columns, training_curves

    require_columns(log, ["step", "layer", "head", "tau", "loss"], constants.TRAINING_CSV)
    heads = list(dict.fromkeys(zip(log["layer"].astype(int), log["head"].astype(int))))
    tau = log.pivot_table(index="step", columns=["layer", "head"], values="tau").sort_index()
    trajectory = tau[[h for h in heads]].to_numpy().tolist()
    loss = log.groupby("step")["loss"].first().sort_index().dropna().tolist()
    return training_curves(loss, trajectory, heads, model)


def _damaged(run_dir: Path, name: str, fix: str) -> str | None:
    """Why ``run_dir/name`` differs from what its run's ``manifest.json`` records (cut, edited, another run's), or
    None when it is as written (or the run has no manifest: written before it existed)."""
    from pear_lens import manifest

    try:
        manifest.check(run_dir, name, fix=fix)
    except PearLensError as e:
        return str(e)
    return None


def _training_section(page: _Page, run_dir: Path, out: Path, model: str) -> Any:
    from pear_lens.artifact import load_artifact
    from pear_lens.plots import coefficient_bars

    if not (run_dir / constants.PEAR_JSON).is_file():
        return None
    s = page.section("training", "Training and τ")
    try:
        artifact = load_artifact(run_dir)
    except PearLensError as e:
        s.text(f"The artifact could not be read: {e}", "note warning")
        return None
    log_path = run_dir / constants.TRAINING_CSV
    damaged = _damaged(run_dir, constants.TRAINING_CSV, "rerun `pear-lens train`") if log_path.is_file() else None
    if damaged:
        s.text(f"The training log cannot be trusted, so no training curve is drawn: {damaged}", "note warning")
    elif log_path.is_file():
        log = pd.read_csv(log_path)
        page.figure(s, "training", lambda: _training_curve(log, model))
    else:
        s.text(f"No {constants.TRAINING_CSV} beside the artifact: no training curve.")
    s.body.append("<h3>τ per head</h3>")
    page.figure(s, "tau", lambda: coefficient_bars(artifact))
    tau = artifact.to_dataframe().rename(columns={"score": "Δπ"})
    tau.insert(0, "label", [f"L{l}.H{h}" for l, h in artifact.heads])
    s.body.append(_table(tau))
    files = [p for p in (log_path, run_dir / constants.PEAR_JSON, run_dir / constants.COEFFICIENTS_SAFETENSORS)
             if p.is_file()]
    s.body.append(f'<p class="note">Files: {", ".join(_link(p, out) for p in files)}.</p>')
    return artifact


def _evaluation_section(page: _Page, run_dir: Path, out: Path, evals: Sequence[Path]) -> dict | None:
    from pear_lens.plots import accuracy_by_position, k_sweep_curve

    sweep, demo = run_dir / constants.K_SWEEP_CSV, run_dir / constants.DEMO_CHECK_JSON
    if not (sweep.is_file() or demo.is_file() or evals):
        return None
    s = page.section("evaluations", "Evaluations")
    if sweep.is_file():
        s.body.append("<h3>Re-weighting K heads (<code>pear-lens ablate</code>)</h3>")
        damaged = _damaged(run_dir, constants.K_SWEEP_CSV, "rerun `pear-lens ablate --overwrite`")
        if damaged:
            s.text(f"The K sweep cannot be trusted, so it is not drawn: {damaged}", "note warning")
        else:
            table = pd.read_csv(sweep)
            page.figure(s, "k-sweep", lambda: k_sweep_curve(table))
        s.body.append(f'<p class="note">Table: {_link(sweep, out)}.</p>')
    check = None
    if demo.is_file():
        check = json.loads(read_text(demo))
        s.body.append("<h3>Before and after folding (<code>pear-lens demo</code>)</h3>")
        rows = [{"check": "copy task", "model": name, "accuracy": float(c["accuracy"]), "loss": float(c["loss"]),
                 "n": int(c["n_sequences"]), "95% CI": ""}
                for name, c in check.get("copy_task", {}).items()]
        kv = check.get("kv_retrieval", {})
        rows += [{"check": "key-value retrieval", "model": name, "accuracy": float(a["accuracy"]),
                  "loss": float("nan"), "n": int(kv.get("n_items", 0)),
                  "95% CI": f"[{a['ci_low']:.1%}, {a['ci_high']:.1%}]"}
                 for name, a in kv.get("accuracy", {}).items()]
        if rows:
            s.body.append(_table(pd.DataFrame(rows)))
        s.body.append(f'<p class="note">Record: {_link(demo, out)}.</p>')
    for folder in evals:
        summary = pd.read_csv(folder / constants.EVAL_SUMMARY_CSV, dtype={"gold_position": str})
        name = folder.name
        s.body.append(f"<h3>Evaluation {html.escape(name)} (<code>pear-lens eval</code>)</h3>")
        page.figure(s, f"eval-{len(page.figures)}", lambda summary=summary: accuracy_by_position(summary))
        overall = summary[summary["gold_position"].astype(str) == "all"]
        keep = [c for c in ("task", "condition", "n", "accuracy", "ci_low", "ci_high", "delta_vs_baseline",
                            "p_vs_baseline") if c in overall.columns]
        s.body.append(_table(overall[keep]))
        s.body.append(f'<p class="note">Folder: {_link(folder / constants.EVAL_SUMMARY_CSV, out)}, '
                      f'{_link(folder / constants.EVAL_JSON, out)}.</p>')
    return check


def _provenance_section(page: _Page, run_dir: Path, out: Path, info: dict, artifact: Any, atlas: dict | None,
                        demo: dict | None) -> None:
    s = page.section("provenance", "Settings and provenance")
    model = info.get("model", {})
    s.body.append("<h3>Model</h3>")
    s.body.append(_record({**model, "fingerprint (scored)": info.get("scores", {}).get("fingerprint", "")}))
    s.body.append("<h3>Commands that wrote this folder</h3>")
    stages = [("pear-lens discover", constants.DISCOVERY_JSON)]
    if artifact is not None:
        stages.append(("pear-lens train", constants.PEAR_JSON))
    if atlas is not None:
        stages.append(("pear-lens atlas", constants.HEAD_ATLAS_JSON))
    if (run_dir / constants.K_SWEEP_CSV).is_file():
        stages.append(("pear-lens ablate", constants.K_SWEEP_CSV))
    if demo is not None:
        stages.append(("pear-lens demo", constants.DEMO_CHECK_JSON))
    s.body.append("<ul>" + "".join(f"<li><code>{html.escape(c)}</code>: {_link(run_dir / f, out)}</li>"
                                   for c, f in stages) + "</ul>")
    scores = info.get("scores", {})
    s.body.append("<h3><code>pear-lens discover</code>: settings</h3>")
    s.body.append(_record(info.get("config", {})))
    s.body.append("<h3>How Δπ was made</h3>")
    s.body.append(_record({k: scores.get(k) for k in ("method", "metric", "difference", "options", "task",
                                                      "clean_metric") if k in scores}))
    if "copy_task" in info:
        s.body.append("<h3>The unmodified model on the copy task</h3>")
        s.body.append(_record(info["copy_task"]))
    if artifact is not None:
        s.body.append("<h3><code>pear-lens train</code>: recipe</h3>")
        s.body.append(_record({**artifact.training, "pear_lens_version": artifact.pear_lens_version,
                               "base model fingerprint": artifact.fingerprint}))
    if atlas is not None:
        s.body.append("<h3><code>pear-lens atlas</code>: detectors</h3>")
        s.body.append(_record({name: {k: d.get(k) for k in ("short", "prompts", "options", "source")}
                               for name, d in atlas.get("detectors", {}).items()}))
        if atlas.get("extra"):
            s.body.append(_record(atlas["extra"]))
    s.body.append("<h3>Versions</h3>")
    s.body.append(_record(info.get("environment", {})))
    if "seconds" in info:
        s.text(f"Discovery took {info['seconds']} s.")


def _files_section(page: _Page, run_dir: Path, out: Path) -> None:
    s = page.section("files", "Files")
    names = sorted(p for p in run_dir.iterdir() if not p.name.startswith(".") and p.resolve() != out.resolve())
    s.body.append("<ul>" + "".join(f"<li>{_link(p, out, p.name + ('/' if p.is_dir() else ''))}</li>"
                                   for p in names) + "</ul>")


# --------------------------------------------------------------------------- the page


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its generator tag, in the first kilobytes)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f'<meta name="generator" content="{GENERATOR}">' in f.read(4096)
    except OSError:
        return False


def _check_evals(evals: Sequence[str | os.PathLike]) -> list[Path]:
    folders = []
    for e in evals:
        folder = Path(e)
        if not (folder / constants.EVAL_SUMMARY_CSV).is_file() or not (folder / constants.EVAL_JSON).is_file():
            raise PearLensError(f"{folder} has no {constants.EVAL_SUMMARY_CSV}/{constants.EVAL_JSON}; give a "
                                "`pear-lens eval` folder")
        folders.append(folder)
    return folders


def render_run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                      evals: Sequence[str | os.PathLike] = (), top: int = 20, n_boot: int = 2000) -> str:
    """The report page of ``run_dir`` as HTML text (links are relative to ``out``, by default
    ``RUN_DIR/report.html``); :func:`run_report` writes it."""
    import plotly
    from plotly.offline import get_plotlyjs

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PearLensError(f"{run_dir} is not a folder; give a run folder written by `pear-lens discover`")
    if top < 1:
        raise PearLensError(f"top must be at least 1, got {top}")
    out = Path(out) if out is not None else run_dir / constants.RUN_REPORT_HTML
    folders = _check_evals(evals)
    page = _Page()
    scores, info = _scores_sections(page, run_dir, out, top, n_boot)
    atlas = _atlas_section(page, run_dir, top)
    artifact = _training_section(page, run_dir, out, scores.model)
    demo = _evaluation_section(page, run_dir, out, folders)
    _provenance_section(page, run_dir, out, info, artifact, atlas, demo)
    _files_section(page, run_dir, out)

    from pear_lens import __version__

    model = info.get("model", {})
    subtitle = (f"<p>Run folder {_link(run_dir, out, str(run_dir))} · model {html.escape(str(model.get('name', '')))}"
                f" ({html.escape(str(model.get('hf_id', '')))}) · weights {html.escape(scores.fingerprint)}</p>"
                f"<p>Page written by pear_lens {html.escape(__version__)}; it needs no network "
                f"(plotly.js {html.escape(plotly.__version__)} is inside it).</p>")
    template = Template(resources.files("pear_lens").joinpath("templates/run_page.html").read_text(encoding="utf-8"))
    return template.substitute(
        generator=GENERATOR, title=html.escape(f"{scores.model}: pear_lens run report"),
        plotly_version=html.escape(plotly.__version__), plotly_js=get_plotlyjs(), subtitle=subtitle,
        nav="".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in page.sections),
        sections="\n".join(f'<section id="{s.id}">\n<h2>{html.escape(s.title)}</h2>\n' + "\n".join(s.body)
                           + "\n</section>" for s in page.sections))


def run_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
               evals: Sequence[str | os.PathLike] = (), overwrite: bool = False, top: int = 20,
               n_boot: int = 2000) -> Path:
    """Write one self-contained HTML page about a run folder and return its path.

    ``out`` defaults to ``RUN_DIR/report.html``. The page holds the Δπ heatmap (with intervals where the run
    kept per-prompt values), the ranked heads (the ``top`` first), the head atlas, the training curve and τ per
    head, the K sweep, the demo's before/after check and the eval folders ``evals`` (each where present), and
    the run's settings and provenance. An earlier report is replaced; any other file at ``out`` only with
    ``overwrite``. The page is written atomically.

    >>> import pear_lens as pl                         # doctest: +SKIP
    >>> pl.run_report("runs/demo")                     # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / constants.RUN_REPORT_HTML
    if target.is_dir():
        raise PearLensError(f"{target} is a folder; give the path of the HTML file to write")
    if target.exists() and not overwrite and not _is_ours(target):
        raise PearLensError(f"{target} exists and was not written by `pear-lens report`; choose another path or "
                            "pass --overwrite to replace it")
    check_writable_parent(target, "--out")
    # one writer at a time, as the command line holds it: the run folder, or the --out given
    with writing(Path(out) if out is not None else run_dir, "pear-lens report"):
        text = render_run_report(run_dir, target, evals=evals, top=top, n_boot=n_boot)
        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(target, text)
