"""The README and docs/ are generated from files (never typed by hand), read in five minutes, link only to what
exists, and the quick start runs."""
from __future__ import annotations

import copy
import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
QUICKSTART = ROOT / "examples" / "quickstart.py"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_generated_blocks_match_the_files_they_are_generated_from():
    proc = subprocess.run([sys.executable, "-m", "studies.update_readme", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert QUICKSTART.read_text().strip() in README.read_text()


def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
    code = QUICKSTART.read_text()
    assert '"smollm2-135m-instruct"' in code  # the README shows the real default model...
    script = tmp_path / "quickstart.py"
    script.write_text(code.replace('"smollm2-135m-instruct"', '"tiny-llama"'))  # ...the unit test a tiny one
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "heatmap.html").exists()
    folded = AutoModelForCausalLM.from_pretrained(tmp_path / "smollm2-pear")
    assert folded.config.pear_lens_folded["heads"]


def test_the_reading_applies_the_rule_to_the_summary_table(tmp_path):
    from studies.reading import exploratory_sentences, exploratory_table

    rows = ["model,task,condition,gold_position,n,accuracy,ci_low,ci_high,delta_vs_baseline,p_vs_baseline,setup",
            "m,kv,baseline,all,300,0.40,0.3,0.5,,,s", "m,kv,PEAR,all,300,0.45,0.4,0.5,0.05,0.01,s",
            "m,kv,PEAR,0,50,0.9,0.8,1.0,0.2,0.001,s",  # a gold-position row: not the overall verdict
            "m,kv,u0,all,300,0.41,0.3,0.5,0.01,0.6,s", "m,kv,u1,all,300,0.46,0.4,0.5,0.06,0.02,s",
            "m,closed-book,baseline,all,300,0.5,0.4,0.6,,,s", "m,closed-book,PEAR,all,300,0.3,0.2,0.4,-0.2,1e-6,s",
            "m,mdqa,baseline,all,300,0.5,0.4,0.6,,,s", "m,mdqa,PEAR,all,300,0.49,0.4,0.6,-0.01,0.8,s"]
    csv = tmp_path / "summary.csv"
    csv.write_text("\n".join(rows) + "\n")
    conditions = [{"label": "baseline", "role": "baseline"}, {"label": "PEAR", "role": "pear", "budget": "reference"},
                  {"label": "u0", "role": "control", "budget": "reference"},
                  {"label": "u1", "role": "control", "budget": "reference"}]
    t = exploratory_table(csv, {"m": {"conditions": conditions}}).set_index("task")
    assert t.loc["kv", "p_holm"] == pytest.approx(0.02) and t.loc["kv", "verdict"] == "helps"  # 2 x 0.01
    assert t.loc["closed-book", "verdict"] == "knowledge lost" and t.loc["mdqa", "verdict"] == "no significant change"
    assert (t.loc["kv", "controls_at_least"], t.loc["kv", "rank_p"]) == (1, pytest.approx(2 / 3))
    # one number changed: p 0.03 survives alone, not after Holm over three tests
    csv.write_text("\n".join(r.replace("0.05,0.01,s", "0.05,0.03,s") for r in rows) + "\n")
    t = exploratory_table(csv, {"m": {"conditions": conditions}})
    assert t.set_index("task").loc["kv", "verdict"] == "no significant change"
    assert "kv below 0.05 before the correction only" in exploratory_sentences(t)[0]
    assert "band" not in exploratory_sentences(t)[0]  # every baseline inside the calibration's 20-80 %...
    ceiling = [r.replace("m,kv,baseline,all,300,0.40", "m,kv,baseline,all,300,0.987") for r in rows]
    csv.write_text("\n".join(r.replace("0.05,0.01,s", "0.05,0.03,s") for r in ceiling) + "\n")
    text = exploratory_sentences(exploratory_table(csv, {"m": {"conditions": conditions}}))[0]
    assert ("kv: the baseline answers 98.7 %, above the calibrated 20–80 % band: even fixing all 4 items it gets "
            "wrong, PEAR could reach no McNemar p below 0.12.") in text  # ...a ceiling is named where it limits
    helps = "\n".join(ceiling) + "\n"
    csv.write_text(helps)  # a verdict the ceiling did not stop needs no excuse
    assert "band" not in exploratory_sentences(exploratory_table(csv, {"m": {"conditions": conditions}}))[0]
    csv.write_text(helps.replace("m,closed-book,baseline,all,300,0.5", "m,closed-book,baseline,all,300,0.1")
                   .replace("m,closed-book,PEAR,all,300,0.3,0.2,0.4,-0.2,1e-6", "m,closed-book,PEAR,all,300,0.1,0,0.2,0,1"))
    text = exploratory_sentences(exploratory_table(csv, {"m": {"conditions": conditions}}))[0]
    assert ("closed-book: the baseline answers 10.0 %, below the calibrated 20–80 % band: even losing all 30 items it "
            "gets right, PEAR could reach no McNemar p below 1.9e-09.") in text  # a floor limits a safety test


def test_the_confirmatory_reading_transcribes_the_record_and_its_words():
    import copy
    import json

    from studies.reading import confirmatory_sentences

    records = json.loads((ROOT / "figures" / "results" / "run.json").read_text())["confirmatory"]
    name = "smollm2-135m-instruct"
    rec = copy.deepcopy(records[name])
    rows = {r["task"]: r for r in rec["endpoints"] if r["subset"] == "all items"}
    for task, row in rows.items():  # a fixture: every primary endpoint with all its controls in
        row.update(delta=0.05, ci_low=0.01, ci_high=0.09, p_holm=0.01,
                   verdict="helps" if task != "closed-book" else "knowledge kept")
        if row["role"] == "primary":
            row.update(uniform_done=19, uniform_n_at_least_pear=0, uniform_rank_p_holm=0.1, beyond_random_heads="no",
                       rank_test_reachable=True)
    text = confirmatory_sentences({name: rec})[0]
    assert "counterfactual helps (Δ +5.0 pts [+1.0, +9.0], adjusted p 0.01)" in text and "closed-book knowledge kept" in text
    assert "the CI reaches" not in text  # a 'kept' whose CI allows no loss needs no warning...
    rows["closed-book"].update(ci_low=-0.06, pear_minus_uniform=-0.03, pear_minus_uniform_low=-0.06,
                               pear_minus_uniform_high=-0.002)
    text = confirmatory_sentences({name: rec})[0]  # ...one that allows a loss says how large, and beside the controls
    assert ("no significant loss, which is not evidence of none: the CI reaches -6.0 pts; PEAR − the uniform "
            "controls' mean of 3 draws -3.0 pts [-6.0, -0.2], the CI over items with the draws held fixed)") in text
    # the fixed-damping arm: whether learning τ beats damping the same heads follows the CIs
    for row in rows.values():
        row.update(pear_minus_fixed_damping=0.01, pear_minus_fixed_damping_low=-0.01, pear_minus_fixed_damping_high=0.03)
    assert "by these unadjusted CIs, learning τ beats damping the same heads by their mean τ on none of the 4 " \
        "tasks evaluated." in confirmatory_sentences({name: rec})[0]
    rows["kv"].update(pear_minus_fixed_damping_low=0.005)
    rows["mdqa"].update(pear_minus_fixed_damping_high=-0.005)
    assert ("learning τ beats damping the same heads by their mean τ on kv of the 4 tasks evaluated, and loses to "
            "it on mdqa.") in confirmatory_sentences({name: rec})[0]
    assert "counterfactual rank 1 of 20 (adjusted rank p 0.1)" in text and "beyond random heads on none of them" in text
    rows["counterfactual"].update(uniform_rank_p_holm=0.02, beyond_random_heads="yes")  # the rule's word moves...
    assert "beyond random heads on counterfactual." in confirmatory_sentences({name: rec})[0]
    for task in ("counterfactual", "kv"):  # a plan whose controls cannot reach alpha: its 'no' says so
        rows[task].update(rank_test_reachable=False, rank_p_floor=0.1, beyond_random_heads="no")
    assert "none of them (a 'yes' was out of reach under this plan: its 19 controls allow no adjusted rank p below 0.1)." \
        in confirmatory_sentences({name: rec})[0]
    rows["kv"].update(uniform_done=18, beyond_random_heads="pending")  # ...and is withheld while a control is missing
    text = confirmatory_sentences({name: rec})[0]
    assert "beyond random heads" not in text and "'no' once every planned control is in, whatever the rest give" in text
    for task in ("counterfactual", "kv"):  # a reachable plan gives no word while a control is missing
        rows[task].update(rank_test_reachable=True)
    assert "no word until every planned control is in" in confirmatory_sentences({name: rec})[0]
    rows["kv"]["verdict"] = "no significant change"
    assert "kv no significant change (Δ +5.0 pts" in confirmatory_sentences({name: rec})[0]
    # the unclipped arm's looping answers, transcribed from the looping rates (and absent without them)
    rec["looping_rate"] = {task: {"baseline": {"share": 0.0, "correct_share": 0.0},
                                  "pear": {"share": 0.01, "correct_share": 0.0},
                                  "pear_unclipped": {"share": 0.25, "correct_share": 0.1}} for task in rows}
    text = confirmatory_sentences({name: rec})[0]
    assert "PEAR unclipped: 0.0 → 1.0 → 25.0 % on counterfactual (10.0 % loop yet score correct)," in text
    rec["looping_rate"]["kv"].update(uniform_unclipped_s00={"share": 0.5, "correct_share": 0.0},
                                     layer_matched_unclipped_s00={"share": 0.1, "correct_share": 0.0})
    assert ("0.0 → 1.0 → 25.0 % on kv (10.0 % loop yet score correct; its 2 controls 30.0 %)"
            in confirmatory_sentences({name: rec})[0])
    del rec["looping_rate"]
    assert "Answers that loop" not in confirmatory_sentences({name: rec})[0]


def test_the_status_line_names_standing_deviations_and_stays_provisional_while_any_work_is_left():
    import copy
    import json

    from studies.reading import confirmatory_markdown, confirmatory_sentences

    records = json.loads((ROOT / "figures" / "results" / "run.json").read_text())["confirmatory"]
    name = "smollm2-135m-instruct"  # complete: every planned evaluation and training done
    rec = copy.deepcopy(records[name])
    rec.update(standing_deviations=[], pending={"evaluations": 0, "trainings": 0, "minutes_estimate": None})
    (line,) = confirmatory_markdown({name: rec})[1]
    assert "provisional" not in line and "Deviation" not in line
    assert "provisional" not in confirmatory_sentences({name: rec})[0]
    rec["pending"]["trainings"] = 1  # every evaluation in, PEAR's retraining still to do: still provisional
    (line,) = confirmatory_markdown({name: rec})[1]
    assert "**provisional**" in line and "(0 evaluations and 1 training left; `make confirm` resumes)" in line
    assert "(provisional: 96 of 96 evaluations, 1 training left)" in confirmatory_sentences({name: rec})[0]
    rec["standing_deviations"] = ["this plan was fixed late"]
    assert confirmatory_markdown({name: rec})[1][0].endswith(". Deviation from the plan: this plan was fixed late.")
    del rec["standing_deviations"]  # a record from before they were kept apart: its deviations but the pending work
    rec["deviations"] = ["this plan was fixed late", "kv: 1 of 8 planned conditions not evaluated yet (u)",
                         "PEAR's τ not yet retrained on this run's device (later)"]
    assert confirmatory_markdown({name: rec})[1][0].endswith(". Deviation from the plan: this plan was fixed late.")


@pytest.mark.parametrize("page, section", [(README, "## Results"), (DOCS / "results.md", "## Confirmatory test")])
def test_the_first_results_table_has_at_most_one_row_per_model_and_task(page, section):
    """The first results table (the README's compact verdict table; the confirmatory table of docs/results.md):
    one row per (model, task) at most."""
    text = page.read_text()
    results = text[text.index(section):]
    lines = results.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    assert header[:2] == ["model", "task"], header
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], cells[1].split(" (")[0]))
    assert rows and len(rows) == len(set(rows)), rows


