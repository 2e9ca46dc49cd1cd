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
    fig = scores.heatmap(top_k=5)
    torch.testing.assert_close(torch.tensor(fig.data[0].z, dtype=torch.float32), scores.scores)
