"""Paper figures: each returns a go.Figure in the `pear` template showing exactly the data given."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from pear_lens import plots
from pear_lens.agreement import spearman
from pear_lens.compare import heads_by_depth
from pear_lens.errors import PearLensError
from pear_lens.figure_files import save_figure
from pear_lens.results import HeadScores

from .test_compare import A, B, D, E, fake


def uses_pear_template(fig: go.Figure) -> bool:
    return fig.layout.template == pio.templates[plots.template()]


def test_import_and_use_leave_the_global_plotly_default_alone():
    code = (
        "import plotly.io as pio; before = pio.templates.default; "
        "import pear_lens.drawing, pear_lens.plots as p, pear_lens.results; "
        "assert pio.templates.default == before, 'import changed the default'; "
        "assert p.TEMPLATE_NAME not in pio.templates, 'import registered the template'; "
        "import torch; from pear_lens.results import HeadScores; "
        "s = HeadScores(scores=torch.ones(2, 2), per_setting=torch.ones(1, 2, 2), clean_metric=[1.0], model='m', "
        "method='path', metric='prob', difference='relative', task={}); p.head_heatmap(s); s.heatmap(); "
        "assert pio.templates.default == before, 'a plot changed the default'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_heatmap_is_centred_at_zero_and_marks_the_top_k_in_rank_order():
    fig = plots.head_heatmap(D, top_k=3)
    heat, marks = fig.data
    assert heat.zmid == 0 and heat.zmin == -heat.zmax == pytest.approx(-0.9)
    assert list(zip(marks.y, marks.x)) == D.top_k(3) and list(marks.text) == ["1", "2", "3"]
    assert uses_pear_template(fig)
    assert len(plots.head_heatmap(D, top_k=None).data) == 1


def test_coefficient_bars_order_heads_by_score_and_draw_tau_one():
    df = pd.DataFrame({"layer": [3, 1, 2], "head": [0, 1, 0], "tau": [0.4, 1.2, 0.8], "score": [0.1, 0.5, 0.3]})
    fig = plots.coefficient_bars(df)
    assert list(fig.layout.xaxis.categoryarray) == ["L1.H1", "L2.H0", "L3.H0"]
    bars = {x: y for trace in fig.data for x, y in zip(trace.x, trace.y)}
    assert bars == {"L3.H0": 0.4, "L1.H1": 1.2, "L2.H0": 0.8}
    assert [s.y0 for s in fig.layout.shapes] == [1.0]
    assert uses_pear_template(fig)

    class Artifact:  # anything with a .to_dataframe(), e.g. a re-weighting artifact
        def to_dataframe(self):
            return df.drop(columns="score")

    by_layer = plots.coefficient_bars(Artifact())
    assert list(by_layer.layout.xaxis.categoryarray) == ["L1.H1", "L2.H0", "L3.H0"]
    with pytest.raises(PearLensError, match="tau"):
        plots.coefficient_bars(df.drop(columns="tau"))
    log = pd.concat([df.assign(step=0, tau=1.0), df.assign(step=1)])  # a training log: τ per step
    assert {x: y for t in plots.coefficient_bars(log).data for x, y in zip(t.x, t.y)} == bars


def test_relative_depth_draws_one_legend_entry_per_run_and_k_large_markers():
    fig = plots.relative_depth(heads_by_depth({"D": D, "E": E}, k=2))
    assert [t.name for t in fig.data if t.showlegend] == ["D", "E"]
    large = [t for t in fig.data if t.marker.size == 11]
    assert [len(t.x) for t in large] == [2, 2]
    xs = [x for t in fig.data for x in t.x]
    assert len(xs) == 10 + 9 and min(xs) == 0 and max(xs) == 1
    with pytest.raises(PearLensError, match="relative_depth"):
        plots.relative_depth(pd.DataFrame({"run": ["x"]}))


def test_score_distributions_show_every_head_of_every_run():
    fig = plots.score_distributions({"A": A, "E": E})
    assert [t.name for t in fig.data if isinstance(t, go.Box)] == ["A", "E"]
    assert sorted(fig.data[1].y) == pytest.approx(sorted(E.scores.flatten().tolist()))
    tidy = pd.DataFrame({"run": ["x", "x", "y"], "score": [0.1, 0.2, 0.3]})
    assert [len(t.y) for t in plots.score_distributions(tidy).data if isinstance(t, go.Box)] == [2, 1]


def test_method_agreement_reports_spearman_and_overlap():
    fig = plots.method_agreement(A, B, top_k=3)
    rho = spearman(A.scores, B.scores)
    assert f"Spearman ρ = {rho:.2f} over 6 heads; top-3 overlap 2/3" in fig.layout.title.text
    counts = {t.name: len(t.x) for t in fig.data if t.name != "y = x"}
    assert counts == {"other heads (2)": 2, "top 3 of path only (1)": 1, "top 3 of activation only (1)": 1,
                      "top 3 of both (2)": 2}
    with pytest.raises(PearLensError, match="one model"):
        plots.method_agreement(A, D)


def test_same_method_twice_gets_distinct_axis_labels():
    fig = plots.method_agreement(A, fake("m", A.scores.tolist(), seed=1))
    assert fig.layout.xaxis.title.text != fig.layout.yaxis.title.text


def test_save_figure_writes_small_html_and_refuses_unknown_formats(tmp_path):
    written = save_figure(plots.head_heatmap(A), tmp_path / "h.html")
    assert written == [tmp_path / "h.html"]
    html = written[0].read_text()
    assert "cdn.plot.ly" in html and len(html) < 100_000  # plotly.js from the CDN, not inlined
    with pytest.raises(PearLensError, match="unknown figure format"):
        save_figure(plots.head_heatmap(A), tmp_path / "h.gif")


def test_the_same_figure_saved_twice_is_the_same_bytes(tmp_path):
    # plotly's default div id is a random UUID: every regenerated report would differ from the committed one
    first = save_figure(plots.head_heatmap(A), tmp_path / "a" / "h.html")[0]
    again = save_figure(plots.head_heatmap(A), tmp_path / "b" / "h.html")[0]
    assert first.read_bytes() == again.read_bytes()
    assert 'id="pear-lens-h"' in first.read_text()


def _browser_hiccup(fig, path, **kwargs):
    """What kaleido's browser driver does when Chromium's pipe sends it a line that is not JSON: it logs a
    traceback under "choreographer.channels.pipe", ignores the line, and the image is written all the same."""
    import logging

    try:
        raise ValueError("Expecting property name enclosed in double quotes")
    except ValueError:
        logging.getLogger("choreographer.channels.pipe").exception("JSONError decoding message. Ignoring")
    Path(path).write_bytes(b"\x89PNG")


@pytest.mark.parametrize("debug", [False, True])
def test_a_static_figure_hides_the_browser_drivers_ignored_errors(tmp_path, monkeypatch, caplog, debug):
    # a traceback on the terminal reads as a failure; the driver says itself that it ignored the message
    import logging

    import pear_lens.figure_files

    # the driver's logger as a fresh process has it, whatever earlier tests did to logging's global state
    caplog.set_level(logging.WARNING, logger="choreographer")
    pipe = logging.getLogger("choreographer.channels.pipe")
    monkeypatch.setattr(pipe, "disabled", False)
    monkeypatch.setattr(pipe, "level", logging.NOTSET)
    monkeypatch.setattr(logging.root.manager, "disable", logging.NOTSET)
    monkeypatch.setattr(pear_lens.figure_files, "_chrome_path", lambda: "/usr/bin/chromium")
    monkeypatch.setattr(go.Figure, "write_image", _browser_hiccup)
    if debug:
        monkeypatch.setenv("PEAR_LENS_DEBUG", "1")
    else:
        monkeypatch.delenv("PEAR_LENS_DEBUG", raising=False)
    before = logging.getLogger("choreographer").level
    assert save_figure(plots.head_heatmap(A), tmp_path / "h.png") == [tmp_path / "h.png"]
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("choreographer")]
    assert (logged == ["JSONError decoding message. Ignoring"]) == debug  # the debug switch shows it, for bug reports
    assert logging.getLogger("choreographer").level == before  # the logger is left as it was found


def test_heatmap_of_real_scores(tiny_model):
    from pear_lens.mediation import score_heads
    from pear_lens.proxy_task import ProxyTask

    scores: HeadScores = score_heads(tiny_model, ProxyTask(settings=((4, 6),)), progress=False)
    fig = scores.heatmap(top_k=5)  # the real Δπ in customdata (the colours may be on a symmetric-log scale)
    torch.testing.assert_close(torch.tensor(fig.data[0].customdata, dtype=torch.float32), scores.scores)


# --------------------------------------------------------------------------- the print style (issue 35)


def _outlier_grid() -> HeadScores:
    """SmolLM2's shape of problem: two large effects, the next suppressors at 0.001–0.0035, the rest tiny."""
    import numpy as np

    rng = np.random.default_rng(0)
    z = rng.normal(0, 0.0003, size=(30, 9))
    z[24, 4], z[29, 0] = 0.114, 0.05
    for i, v in enumerate((0.0035, 0.003, 0.0025, 0.002, 0.0015, 0.0012, 0.001, 0.001)):
        z[10 + i, i] = v
    return fake("m", z.tolist())


