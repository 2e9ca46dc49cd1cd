"""The run report in a real headless Chromium, offline: it loads without console errors or requests beyond
``file://``, every figure renders (a screenshot of each figure that is not blank), and every link resolves.

Driven by Playwright (PyPI ``playwright``, the ``dev`` extra) with the system's Chromium (Debian ``chromium``,
or ``BROWSER_PATH``); skipped, saying why, where either is missing.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.test_run_report import build_run


def _chromium() -> str | None:
    for candidate in (os.environ.get("BROWSER_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium, or set "
                                                         "BROWSER_PATH): the report's browser test needs one")

FIGURES_DRAWN = """() => {
    const divs = [...document.querySelectorAll('.plotly-graph-div')];
    return divs.length > 0 && divs.every(d => d._fullLayout && d.querySelector('.main-svg'));
}"""


def blank_share(png: bytes) -> tuple[float, int]:
    """``(share of pixels that are the most common colour, number of distinct colours)`` of a screenshot."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=image.width * image.height)
    return max(n for n, _ in colours) / (image.width * image.height), len(colours)


@pytest.fixture(scope="module")
def report_page(tmp_path_factory) -> Path:
    from pear_lens.run_page import run_report

    run, evals = build_run(tmp_path_factory.mktemp("browser"))
    return run_report(run, evals=[evals], n_boot=1000)


def open_in_chromium(page_path: Path, shots: Path) -> dict:
    """Open ``page_path`` in headless Chromium, offline, every request outside ``file://`` recorded and refused;
    wait for the figures, screenshot each into ``shots``. Returns the console errors and page errors
    (``problems``), the ``requests``, per figure ``(id, box, share of its commonest colour, colours, drawn
    marks)``, the links ``(href, resolved URL)`` and the element ids."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed: pip install "
                                                                 "'pear-lens[dev]' (playwright)")
    seen: dict = {"problems": [], "requests": [], "figures": []}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and seen["problems"].append(f"console: {m.text}"))
            page.on("pageerror", lambda e: seen["problems"].append(f"page error: {e}"))

            def route(r):
                seen["requests"].append(r.request.url)
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    r.abort()
            page.route("**/*", route)
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            try:
                page.wait_for_function(FIGURES_DRAWN, timeout=20_000)
            except sync_api.TimeoutError:
                seen["problems"].append("figures not drawn within 20 s")
            figures = page.locator(".plotly-graph-div")
            for i in range(figures.count()):
                figure = figures.nth(i)
                figure.scroll_into_view_if_needed()
                name = figure.get_attribute("id")
                top, colours = blank_share(figure.screenshot(path=str(shots / f"{name}.png")))
                marks = figure.locator(".main-svg .trace, .main-svg .hm, .main-svg image").count()
                seen["figures"].append((name, figure.bounding_box(), top, colours, marks))
            seen["links"] = page.eval_on_selector_all("a[href]", "as => as.map(a => [a.getAttribute('href'), a.href])")
            seen["anchors"] = set(page.eval_on_selector_all("[id]", "es => es.map(e => e.id)"))
        finally:
            browser.close()
    return seen


def drawn(figure: tuple) -> bool:
    """A figure that rendered: a real area, axes, text and data in many colours (not one flat fill), marks."""
    _, box, top, colours, marks = figure
    return bool(box) and box["width"] > 200 and box["height"] > 200 and top < 0.97 and colours > 20 and marks > 0


def test_the_report_renders_offline_in_chromium(report_page, tmp_path):
    seen = open_in_chromium(report_page, tmp_path)
    assert seen["problems"] == []
    assert [u for u in seen["requests"] if not u.startswith("file://")] == []
    assert len(seen["figures"]) >= 8
    for figure in seen["figures"]:
        assert drawn(figure), figure
    assert len(seen["links"]) > 10
    for href, resolved in seen["links"]:
        if href.startswith("#"):
            assert href[1:] in seen["anchors"], href
        else:
            url = urlparse(resolved)
            assert url.scheme == "file" and Path(unquote(url.path)).exists(), href


def test_the_check_catches_a_page_that_needs_the_network_or_draws_nothing(report_page, tmp_path):
    """The control: the same check on a spoilt copy (plotly.js from a CDN, an empty figure) fails."""
    text = report_page.read_text(encoding="utf-8")
    start = text.index('<script type="text/javascript">/**')
    text = (text[:start] + '<script src="https://cdn.plot.ly/plotly-3.0.1.min.js"></script>'
            + text[text.index("</script>", start) + len("</script>"):])
    spoilt = report_page.parent / "spoilt.html"
    spoilt.write_text(text, encoding="utf-8")
    seen = open_in_chromium(spoilt, tmp_path)
    assert any(u.startswith("https://cdn.plot.ly") for u in seen["requests"])
    assert seen["problems"]  # Plotly is undefined: page errors, and no figure is drawn
    assert not any(drawn(f) for f in seen["figures"])
