"""The context-use study's fact bank: new facts, disjoint from every earlier fact and item set, rebuilt exactly."""
from __future__ import annotations

import json

import pytest
import torch

from pear_lens.evaluation.tasks.facts import generate_counterfactual, load_facts
from studies.context_use import fact_bank


def test_the_bank_loads_as_facts_and_makes_counterfactual_items():
    facts = load_facts(fact_bank.OUT)
    assert len(facts) > 1000 and len({f.fact_id for f in facts}) == len(facts)
    items = generate_counterfactual(facts[:200], 50, n_context=3, seed=0)
    assert len(items) == 50 and all(set(it.answers).isdisjoint(it.parametric_answers) for it in items)


def test_the_bank_shares_no_subject_or_question_with_any_earlier_fact_or_item():
    facts = load_facts(fact_bank.OUT)
    earlier = fact_bank.earlier_texts()
    assert len(fact_bank.earlier_item_files()) >= 4  # the two models' counterfactual and closed-book item sets
    assert "what is the capital of france?" in earlier  # the earlier bank is read
    questions = {f.question.lower() for f in facts}
    assert not questions & set(earlier)
    mentioned = [f.subject for f in facts if fact_bank._mentioned(f.subject, earlier)]
    assert mentioned == []
    # and the check itself finds a subject that is in the earlier bank
    assert fact_bank._mentioned("Berlin", earlier)


def test_every_fact_has_a_probe_question_other_than_its_test_question():
    bank = json.loads(fact_bank.OUT.read_text(encoding="utf-8"))
    for c in bank["categories"]:
        assert c["probe_question"] != c["question"] and "{subject}" in c["probe_question"]


def test_the_committed_bank_is_what_the_builder_writes():
    pytest.importorskip("pycountry")
    assert fact_bank.main(["--check"]) == 0


def _git(*args: str) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=fact_bank.ROOT, capture_output=True, text=True, check=True).stdout


def test_smallest_detectable_effect_follows_the_normal_power_formula():
    from scipy.stats import norm

    from studies.context_use import plan

    z = norm.ppf(1 - 0.05 / 3 / 2) + norm.ppf(0.8)
    assert plan.mde(2.0, 100) == pytest.approx(z * 2.0 / 10)
    assert plan.mde(2.0, 400) == pytest.approx(plan.mde(2.0, 100) / 2)  # four times the items, half the effect
    assert plan.mde(1.0, 100, m_tests=1) < plan.mde(1.0, 100, m_tests=3)


def test_the_size_rule_takes_the_largest_n_within_budget():
    from studies.context_use import plan

    pilot = {"tasks": {t: {"seconds_per_item": {"baseline": 0.05, "PEAR": 0.06}}
                       for t in ("kv", "mdqa", "counterfactual", "closed-book")}}
    big = plan.size("smollm2-135m-instruct", pilot)
    assert big["n"] == max(plan.N_CHOICES) and big["estimated_hours"] <= plan.BUDGET_HOURS
    slow = {"tasks": {t: {"seconds_per_item": {"baseline": 0.5}} for t in pilot["tasks"]}}
    sized = plan.size("smollm2-135m-instruct", slow)
    assert sized["n"] < big["n"]
    if sized["n"] != plan.N_CHOICES[-1]:
        assert sized["estimated_hours"] <= plan.BUDGET_HOURS


def test_an_uncommitted_plan_is_refused():
    from studies.context_use import design, plan

    with pytest.raises(SystemExit, match="not committed"):
        plan.check_committed_before(design.RESULTS / "no_such_plan.json")


def test_the_plan_was_committed_alone_before_any_item_of_the_study():
    """The order git shows: the commit adding plan.json touches only the plan and the seed record, and every
    item file of the study was added in a later commit that descends from it."""
    from studies.context_use import design

    rel = (design.RESULTS / "plan.json").relative_to(fact_bank.ROOT)
    added = _git("log", "--format=%H", "--diff-filter=A", "--", str(rel)).split()
    if not added:
        pytest.skip("the context-use plan is not committed yet")
    commit = added[-1]
    touched = set(_git("show", "--name-only", "--format=", commit).split())
    allowed = {str(rel), str(rel.with_suffix(".md")), "figures/results/test_seeds.json"}
    assert touched <= allowed, f"the plan's commit also holds {sorted(touched - allowed)}"
    for path in sorted(design.RESULTS.glob("*/items/*.jsonl")):
        item_rel = str(path.relative_to(fact_bank.ROOT))
        first = _git("log", "--format=%H", "--diff-filter=A", "--", item_rel).split()
        if not first:
            continue  # drawn, not committed yet
        assert first[-1] != commit
        _git("merge-base", "--is-ancestor", commit, first[-1])  # raises unless the plan came first


