"""``pear-lens report``: one self-contained HTML page per run folder, checked as text here and in a real headless
Chromium (tests/test_run_report_browser.py)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.run_page import GENERATOR, run_report

ATLAS = ["--no-png", "--quiet", "--needle.n-prompts", "2", "--needle.haystack-tokens", "16", "--n-boot", "1000",
         "--retrieval.all-prompts"]


def build_run(folder: Path) -> tuple[Path, Path]:
    """A tiny-llama demo run (discover, train, apply, the before/after check) with every stage that adds to a run
    folder (atlas, ablate), and an eval folder of the same model."""
    run, evals = folder / "run", folder / "eval"
    assert main(["demo", "--model", "tiny-llama", "--out", str(run), "--steps", "3", "--n-eval", "4",
                 "--kv-items", "4", "--no-png", "--quiet", "--allow-weak-copy-task"]) == 0
    assert main(["atlas", str(run), *ATLAS]) == 0
    assert main(["ablate", str(run), "--k", "1,2", "--control-draws", "1", "--steps", "1", "--control-steps", "1",
                 "--batch-size", "2", "--micro-batch", "2", "--n", "8", "--n-eval", "4", "--quiet", "--no-png"]) == 0
    assert main(["eval", "--task", "kv", "--n", "4", "--n-context", "2", "--out", str(evals), "--model", "tiny-llama",
                 "--quiet", "--batch-size", "8"]) == 0
    return run, evals


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[Path, Path]:
    return build_run(tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def bare_run(tmp_path_factory) -> Path:
    """A discovery alone: no artifact, atlas, sweep or evaluation."""
    run = tmp_path_factory.mktemp("bare") / "run"
    assert main(["discover", "--model", "tiny-llama", "--out", str(run), "--settings", "4x8", "--quiet", "--no-png",
                 "--allow-weak-copy-task"]) == 0
    return run


@pytest.fixture(scope="module")
def page(full_run, tmp_path_factory) -> tuple[Path, str]:
    run, evals = full_run
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert main(["report", str(run), "--out", str(out), "--eval", str(evals), "--n-boot", "1000"]) == 0
    return out, out.read_text(encoding="utf-8")


def markup(text: str) -> str:
    """The page without the plotly.js it carries (whose code names URLs of its own)."""
    start = text.index('<script type="text/javascript">/**')
    return text[:start] + text[text.index("</script>", start):]


def section_ids(text: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', text)


def figure_ids(text: str) -> list[str]:
    return re.findall(r'<div id="(figure-[^"]+)" class="plotly-graph-div"', text)


def test_the_page_holds_every_part_of_a_full_run(page):
    _, text = page
    assert section_ids(text) == ["scores", "heads", "atlas", "training", "evaluations", "provenance", "files"]
    figures = figure_ids(text)
    assert figures[:2] == ["figure-heatmap", "figure-intervals"]  # the run keeps per-prompt values: intervals
    assert {"figure-atlas-heatmaps", "figure-atlas-scatter", "figure-training", "figure-tau",
            "figure-k-sweep"} <= set(figures)
    assert any(f.startswith("figure-eval-") for f in figures)
    assert len(figures) == len(set(figures))
    for word in ("ci_low", "q_value", "pear-lens discover", "pear-lens train", "pear-lens atlas", "pear-lens ablate",
                 "pear-lens demo", "Before and after folding", "key-value retrieval", "blake2b:", "transformers",
                 "tiny-llama"):
        assert word in text, word


def test_plotly_is_inside_the_page_once_and_nothing_is_fetched(page):
    _, text = page
    assert text.count("plotly.js v") <= 2 and text.count("<script type=\"text/javascript\">/**") == 1
    assert f'<meta name="generator" content="{GENERATOR}">' in text
    # no script, stylesheet, image or frame from anywhere else (links to the run's files are plain anchors)
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="', text)
    ours = markup(text)  # plotly.js itself names its CDN, for map data a report never draws
    assert "cdn.plot.ly" not in ours and "https://" not in ours.replace("https://plotly.com", "")


def test_links_point_into_the_page_or_at_files_that_exist(page):
    out, text = page
    hrefs = re.findall(r'<a href="([^"]+)"', markup(text))
    assert len(hrefs) > 10
    for href in hrefs:
        if href.startswith("#"):
            assert f'id="{href[1:]}"' in text, href
        else:
            assert (out.parent / href).exists(), href


def test_a_bare_discovery_gets_the_sections_it_has(bare_run):
    path = run_report(bare_run)
    assert path == bare_run / constants.RUN_REPORT_HTML
    text = path.read_text(encoding="utf-8")
    assert section_ids(text) == ["scores", "heads", "provenance", "files"]
    assert figure_ids(text) == ["figure-heatmap", "figure-intervals"]


def test_a_run_without_per_prompt_values_says_it_has_no_intervals(bare_run, tmp_path):
    run = Path(shutil.copytree(bare_run, tmp_path / "old"))
    shutil.rmtree(run / constants.RUN_SCORES_DIR)  # as a run from before pear_lens kept them
    text = run_report(run).read_text(encoding="utf-8")
    assert figure_ids(text) == ["figure-heatmap"] and "no intervals" in text


def test_an_earlier_report_is_replaced_and_a_foreign_file_only_with_overwrite(bare_run, tmp_path, capsys):
    out = tmp_path / "page.html"
    run_report(bare_run, out)
    first = out.stat().st_mtime_ns
    run_report(bare_run, out)  # its own page: replaced without asking
    assert out.stat().st_mtime_ns >= first
    mine = tmp_path / "mine.html"
    mine.write_text("<p>my notes</p>")
    assert main(["report", str(bare_run), "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "was not written by `pear-lens report`" in err and "--overwrite" in err and err.count("\n") == 1
    assert mine.read_text() == "<p>my notes</p>"
    assert main(["report", str(bare_run), "--out", str(mine), "--overwrite"]) == 0
    assert GENERATOR in mine.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", ["missing", "not a run", "eval", "top"])
def test_bad_input_is_refused_in_one_line(case, bare_run, tmp_path, capsys):
    args = {"missing": [str(tmp_path / "nowhere")],
            "not a run": [str(tmp_path)],
            "eval": [str(bare_run), "--out", str(tmp_path / "r.html"), "--eval", str(tmp_path)],
            "top": [str(bare_run), "--out", str(tmp_path / "r.html"), "--top", "0"]}[case]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pear-lens report: error: ") and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_the_api_is_public():
    import pear_lens as pl

    assert pl.run_report is run_report
