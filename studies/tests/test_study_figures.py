"""The study figures of issue 35, on tiny synthetic tables: what each showed wrongly before is checked here."""
from __future__ import annotations

import pandas as pd
import pytest


def _positions(n_controls: int) -> pd.DataFrame:
    rows = []
    for p in range(3):
        controls = [0.5 + 0.01 * i for i in range(n_controls)]
        rows.append({"task": "kv", "gold_position": p, "n": 100, "baseline": 0.52, "baseline_ci_low": 0.42,
                     "baseline_ci_high": 0.62, "pear": 0.55, "pear_ci_low": 0.45, "pear_ci_high": 0.65,
                     "controls_median": 0.5, "controls_q10": 0.48, "controls_q90": 0.53, "controls_n": n_controls,
                     "controls": controls})
    return pd.DataFrame(rows)


def test_positions_axis_has_integer_ticks_and_intervals_on_baseline_and_pear():
    from studies.confirmatory.document import position_figure

    fig = position_figure(_positions(19), "m · kv")
    assert fig.layout.xaxis.tickmode == "array" and list(fig.layout.xaxis.tickvals) == [0, 1, 2]  # no 0.5, 1.5
    arms = {t.name: t for t in fig.data if t.error_y.array is not None}
    assert set(arms) == {"baseline (the unmodified model)", "PEAR"}
    assert list(arms["PEAR"].error_y.array) == pytest.approx([0.10] * 3)
    assert fig.layout.yaxis.range is None  # fitted to the data, not a 0–1 range that flattens 1–3 points
    band = [t for t in fig.data if t.fill == "toself"]
    assert len(band) == 1 and band[0].mode == "lines"  # a band of 19 controls, without unexplained dots


def test_positions_draw_few_controls_one_by_one_not_as_a_band():
    from studies.confirmatory.document import MIN_BAND_CONTROLS, position_figure

    fig = position_figure(_positions(3), "m · kv")
    assert MIN_BAND_CONTROLS >= 10
    assert not [t for t in fig.data if t.fill == "toself"]  # no 10–90 % band from three controls
    dots = [t for t in fig.data if "each" in (t.name or "")]
    assert len(dots) == 1 and len(dots[0].y) == 3 * 3
    assert "too few for a band" in fig.layout.title.text


def _dev() -> pd.DataFrame:
    rows = [{"selection": "baseline", "k": 0, "task": "kv", "accuracy": 0.5, "ci_low": 0.45, "ci_high": 0.55,
             "n": 200, "steps": 0, "seeds": "[0]"}]
    for k, acc in ((2, 0.52), (5, 0.58), (10, 0.55)):
        rows.append({"selection": "top", "k": k, "task": "kv", "accuracy": acc, "ci_low": acc - 0.05,
                     "ci_high": acc + 0.05, "n": 200, "steps": 60, "seeds": "[0]"})
        rows.append({"selection": "layer_matched", "k": k, "task": "kv", "accuracy": 0.5, "ci_low": 0.45,
                     "ci_high": 0.55, "n": 400, "steps": 60, "seeds": "[0, 1]"})
    return pd.DataFrame(rows)


def test_dev_curve_marks_the_chosen_k_and_explains_the_band():
    from studies.exploratory.design import dev_accuracy_curve

    fig = dev_accuracy_curve(_dev(), chosen=5)
    marks = [s for s in fig.layout.shapes if s.x0 == s.x1 == 5]
    assert marks, "the chosen K is drawn"
    assert "chosen K = 5" in " ".join(a.text for a in fig.layout.annotations)
    assert "band" in fig.layout.title.text and "original model" in fig.layout.title.text
    assert fig.layout.legend.yref == "container"  # the legend sits below the axis title, not on it
    assert not [s for s in dev_accuracy_curve(_dev()).layout.shapes if s.x0 == s.x1 == 5]