# --------------------------------------------------------------------------- the README's first screen


def _headline(records, exploratory=None) -> str:
    from studies.reading import headline

    return "\n".join(headline(records, exploratory))


def test_the_headline_says_what_the_record_says_and_changes_with_it():
    from studies.reading import exploratory_table

    run = json.loads((ROOT / "figures" / "results" / "run.json").read_text())
    records = copy.deepcopy(run["confirmatory"])
    smol, gemma = "smollm2-135m-instruct", "gemma-3-270m"
    rows = {(m, r["task"]): r for m, rec in records.items() for r in rec["endpoints"] if r["subset"] == "all items"}
    for (model, task), row in rows.items():  # a fixture: every word and number set here, none taken as found
        row.update(verdict="knowledge kept" if task == "closed-book" else "no significant change", delta=0.01,
                   ci_low=0.001, ci_high=0.02, p_holm=0.5, beyond_random_heads="no" if row["role"] == "primary" else "",
                   rank_test_reachable=True)
    for rec in records.values():
        rec["pending"] = {"evaluations": 0, "trainings": 0, "minutes_estimate": None}
    text = _headline(records)
    n = len(rows)
    assert f"The confirmatory test ({n} tests on {smol}, {gemma};" in text
    assert "**helps**" not in text and f"**no significant change** ({n - 2} of {n})" in text
    assert f"**knowledge kept** (2 of {n}): {smol} on closed-book; {gemma} on closed-book." in text  # CI above 0
    primary = sum(r["role"] == "primary" for r in rows.values())
    assert f"on 0 of the {primary} primary endpoints." in text and "out of reach" not in text
    assert "provisional" not in text
    # one verdict moves: the word and its numbers follow, read off the record
    rows[(smol, "counterfactual")].update(verdict="helps", delta=0.067, ci_low=0.027, ci_high=0.107, p_holm=0.0048)
    text = _headline(records)
    assert (f"- **helps** (1 of {n}): {smol} on counterfactual (Δ +6.7 pts [+2.7, +10.7], adjusted p 0.0048)."
            in text)
    assert f"**no significant change** ({n - 3} of {n})" in text
    rows[(gemma, "closed-book")].update(verdict="knowledge lost", delta=-0.05, ci_low=-0.08, ci_high=-0.02)
    assert f"- **knowledge lost** (1 of {n}): {gemma} on closed-book (Δ -5.0 pts [-8.0, -2.0]" in _headline(records)
    rows[(smol, "closed-book")].update(ci_low=-0.06)  # 'kept' whose CI allows a loss says how large
    assert (f"{smol} on closed-book (CI down to -6.0 pts) — no significant loss, which is not evidence of none"
            in _headline(records))
    # the rank test: a 'yes', then plans whose controls could not give one
    rows[(smol, "counterfactual")]["beyond_random_heads"] = "yes"
    assert f"on 1 of the {primary} primary endpoints: {smol} counterfactual." in _headline(records)
    for row in rows.values():
        if row["role"] == "primary":
            row.update(beyond_random_heads="no", rank_test_reachable=False)
    assert ("under these plans a 'yes' was out of reach: too few controls for an adjusted rank p below 0.05"
            in _headline(records))
    records[gemma]["pending"]["trainings"] = 1  # work left: named, with how to resume
    assert f"- **provisional**, planned work still to do: {gemma} (" in _headline(records)
    # a model only the exploratory run evaluated is named as such, with its words
    exploratory = exploratory_table(ROOT / "figures" / "results" / "summary.csv", run["models"])
    others = [m for m in dict.fromkeys(exploratory["model"]) if m not in records]
    text = _headline(records, exploratory)
    assert others and all(f"Not in the confirmatory test: {m}, evaluated only by the exploratory run" in text
                          for m in others)
    assert _headline({}) == "No confirmatory test has finished yet: `make confirm` runs it."