def test_the_amendments_were_committed_alone_in_order_before_any_scan_they_change():
    """Amendments 1 and 2 (Qwen2.5's scans by attribution; its checks on every task, the rule per task): each one's
    commit holds its two files only and descends from the plan's and the one before; every Qwen2.5 scan output
    comes after both; the committed files say what the code that runs says."""
    import json

    from studies.context_use import amendment, design

    commits = []
    for path in amendment.AMENDMENTS:
        rel = path.relative_to(fact_bank.ROOT)
        added = _git("log", "--format=%H", "--diff-filter=A", "--", str(rel)).split()
        if not added:
            pytest.skip(f"{rel.name} is not committed yet")
        commit = added[-1]
        assert set(_git("show", "--name-only", "--format=", commit).split()) == {str(rel), str(rel.with_suffix(".md"))}
        commits.append(commit)
    plan_rel = (design.RESULTS / "plan.json").relative_to(fact_bank.ROOT)
    plan_commit = _git("log", "--format=%H", "--diff-filter=A", "--", str(plan_rel)).split()[-1]
    for before, after in zip([plan_commit, *commits], commits):
        _git("merge-base", "--is-ancestor", before, after)  # raises unless in this order
    for path in sorted(p for p in (design.RESULTS / amendment.QWEN / "scans").rglob("*") if p.is_file()):
        first = _git("log", "--format=%H", "--diff-filter=A", "--", str(path.relative_to(fact_bank.ROOT))).split()
        if first:
            assert first[-1] not in commits
            _git("merge-base", "--is-ancestor", commits[-1], first[-1])  # raises unless the amendments came first
    one, two = (json.loads(p.read_text(encoding="utf-8")) for p in amendment.AMENDMENTS)
    assert one["scan_methods"] == amendment.SCAN_METHODS and one["checks"] == amendment.CHECKS_1
    assert one["rho_floor"] == amendment.RHO_FLOOR and one["reading_rule"] == amendment.READING_RULE_1
    assert two["replaces"] == {"checks": amendment.CHECKS, "reading_rule": amendment.READING_RULE,
                               "rho_floor": amendment.RHO_FLOOR, "scan_position": amendment.SCAN_POSITION}
    for row in two["scored_position"]:  # the amended rule leaves out no more than the plan's, and says how many
        assert row["dropped_as_planned"] == row["after_shared_prefix"] + row["dropped"] <= row["items"]
    design_now = amendment.load()
    assert design_now["checks"] == amendment.CHECKS and design_now["numbers"] == [1, 2]
    assert design_now["checks"][amendment.QWEN]["tasks"] == list(amendment.SCANNED_TASKS)  # every task checked