def test_heatmap_colours_show_small_suppressors_beside_an_outlier():
    # a linear ±0.114 scale left heads ranked 3–10 (Δπ 0.001–0.0035) on white: under 3 % of the colour range
    s = _outlier_grid()
    heat = plots.head_heatmap(s, top_k=10).data[0]
    bound = heat.zmax
    share = [heat.z[10 + i][i] / bound for i in range(8)]
    assert min(share) > 0.15, share  # each small suppressor gets a visible share of the red
    assert heat.zmin == -bound and heat.zmid == 0  # still symmetric about 0
    assert heat.customdata[24][4] == pytest.approx(0.114)  # the hover shows the real Δπ
    title = plots.head_heatmap(s).layout.title.text
    assert "symmetric-log" in title  # the figure states its scale
    ticks = dict(zip(heat.colorbar.ticktext, heat.colorbar.tickvals))
    assert "+10%" in ticks and "0" in ticks  # the colour bar names real values


def test_heatmap_names_units_and_no_code_names():
    fig = plots.head_heatmap(A)
    assert "relative change" in fig.data[0].colorbar.title.text  # a unit on the colour bar
    title = fig.layout.title.text
    assert "logit_minus_mean" not in title and "answer logit − mean logit" in title
    assert "path patching" in title
    assert "symmetric-log" not in title  # six even effects: a linear scale
    assert [list(r) for r in fig.data[0].z] == [list(r) for r in A.scores.tolist()]