def test_the_readme_is_a_five_minute_page():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 200, len(lines)
    long = [(i + 1, len(line)) for i, line in enumerate(lines) if len(line) > 400]
    assert not long, long
    headings = [line for line in lines if line.startswith("## ")]
    first = lines.index(headings[0])
    # what it does and the headline result come first, on the first screen
    assert text.index("<!-- BEGIN GENERATED: headline -->") < text.index(headings[0]) and first < 50
    order = ["## Get started", "## Quick start (Python)", "## Results", "## Documentation"]
    assert [h for h in headings if h in order] == order, headings
    assert "make demo" in text[:text.index("## How it works")] and "make test" in text[:text.index("## How it works")]
    assert len(re.findall(r"!\[", text)) == 1  # one figure: the others are in docs/results.md
    assert sum(line.startswith("|---") or line.startswith("| ---") for line in lines) == 1  # one table
    for page in ("results", "methods", "benchmarks", "reliability", "design", "gpu", "architecture"):
        assert f"](docs/{page}.md" in text, page


def test_the_readme_states_the_python_that_pyproject_requires():
    required = re.search(r'^requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert required, "pyproject.toml's requires-python is not '>=X.Y' any more: say the new rule in the README"
    text = README.read_text()
    assert f"Python ≥ {required.group(1)}" in text
    assert not re.search(r"need[s]? only Python 3\.\d+", text)  # no other version stated as the requirement


def test_license_and_citation_agree_with_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    license_id = re.search(r'^license = "([^"]+)"', pyproject, re.M).group(1)
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert (ROOT / "LICENSE").read_text().startswith(f"{license_id} License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] == "pear_lens" and cff["message"]
    assert cff["license"] == license_id and str(cff["version"]) == version
    assert cff["authors"] == [{"name": "the pear_lens authors"}]
    (paper,) = cff["references"]
    assert paper["url"] == "https://arxiv.org/abs/2409.19745" and paper["title"].startswith("PEAR:")


# --------------------------------------------------------------------------- links


FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """``text`` without fenced code and inline code (a link there is code, not a link)."""
    return CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_github():
    assert slug("How stable are PEAR's heads? (error bars and proxy-task seeds)") == \
        "how-stable-are-pears-heads-error-bars-and-proxy-task-seeds"
    assert slug("Quick start (Python)") == "quick-start-python" and slug("The `pear.json` file") == "the-pearjson-file"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    """Every relative link and image of the README and docs/ names a file or folder that exists, and an anchor
    names a heading of the page it points to."""
    broken = []
    for m in LINK.finditer(_prose(page.read_text())):
        target = m.group("target")
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # a web address (https:, mailto:)
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(f"{target}: no heading #{anchor} in {where.relative_to(ROOT)}")
    assert not broken, broken


def test_generated_links_are_made_relative_to_their_page():
    from studies.update_readme import relink

    text = "see [a](figures/x.png), ![b](docs/gpu.md#one), [c](https://x.org/a), [d](#here)"
    assert relink(text, README) == text
    assert relink(text, DOCS / "results.md") == ("see [a](../figures/x.png), ![b](gpu.md#one), "
                                                 "[c](https://x.org/a), [d](#here)")