def test_an_amendment_is_written_once_and_only_before_the_scans_it_changes(tmp_path, monkeypatch):
    from studies.context_use import amendment

    monkeypatch.setattr(amendment, "RESULTS", tmp_path)
    monkeypatch.setattr(amendment, "AMENDMENT", tmp_path / "amendment_1.json")
    made = tmp_path / amendment.QWEN / "scans" / "test_kv"
    made.mkdir(parents=True)
    (made / "scores.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit, match="must come first"):
        amendment.main(["--number", "1"])
    (made / "scores.json").unlink()
    with pytest.raises(SystemExit, match="amendment_1.json is missing"):
        amendment.main(["--number", "2"])  # in order
    (tmp_path / "amendment_1.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit, match="written once"):
        amendment.main(["--number", "1"])
    (made / "part.safetensors").write_bytes(b"")  # a part of a scan is a scan begun: too late as well
    with pytest.raises(SystemExit, match="must come first"):
        amendment.main(["--number", "2"])


def test_the_amendment_s_cost_counts_the_exact_scan_s_passes():
    """The exact scan reruns each head's layer and every later one: n_heads · (n_layers + 1) / 2 passes per item."""
    from studies.context_use import amendment

    assert amendment.heads_reruns(1, 1) == 1  # one layer, one head: the one pass
    assert amendment.heads_reruns(24, 14) == 175 and amendment.heads_reruns(30, 9) == 139.5


def _synthetic_study(folder, pear_shift: float, n_controls: int = 19, closed_book_shift: float | None = None):
    """Items and per-item outputs as the run writes them: PEAR shifted by ``pear_shift`` nats on every item
    (closed-book by ``closed_book_shift`` where given)."""
    import numpy as np

    from pear_lens.evaluation.tasks.facts import load_facts
    from pear_lens.evaluation.tasks.items import write_jsonl
    from pear_lens.evaluation.tasks.kv import generate_kv
    from pear_lens.evaluation.tasks.mdqa import generate_mdqa
    from pear_lens.stage_cache import write_record
    from studies.context_use.design import closed_book

    facts = load_facts(fact_bank.OUT)[:30]
    items = {"kv": generate_kv(40, 4, seed=0), "mdqa": generate_mdqa(40, 3, seed=0),
             "counterfactual": generate_counterfactual(facts, 40, n_context=2, seed=0),
             "closed-book": closed_book(facts)}
    rng = np.random.default_rng(0)
    labels = [("baseline", "baseline", 0.0), ("PEAR", "pear", pear_shift), ("PEAR heads damped", "damped", 0.1),
              ("PEAR heads pruned", "pruned", -0.1)]
    labels += [(f"damped uniform s{s:02d}", "damped", 0.0) for s in range(n_controls)]
    for task, its in items.items():
        write_jsonl(its, folder / "items" / f"{task}.jsonl")
        base = rng.normal(-2.0, 1.0, len(its))
        for label, kind, shift in labels:
            noise = rng.normal(0, 0.3, len(its))
            if task == "closed-book" and closed_book_shift is not None:  # a precise closed-book difference
                noise = rng.normal(0, 0.02, len(its))
                shift = closed_book_shift if label == "PEAR" else shift
            value = [{"logp_gold": float(b + shift + e), "contrast": float(b + shift + e), "n_alternatives": 1,
                      "gold_tokens": 1} for b, e in zip(base, noise)]
            write_record(folder / "outputs" / task / f"{label.replace(' ', '-')}.likelihood.json.gz",
                         {"key": {"condition": {"label": label, "kind": kind}}, "value": value, "seconds": 1.0})


def test_the_report_applies_the_verdict_rule_to_the_outputs(tmp_path):
    from studies.context_use import report

    plan = {"ni_margin_nats": 0.10}
    _synthetic_study(tmp_path / "up", 1.0, n_controls=100)
    up = report.model_report(tmp_path / "up", plan)
    for task in ("kv", "mdqa", "counterfactual"):
        e = up["tasks"][task]
        assert e["damped_controls"]["n"] == 100 and e["damped_controls"]["rank_p"] == pytest.approx(1 / 101)
        assert e["rank_p_holm"] == pytest.approx(3 / 101)
        assert e["vs_baseline"]["PEAR"]["delta"] == pytest.approx(1.0, abs=0.3)
        assert e["verdict"] == "improves context use"
    assert up["tasks"]["closed-book"]["verdict"] == "retained"
    # an effect of 1 nat: no bootstrap resample crosses 0, so p is the resampling floor, printed as a bound
    assert up["tasks"]["kv"]["p_at_floor"] is True
    assert f"| ≤ {up['tasks']['kv']['p_holm']:.3g} |" in report.markdown({"models": {"m": up}})
    # 19 controls, as the issue-16 study had: PEAR beats all of them and still cannot pass the rank test
    _synthetic_study(tmp_path / "few", 1.0, n_controls=19)
    few = report.model_report(tmp_path / "few", plan)
    assert {(few["tasks"][t]["verdict"], few["tasks"][t]["verdict_reason"], few["tasks"][t]["verdict_why"])
            for t in ("kv", "mdqa", "counterfactual")} == {
        ("no detectable effect", "rank-underpowered",
         "the paired test passed, but 19 damped controls allow an adjusted rank p of 0.15 at best")}
    # 60 controls: the test can pass, and PEAR beating all of them passes it
    _synthetic_study(tmp_path / "enough", 1.0, n_controls=60)
    enough = report.model_report(tmp_path / "enough", plan)
    assert {enough["tasks"][t]["verdict"] for t in ("kv", "mdqa", "counterfactual")} == {"improves context use"}
    # the same 60 read while the plan's 80 are still running: an interim look, not the planned test
    interim = report.model_report(tmp_path / "enough", plan, planned_damped=80)
    assert {(interim["tasks"][t]["verdict"], interim["tasks"][t]["verdict_reason"], interim["tasks"][t]["verdict_why"])
            for t in ("kv", "mdqa", "counterfactual")} == {
        ("pending", "rank-interim", "the paired test passed; rank test interim: 60 of 80 planned damped controls in "
                                    "(60 uniform, 0 layer-matched), adjusted rank p 0.049 so far")}
    assert report.model_report(tmp_path / "enough", plan, planned_damped=60)["tasks"]["kv"]["verdict"] == \
        "improves context use"
    _synthetic_study(tmp_path / "flat", 0.0)
    flat = report.model_report(tmp_path / "flat", plan)
    assert {flat["tasks"][t]["verdict"] for t in ("kv", "mdqa", "counterfactual")} == {"no detectable effect"}
    assert not any(flat["tasks"][t].get("verdict_reason", "").startswith("rank")
                   for t in ("kv", "mdqa", "counterfactual"))
    _synthetic_study(tmp_path / "down", -1.0)
    down = report.model_report(tmp_path / "down", plan)
    assert {down["tasks"][t]["verdict"] for t in ("kv", "mdqa", "counterfactual")} == {"hurts context use"}
    assert down["tasks"]["closed-book"]["verdict"] == "not shown retained"
    flat_kv = flat["tasks"]["kv"]  # no effect: a p off the floor, printed as it is
    assert flat_kv["p_at_floor"] is False and flat_kv["p_holm"] > 0.01
    assert f"| {flat_kv['p_holm']:.3g} |" in report.markdown({"models": {"m": flat}})


def test_closed_book_is_retained_exactly_within_the_planned_margin(tmp_path):
    """The margin is the plan's 0.10 nats: a drop of 0.05 nats (interval well inside) is retained, one of 0.15 is
    not (the synthetic noise puts each interval about ±0.02 around its shift)."""
    from studies.context_use import report

    for shift, verdict in ((-0.05, "retained"), (-0.15, "not shown retained")):
        _synthetic_study(tmp_path / str(shift), 0.0, n_controls=1, closed_book_shift=shift)
        r = report.model_report(tmp_path / str(shift), {"ni_margin_nats": 0.10})["tasks"]["closed-book"]
        assert r["vs_baseline"]["PEAR"]["delta"] == pytest.approx(shift, abs=0.03)
        assert r["verdict"] == verdict


def test_holm_adjusts_over_the_whole_planned_family_while_tasks_are_missing(tmp_path):
    """A task whose output is not in yet counts as p = 1: an early look is adjusted over three tests, as planned,
    not over the ones that happen to be in."""
    from studies.context_use import report

    assert report.holm_over_family([0.01, float("nan"), float("nan")])[0] == pytest.approx(0.03)
    _synthetic_study(tmp_path, 1.0, n_controls=100)
    full = report.model_report(tmp_path, {"ni_margin_nats": 0.1})
    for path in (tmp_path / "outputs" / "mdqa").glob("PEAR.likelihood.json.gz"):
        path.unlink()  # mdqa's PEAR output not in yet
    early = report.model_report(tmp_path, {"ni_margin_nats": 0.1})
    assert early["tasks"]["mdqa"]["verdict"] == "not evaluated yet" and early["tasks"]["mdqa"]["p_holm"] is None
    raw = early["tasks"]["kv"]["vs_baseline"]["PEAR"]["p"]
    assert early["tasks"]["kv"]["p_holm"] == pytest.approx(min(1.0, 3 * raw))
    assert early["tasks"]["kv"]["p_holm"] >= full["tasks"]["kv"]["p_holm"]


def test_a_control_still_running_is_left_out_of_every_task_s_rank(tmp_path):
    """A control writes its tasks one after another: until all are in, no task ranks PEAR against it, so the
    three tasks of one Holm family are ranked against one set of controls."""
    from studies.context_use import report

    _synthetic_study(tmp_path, 1.0, n_controls=5)
    for task in ("mdqa", "counterfactual", "closed-book"):
        (tmp_path / "outputs" / task / "damped-uniform-s04.likelihood.json.gz").unlink()  # s04 did kv only
    r = report.model_report(tmp_path, {"ni_margin_nats": 0.1})
    assert {t: e["damped_controls"]["n"] for t, e in r["tasks"].items()} == {
        "kv": 4, "mdqa": 4, "counterfactual": 4, "closed-book": 4}


def test_a_model_whose_items_are_in_but_not_its_outputs_is_reported_as_not_evaluated(tmp_path):
    """The launcher writes every task's items before the first job ends: the report (which covers every model)
    must still build, naming the tasks without a baseline as not evaluated, and the README lead says so."""
    from studies.context_use import report
    from studies.reading import context_use_lines

    _synthetic_study(tmp_path, 0.5, n_controls=3)
    outputs = sorted((tmp_path / "outputs").glob("*/*.likelihood.json.gz"))
    for path in outputs:
        if not (path.parent.name == "kv" and path.name.startswith("baseline")):
            path.unlink()  # kv's baseline alone is in, as when a model's first job has just ended
    r = report.model_report(tmp_path, {"ni_margin_nats": 0.1}, {"endpoints": "likelihood only"})
    assert {t: e["verdict"] for t, e in r["tasks"].items() if "verdict" in e} == {
        "kv": "not evaluated yet", "mdqa": "not evaluated yet", "counterfactual": "not evaluated yet"}
    assert r["tasks"]["mdqa"]["baseline_mean"] is None and r["tasks"]["mdqa"]["n_items"] == 40
    assert r["tasks"]["mdqa"]["damped_controls"]["undefined"] == "no baseline output yet"
    assert r["tasks"]["kv"]["trained_controls"]["undefined"] == "not planned for a likelihood-only model"
    text = report.markdown({"models": {"m": r}})
    assert "| mdqa | contrast | 40 | – |" in text
    lead = context_use_lines({"models": {"m": r}})
    assert lead[-1] == "- **m**: no task has both PEAR's and the baseline's outputs yet."


def test_the_report_is_regenerated_byte_for_byte_from_the_outputs(tmp_path):
    from studies.context_use import report

    _synthetic_study(tmp_path, 0.5, n_controls=20)
    first = report.model_report(tmp_path, {"ni_margin_nats": 0.1})
    again = report.model_report(tmp_path, {"ni_margin_nats": 0.1})
    assert json.dumps(first) == json.dumps(again)
    text = report.markdown({"models": {"tiny": first}})
    assert text == report.markdown({"models": {"tiny": again}})
    assert "| kv | contrast | 40 |" in text and "improves context use" not in text  # 20 controls cannot pass


def test_the_headline_reads_the_empty_answer_share_off_the_record():
    import pandas as pd

    from studies.reading import empty_answer_lines

    t = pd.DataFrame([{"model": "m", "task": "counterfactual", "verdict": "helps", "delta": 0.067}])
    rows = [{"condition": "baseline", "d_correct": 0.0, "d_empty": 0.0, "memorised": 11.0, "answered_both": 300,
             "acc_answered_both": 50.0, "base_acc_answered_both": 50.0},
            {"condition": "pear", "d_correct": 6.7, "d_empty": -11.0, "memorised": 12.7, "answered_both": 227,
             "acc_answered_both": 50.7, "base_acc_answered_both": 48.5}]
    fit = {"n_controls": 26, "intercept": 0.42, "slope": -0.56, "r": -0.95, "pear_residual": 0.12,
           "control_residual_sd": 1.5}
    line = "\n".join(empty_answer_lines(t, {"m": {"counterfactual": {"rows": rows, "fit": fit}}}))
    assert "+6.6 pts at PEAR" in line and "48.5 → 50.7" in line and "More than half" in line
    flat = "\n".join(empty_answer_lines(t, {"m": {"counterfactual": {"rows": rows, "fit": {**fit, "slope": -0.1}}}}))
    assert "More than half" not in flat  # the sentence follows the number
    assert empty_answer_lines(t, None) == []


def test_the_scan_summary_and_figure_from_saved_scans(tmp_path):
    import dataclasses

    from pear_lens.results import HeadScores
    from pear_lens.evaluation.task_scan import scan_items
    from pear_lens.mediation import score_heads
    from studies.context_use import report
    from tests.conftest import tiny
    from tests.test_likelihood import _word_items

    model = tiny("llama")
    proxy = score_heads(model, progress=False, copy_check="off")
    scan, _ = scan_items(model, _word_items(12), "plain", name="kv", progress=False)
    scan.save(tmp_path / "scans" / "test_kv")
    pear = [(0, 1), (2, 3)]
    out = report.scan_summary(tmp_path, proxy, pear)
    assert list(out) == ["kv"]
    kv = out["kv"]
    assert kv["n_heads"] == 12 and len(kv["pear_head_ranks"]) == 2 and all(1 <= r <= 12 for r in kv["pear_head_ranks"])
    assert kv["ci_low"] <= kv["rho"] <= kv["ci_high"]
    assert kv["n_items"] + kv["n_dropped"] == 12 and kv["n_items"] == len(HeadScores.load(
        tmp_path / "scans" / "test_kv").extra["items"]["kept"])  # a saved scan names the items it was made on
    text = report.markdown({"models": {"m": {"tasks": {}, "scans": out}}})
    assert f"| kv | exact | {kv['n_items']} ({kv['n_dropped']}; {kv['n_after_shared_prefix']}) |" in text and "as planned" in text
    # a proxy without per-prompt Δπ (the committed artifacts): the narrower interval is named, not hidden
    fixed = dataclasses.replace(proxy, per_prompt=None, clean_per_prompt=None, prompt_setting=None)
    held = report.scan_summary(tmp_path, fixed, pear)
    assert "narrower than the plan's" in report.markdown({"models": {"m": {"tasks": {}, "scans": held}}})
    # the proxy map is the artifact's own: its published scores, with per-prompt values where the run kept them or
    # pear-lens rescore added them (the committed artifacts were written before runs kept them)
    import shutil

    from pear_lens import constants
    from pear_lens.commands.cli import main as cli
    from tests.cli_support import discover

    art = discover(tmp_path / "art")
    used, note = report.proxy_map(art)
    assert used.per_prompt is not None and note == {"artifact": "artifacts/art", "per_prompt": True}
    shutil.rmtree(art / constants.RUN_SCORES_DIR)
    used, note = report.proxy_map(art)
    assert used.per_prompt is None and note == {"artifact": "artifacts/art", "per_prompt": False}
    assert "narrower than the plan's" in report.markdown({"models": {"m": {"tasks": {}, "proxy": note, "scans":
                                                                         report.scan_summary(tmp_path, used, pear)}}})
    assert cli(["rescore", str(art), "--quiet"]) == 0
    used, note = report.proxy_map(art)
    assert used.per_prompt is not None and note["per_prompt"] is True and note["max_abs_difference"] == 0.0
    said = report.markdown({"models": {"m": {"tasks": {}, "scans": report.scan_summary(tmp_path, used, pear),
                                             "proxy": {**note, "max_abs_difference": 3e-7}}}})
    assert "as planned" in said and "artifacts/art's published scores" in said and "3e-07" in said
    fig = report.scan_figure(tmp_path, proxy, pear, "tiny-llama")
    stars = [t for t in fig.data if t.name == "PEAR's heads"]
    assert len(stars) == 1 and len(stars[0].x) == 2


def test_attribution_checks_pair_the_two_methods_and_the_reading_rule_follows_them(tmp_path):
    """Amendments 1 and 2: attribution is read against the exact scan of the same items (paired ρ, top-K overlap),
    from a planned exact test scan or a check's own exact scan; Qwen2.5's layout (its planned test scan made by
    attribution, its exact check not in yet) leaves the task pending instead of failing; the rule is per task:
    validated only when the interval's lower end reaches the floor, an undefined one fails; scans of other items
    are refused."""
    from studies.context_use import report
    from pear_lens.evaluation.task_scan import scan_items
    from tests.conftest import tiny
    from tests.test_likelihood import _word_items

    model = tiny("llama")
    items = _word_items(12)
    for method, where in (("activation", "test_kv"), ("attribution", "check/attribution_kv"),
                          ("activation", "check/activation_closed-book"), ("attribution", "check/attribution_closed-book"),
                          ("attribution", "test_counterfactual"), ("attribution", "check/attribution_counterfactual")):
        metric = "logprob" if "closed-book" in where else "logit_diff"
        scan, _ = scan_items(model, items, "plain", name=where, metric=metric, method=method, progress=False)
        scan.save(tmp_path / "scans" / where)
    checks = report.check_summary(tmp_path, k=3)
    assert list(checks) == ["kv", "closed-book"]  # counterfactual: attribution on both sides, its exact check not in
    assert checks["kv"]["exact"] == "scans/test_kv" and checks["closed-book"]["exact"] == "scans/check/activation_closed-book"
    for v in checks.values():
        assert v["ci_low"] <= v["rho"] <= v["ci_high"] and v["rho"] > 0.5  # the estimate follows the exact scan here
        assert v["top_k"] == 3 and v["top_k_overlap"] in (0, 1 / 3, 2 / 3, 1)
    assert checks["closed-book"]["n_items"] == 12
    tasks = ["kv", "closed-book", "counterfactual"]
    lows = {t: checks[t]["ci_low"] for t in ("kv", "closed-book")}
    floor = max(lows.values())  # the higher lower end passes, the other does not: the rule is per task
    first = min(lows, key=lows.get)
    assert report.attribution_standing(checks, tasks, floor) == {
        **{t: "validated" if t != first else "not validated" for t in lows}, "counterfactual": "pending"}
    nan = {"kv": {**checks["kv"], "ci_low": float("nan")}}
    assert report.attribution_standing(nan, ["kv"], 0.0) == {"kv": "not validated"}  # an undefined interval fails
    standing = {"kv": "not validated", "closed-book": "validated", "counterfactual": "pending"}
    scans = {t: {"method": "attribution", "n_items": 12, "n_dropped": 0, "interval": "0.10 [0.00, 0.20]",
                 "resampled": "heads, Δπ prompts, detector prompts", "pear_head_ranks": [1, 2], "n_heads": 12}
             for t in standing}
    r = {"tasks": {}, "attribution_checks": checks, "attribution_standing": standing, "rho_floor": 0.7, "scans": scans}
    text = report.markdown({"models": {"m": r}})
    assert "| kv | attribution patching, not validated on this model |" in text and "nothing is read" in text
    assert "| closed-book | attribution (checked) |" in text and "| counterfactual | attribution (check pending) |" in text
    assert "| closed-book | 12 | scans/check/activation_closed-book |" in text and "at least 0.7" in text
    # a check made on other items than the exact scan it is read against is refused, not correlated
    fewer, _ = scan_items(model, items[:8], "plain", name="x", method="attribution", progress=False)
    other = tmp_path / "other"
    (other / "scans" / "check").mkdir(parents=True)
    fewer.save(other / "scans" / "check" / "attribution_kv")
    scan, _ = scan_items(model, items, "plain", name="x", progress=False)
    scan.save(other / "scans" / "test_kv")
    with pytest.raises(SystemExit, match="different items"):
        report.check_summary(other, k=3)


def test_the_run_evaluates_the_five_main_conditions_the_plan_names():
    from pear_lens.evaluation import conditions as cond_mod
    from studies.context_use import plan, run
    from tests.conftest import tiny

    model = tiny("llama")
    pear = cond_mod.folded(model, {(0, 1): 0.5, (1, 0): 0.7}, "PEAR")
    conds = run.main_conditions(model, pear)
    assert tuple(c.label for c in conds) == run.MAIN_LABELS
    assert set(run.MAIN_LABELS) - {"baseline", "PEAR"} <= {c["label"] for c in plan.CONDITIONS}
    K = cond_mod.ConditionKind
    assert [c.kind for c in conds] == [K.BASELINE, pear.kind, K.DAMPED, K.PRUNED, K.CAD]
    assert conds[2].coefficients == pytest.approx({(0, 1): 0.6, (1, 0): 0.6})  # PEAR's heads at its mean τ
    assert conds[3].coefficients == {(0, 1): 0.0, (1, 0): 0.0}
    assert conds[4].cad_alpha == plan.CAD_ALPHA


def test_the_committed_freshness_record_is_what_the_script_computes():
    from studies.confirmatory import freshness

    assert freshness.main(["--check"]) == 0
    rec = json.loads(freshness.OUT.read_text(encoding="utf-8"))
    for m in rec["models"].values():  # drawn tasks are new; the fact tasks re-ask facts of one bank
        assert m["tasks"]["kv"]["same_item_as_seed_0"] == 0 and m["tasks"]["mdqa"]["same_item_as_seed_0"] == 0
        assert 0 < m["tasks"]["closed-book"]["facts_asked_at_seed_0"] <= m["tasks"]["closed-book"]["n_facts"]


def test_the_known_facts_are_read_off_counterfactual_items():
    from pear_lens.evaluation.tasks.facts import generate_counterfactual
    from studies.confirmatory.freshness import known_from_items

    facts = load_facts()
    known = facts[::3]
    items = generate_counterfactual(known, 400, n_context=5, seed=3)
    assert known_from_items(items, facts) == known  # every known fact shows up in 400 items of 5 statements


def test_the_headline_names_which_items_were_new():
    from studies.reading import freshness_phrase

    fresh = {"models": {"m": {"tasks": {
        "kv": {"n_items": 3, "same_item_as_seed_0": 0},
        "closed-book": {"n_items": 3, "same_item_as_seed_0": 2, "n_facts": 3, "facts_asked_at_seed_0": 2}}}}}
    text = freshness_phrase(fresh)
    assert text.startswith("new kv items") and "closed-book: 2 of 3 on m" in text
    assert "not checked" in freshness_phrase(None)


def test_the_committed_report_is_what_the_outputs_give(tmp_path):
    """The committed report against the committed outputs (HEAD's files, not the working tree's: a study running
    here writes outputs that are not committed yet)."""
    import io
    import subprocess
    import tarfile

    from studies.context_use import report

    archive = subprocess.run(["git", "archive", "HEAD", "figures/results/context_use", "artifacts"],
                             cwd=fact_bank.ROOT, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    assert report.main(["--check", "--no-figures", "--root", str(tmp_path)]) == 0
    with pytest.raises(SystemExit, match="--root is for --check"):
        report.main(["--no-figures", "--root", str(tmp_path)])


def test_greedy_arms_are_scored_by_answer_kind_and_paired(tmp_path):
    from pear_lens.evaluation.tasks.items import write_jsonl
    from pear_lens.evaluation.tasks.kv import generate_kv
    from pear_lens.stage_cache import write_record
    from studies.context_use import report

    items = generate_kv(20, 4, seed=0)
    write_jsonl(items, tmp_path / "items" / "kv.jsonl")
    from pear_lens.evaluation.tasks.candidates import in_context_alternatives

    other = [in_context_alternatives(it)[0] for it in items]
    arms = {"baseline": ["" if i < 10 else it.answers[0] for i, it in enumerate(items)],
            "PEAR": [it.answers[0] if i < 15 else other[i] for i, it in enumerate(items)]}
    for label, outs in arms.items():
        write_record(tmp_path / "outputs" / "kv" / "greedy" / f"{label}.json",
                     {"key": {"condition": {"label": label}}, "value": outs})
    g = report.greedy_report(tmp_path, "kv")["greedy"]
    assert g["baseline"]["accuracy"] == 0.5 and g["baseline"]["kinds"]["empty"] == 0.5
    assert g["PEAR"]["accuracy"] == 0.75 and g["PEAR"]["kinds"]["other_item"] == 0.25
    assert g["PEAR"]["vs_baseline"]["delta"] == pytest.approx(0.25)
    assert "greedy_no_empty" not in report.greedy_report(tmp_path, "kv")


def test_ranks_among_no_or_broken_controls_are_named_undefined():
    import numpy as np

    from studies.context_use.report import _rank

    assert _rank(0.3, np.array([]), "damped controls")["undefined"] == "no damped controls in the outputs yet"
    assert _rank(float("nan"), np.array([0.1, 0.2]), "x")["rank_p"] is None
    assert _rank(0.3, np.array([0.1, 0.2, 0.4]), "x")["rank_p"] == pytest.approx(2 / 4)
    assert _rank(0.2, np.array([0.1, 0.2, 0.4]), "x")["rank_p"] == pytest.approx(3 / 4)  # a tie counts against PEAR


def test_the_readme_lead_follows_the_context_use_report():
    from studies.reading import context_use_lines

    d = lambda x, lo, hi: {"delta": x, "ci_low": lo, "ci_high": hi}  # noqa: E731
    none = {"n": 0, "rank_p": None, "undefined": "no controls"}
    tasks = {"kv": {"vs_baseline": {"PEAR": d(0.1, 0.05, 0.15)}, "verdict": "improves context use",
                    "damped_controls": {"n": 80, "rank_p": 0.01}, "vs_pear": {"CAD α=0.5": d(-0.2, -0.3, -0.1)}},
             "mdqa": {"vs_baseline": {"PEAR": d(0.0, -0.1, 0.1)}, "verdict": "no detectable effect", "mde_80": 0.16,
                      "damped_controls": none, "vs_pear": {}},
             "closed-book": {"vs_baseline": {"PEAR": d(-0.01, -0.05, 0.03)}, "verdict": "retained",
                             "damped_controls": none, "vs_pear": {}}}
    text = "\n".join(context_use_lines({"models": {"m": {"tasks": tasks, "progress": {"done": 3, "planned": 9}}}}))
    assert "provisional: 3 of 9" in text and "KV +0.100 nats [+0.050, +0.150] (improves context use)" in text
    assert "smallest detectable 0.16" in text and "KV rank p 0.01 among 80" in text
    assert "context-aware decoding: PEAR below it on KV" in text
    assert "trained like PEAR" not in text  # no trained controls in the record: no sentence about them
    tasks["kv"]["trained_controls"] = {"n": 19, "rank_p": 0.1}
    text = "\n".join(context_use_lines({"models": {"m": {"tasks": tasks}}}))
    assert "Against random heads trained like PEAR (descriptive, not adjusted): KV rank p 0.1 among 19." in text
    assert "no results yet" in context_use_lines(None)[0]
    tasks["kv"]["damped_controls"] = {"n": 64, "rank_p": 0.01}
    tasks["mdqa"]["damped_controls"] = {"n": 64, "rank_p": 0.5}
    tasks["kv"].update(verdict="pending", verdict_reason="rank-interim")
    text = "\n".join(context_use_lines({"models": {"m": {"tasks": tasks, "planned_damped": 80}}}))
    assert "(pending: rank test interim)" in text and "interim: the plan's 80 controls are not all in" in text
    # an interval excluding 0 whose Holm-adjusted p is not below 0.05: the README says why it is no effect
    tasks["mdqa"].update(vs_baseline={"PEAR": d(-0.1, -0.19, -0.01)}, p_holm=0.074,
                         verdict_reason="unadjusted-interval")
    text = "\n".join(context_use_lines({"models": {"m": {"tasks": tasks}}}))
    assert "MDQA -0.100 nats [-0.190, -0.010] (no detectable effect: Holm p 0.074)" in text
    # every verdict final while descriptive outputs are still missing: the status says so
    tasks["kv"].update(verdict="improves context use", verdict_reason="", damped_controls={"n": 80, "rank_p": 0.01})
    tasks["mdqa"]["damped_controls"] = {"n": 80, "rank_p": 0.5}
    text = "\n".join(context_use_lines({"models": {"m": {"tasks": tasks, "planned_damped": 80,
                                                          "progress": {"done": 8, "planned": 9}}}}))
    assert "*verdicts final; 8 of 9 planned outputs in, the missing ones descriptive*" in text


def test_each_main_condition_job_names_exactly_the_records_the_run_wrote():
    """The jobs (pear_lens.jobs) are known done by their outputs: a job that named fewer records than its
    condition writes would be done too early, one that named more would never be done."""
    from types import SimpleNamespace

    from studies.context_use import run
    from studies.context_use.design import RESULTS

    folder = RESULTS / "smollm2-135m-instruct"
    items = {t: [] for t in run.TASKS}
    ctx = SimpleNamespace(model=SimpleNamespace(name="smollm2-135m-instruct"), batch_size=16, items=items,
                          mplan={"endpoints": "all"}, key={"fingerprint": "f", "plan_commit": "c"})
    named = set()
    for i, label in enumerate(run.MAIN_LABELS):
        cond = SimpleNamespace(label=label, cad_alpha=0.5 if label.startswith("CAD") else None)
        job = run._cond_job(ctx, i, cond)
        assert job.fn == "studies.context_use.run:condition_job" and job.kwargs["label"] == label
        named |= set(job.outputs)
    written = {p.relative_to(folder).as_posix() for p in (folder / "outputs").rglob("*.json*")
               if any(p.name.startswith(f"{n}.") for n in ("baseline", "PEAR", "PEAR-heads-damped",
                                                             "PEAR-heads-pruned", "CAD-0.5"))}
    assert written and written == named


def test_a_dev_scan_job_is_keyed_by_the_dev_items_it_scans(monkeypatch):
    """A dev scan chooses the heads the task-scan conditions prune, from the pilot's dev items, not the test items
    the condition jobs' key names: its key holds those dev items' digest (a changed dev set is a new job), and the
    dev items' known facts are read from the pilot's committed record, refused rather than probed again."""
    from types import SimpleNamespace

    from studies.context_use import pilot, run

    asked = []

    def known(model, folder, batch_size, on_mismatch="recompute"):
        asked.append(on_mismatch)
        from pear_lens.evaluation.tasks.facts import load_facts

        return load_facts(fact_bank.OUT)[:40], 0.0

    monkeypatch.setattr(pilot, "known_dev_facts", known)
    monkeypatch.setattr(pilot, "task_items", lambda task, model, n, facts: (
        [SimpleNamespace(item_id=f"{task.value}-{i}", to_dict=lambda i=i: {"i": i}) for i in range(n)], None))
    monkeypatch.setattr(run, "items_digest", lambda items: "|".join(it.item_id for it in items)[:40])
    ctx = SimpleNamespace(model=SimpleNamespace(name="smollm2-135m-instruct"), batch_size=16,
                          items={t: [] for t in run.TASKS}, key={"fingerprint": "f", "plan_commit": "c"})
    wave = run.scan_wave(ctx)
    jobs = {j.name: j for j in wave}
    planned = ["scan-dev_kv", "scan-test_kv", "scan-dev_mdqa", "scan-test_mdqa", "scan-dev_counterfactual",
               "scan-test_counterfactual", "scan-test_closed-book"]
    checks = [f"scan-check-attribution_{t}" for t in ("kv", "mdqa", "counterfactual", "closed-book")]
    assert [j.name for j in wave] == checks + planned  # attribution's minutes before the exact scan's hours
    assert set(asked) == {"refuse"}
    for task in ("kv", "mdqa", "counterfactual"):
        dev, test = jobs[f"scan-dev_{task}"].key, jobs[f"scan-test_{task}"].key
        assert dev["dev_items"].startswith(f"{task}-0|") and "dev_items" not in test
        assert dev["n_scan"] == test["n_scan"] == run.N_SCAN and dev["method"] == test["method"] == "activation"
    check = jobs["scan-check-attribution_kv"]
    assert check.outputs == ("scans/check/attribution_kv",) and check.kwargs["split"] == "check"
    assert check.key["n_scan"] == run.N_SCAN and check.key["method"] == "attribution"  # the planned scan's items
    # Qwen2.5 (amendments 1, 2): its planned scans by attribution; exact and attribution checks on 10 items of each task
    ctx.model.name = "qwen2.5-coder-0.5b-instruct"
    wave = run.scan_wave(ctx)
    assert {j.kwargs["method"] for j in wave if j.kwargs["split"] != "check"} == {"attribution"}
    checked = {(j.kwargs["method"], j.kwargs["task"], j.kwargs["n_items"]) for j in wave if j.kwargs["split"] == "check"}
    assert checked == {(m, t, 10) for m in ("activation", "attribution") for t in ("kv", "mdqa", "counterfactual", "closed-book")}
    assert [j.kwargs["method"] for j in wave][-4:] == ["activation"] * 4  # the exact checks last


def test_the_readme_lead_reads_the_head_scans_only_where_the_amendments_let_it():
    """Exact scans and validated attribution scans are read (ρ with the proxy and PEAR's heads in the task's top
    K); a pending or failed attribution check is named instead of its ρ, and the dev-scan heads of such a task
    are not read either."""
    from studies.reading import context_use_lines

    d = lambda x, lo, hi: {"delta": x, "ci_low": lo, "ci_high": hi}  # noqa: E731
    none = {"n": 0, "rank_p": None, "undefined": "no controls"}
    tasks = {t: {"vs_baseline": {"PEAR": d(0.1, 0.05, 0.15), "PEAR heads pruned": d(0.02, -0.01, 0.05),
                                 f"task-scan heads pruned ({t})": d(0.3, 0.2, 0.4)},
                 "verdict": "no detectable effect", "damped_controls": none, "vs_pear": {}}
             for t in ("kv", "mdqa", "counterfactual")}
    scan = lambda method, ranks: {"method": method, "interval": "0.42 [0.30, 0.55]",  # noqa: E731
                                  "pear_head_ranks": ranks, "n_heads": 270}
    r = {"tasks": tasks, "scans": {"kv": scan("activation", [1, 2, 40]), "mdqa": scan("activation", [5, 9, 100])}}
    lines = context_use_lines({"models": {"m": r}})
    text = "\n".join(lines)
    assert ("    - KV: ρ 0.42 [0.30, 0.55]; 2 of PEAR's 3 heads in its top 3; its own top K pruned +0.300 nats "
            "[+0.200, +0.400] (PEAR's heads pruned +0.020 nats [-0.010, +0.050]).") in lines
    assert "    - MDQA: ρ 0.42 [0.30, 0.55]; 0 of PEAR's 3 heads in its top 3; its own" in text
    assert "    - counterfactual: its own top K pruned +0.300" in text  # its dev scan's heads are in, its test scan not
    assert max(map(len, lines)) <= 400
    # a model scanned by attribution: read once validated, named while pending or not validated
    r["scans"] = {"kv": scan("attribution", [1, 2, 3]), "mdqa": scan("attribution", [4, 5, 6]),
                  "counterfactual": scan("attribution", [7, 8, 9])}
    r["attribution_standing"] = {"kv": "validated", "mdqa": "pending", "counterfactual": "not validated"}
    lines = context_use_lines({"models": {"m": r}})
    assert "    - KV: ρ 0.42 [0.30, 0.55] by attribution (checked); 3 of PEAR's 3 heads in its top 3; its own" in \
        "\n".join(lines)
    assert "    - MDQA: attribution check pending, not read yet." in lines
    assert "    - counterfactual: attribution not validated, not read yet." in lines
    assert "Do the proxy's heads matter" not in "\n".join(context_use_lines({"models": {"m": {"tasks": tasks}}}))


def test_the_readme_lead_opens_with_every_verdict_grouped():
    """Two sentences before the per-model numbers: each model-task pair under its verdict, then closed-book."""
    from studies.reading import context_use_lines

    e = lambda verdict: {"vs_baseline": {}, "verdict": verdict, "vs_pear": {},  # noqa: E731
                         "damped_controls": {"n": 0, "rank_p": None}}
    models = {"a": {"tasks": {"kv": e("improves context use"), "mdqa": e("no detectable effect"),
                              "counterfactual": e("hurts context use"), "closed-book": e("not shown retained")}},
              "b": {"tasks": {"kv": e("pending"), "mdqa": e("no detectable effect"),
                              "counterfactual": e("no detectable effect"), "closed-book": e("retained")}}}
    lines = context_use_lines({"models": models})
    assert lines[2:8] == ["In the plan's words, PEAR's verdicts so far:", "improves context use on a (KV);",
                          "hurts context use on a (counterfactual);",
                          "no detectable effect on a (MDQA), b (MDQA, counterfactual);",
                          "pending (the rank test waits on controls the plan runs) on b (KV).",
                          "Closed-book knowledge (non-inferiority): retained on b; not shown retained on a."]
    assert not any(line.startswith("Against its peers") for line in lines)  # no peer in the record: no sentence
    d = lambda lo, hi: {"delta": (lo + hi) / 2, "ci_low": lo, "ci_high": hi}  # noqa: E731
    models["a"]["tasks"]["kv"]["vs_pear"] = {"CAD α=0.5": d(-0.3, -0.1), "PEAR heads pruned": d(0.1, 0.2)}
    models["a"]["tasks"]["mdqa"]["vs_pear"] = {"CAD α=0.5": d(-0.3, 0.1)}
    models["b"]["tasks"]["kv"]["vs_pear"] = {"CAD α=0.5": d(0.1, 0.2)}
    models["b"]["tasks"]["closed-book"]["vs_pear"] = {"PEAR heads pruned": d(-0.3, -0.1)}  # not a context task
    assert context_use_lines({"models": models})[8] == (
        "Against its peers (model-task pairs where the unadjusted 95 % interval of PEAR − peer excludes 0): pruning its heads: "
        "PEAR higher on 1, lower on 0, neither on 0 of 1; context-aware decoding: PEAR higher on 1, lower on 1, "
        "neither on 1 of 3.")
    for m in models.values():
        for t in m["tasks"].values():
            t.pop("verdict")
    assert "verdicts so far" not in "\n".join(context_use_lines({"models": models}))