def test_coefficient_bars_draw_the_optimisers_step_limit():
    df = pd.DataFrame({"layer": [3, 1, 2], "head": [0, 1, 0], "tau": [0.72, 1.03, 0.70], "score": [0.1, 0.5, 0.3]})
    fig = plots.coefficient_bars(df, step_limit=0.2886)
    lines = sorted(round(s.y0, 4) for s in fig.layout.shapes)
    assert lines == [round(1 - 0.2886, 4), 1.0, round(1 + 0.2886, 4)]
    assert "2 of 3 τ at it" in fig.layout.title.text  # the bars held by the budget are counted
    assert fig.layout.yaxis.range[1] >= 1.2886  # the upper limit is inside the plot

    class Artifact:  # an artifact records the limit its training had
        training = {"tau_step_limit": 0.25}

        def to_dataframe(self):
            return df

    assert sorted(round(s.y0, 2) for s in plots.coefficient_bars(Artifact()).layout.shapes) == [0.75, 1.0, 1.25]
    log = pd.concat([df.assign(step=0, tau=1.0, lr=0.1), df.assign(step=1, lr=0.05),
                     df.assign(step=2, lr=float("nan"))])  # a training log: the summed learning rates
    assert sorted(round(s.y0, 2) for s in plots.coefficient_bars(log).layout.shapes) == [0.85, 1.0, 1.15]


def test_training_curves_draw_the_step_limit():
    from pear_lens.drawing import training_curves

    fig = training_curves([3.0, 2.9], [[1.0], [0.9], [0.8]], [(0, 1)], "m", step_limit=0.25)
    assert sorted(round(s.y0, 2) for s in fig.layout.shapes) == [0.75, 1.0, 1.25]


def test_the_step_limit_share_is_the_optimisers():
    from pear_lens import reweight

    assert plots.AT_LIMIT_SHARE == reweight.AT_LIMIT_SHARE


def test_concentration_ranks_by_the_quantity_it_accumulates():
    from pear_lens.compare import concentration_curves

    df = concentration_curves({"A": A, "E": E})
    for _, g in df.groupby("run"):
        steps = g["share"].diff().dropna()
        assert (steps.diff().dropna() <= 1e-6).all()  # concave: no jump at the end from a negative head
    fig = plots.concentration(df)
    guides = [s for s in fig.layout.shapes if s.x0 in (0.01, 0.05)]
    assert len(guides) == 2 and all(s.line.dash == "dash" and s.line.color not in ("lightgrey",) for s in guides)
    assert any("top 1 %" in t.name for t in fig.data)  # each run's share at the guides, in its legend entry


def test_figures_are_laid_out_at_print_widths_in_the_colour_blind_safe_palette():
    from pear_lens.drawing import PALETTE, WIDTHS, style

    assert plots.head_heatmap(D).layout.width == WIDTHS["column"]
    assert plots.concentration(pd.DataFrame({"run": ["a", "a"], "heads": [1, 2], "fraction_of_heads": [0.5, 1.0],
                                             "share": [0.6, 1.0]})).layout.width == WIDTHS["full"]
    assert PALETTE[:3] == ["#0072B2", "#D55E00", "#009E73"]  # Okabe & Ito
    assert pio.templates[plots.template()].layout.font.size >= 12
    fig = style(go.Figure(), "column")
    assert fig.layout.width == WIDTHS["column"] and uses_pear_template(fig)


def test_without_a_chrome_the_html_is_written_and_one_line_says_why_not_the_rest(tmp_path, monkeypatch, capsys):
    import pear_lens.figure_files as ff

    monkeypatch.setattr(ff, "_chrome_path", lambda: None)
    monkeypatch.setattr(ff, "_said", set())
    assert ff.check_static_export() is False  # said before any slow work, and the run goes on
    written = save_figure(plots.head_heatmap(A), tmp_path / "h.html", formats=ff.ALL_FORMATS)
    save_figure(plots.head_heatmap(A), tmp_path / "g.html", formats=ff.ALL_FORMATS)
    assert written == [tmp_path / "h.html"] and sorted(p.name for p in tmp_path.iterdir()) == ["g.html", "h.html"]
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 1 and "PNG/PDF/SVG skipped" in lines[0] and "apt-get install chromium" in lines[0]
    assert ff.figure_formats() == ["html", "png", "pdf", "svg"] and ff.figure_formats(static=False) == ["html"]


def test_reference_lines_are_drawn_opaque():
    # simple_white draws shapes at opacity 0.3: the τ = 1 line and the concentration guides nearly vanished
    assert pio.templates[plots.template()].layout.shapedefaults.opacity == 1.0
