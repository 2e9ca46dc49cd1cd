"""The confirmatory run (issue 16) on a tiny model: plan before items, used seeds refused, every planned
condition with PEAR's recipe, outputs keyed by device/dtype/batch, resuming without recomputing."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from pear_lens.artifact import Artifact
from pear_lens.errors import PearLensError
from pear_lens.stage_cache import OnMismatch, lookup, read_record, write_record
from studies.confirmatory import run as CF
from studies.confirmatory import plan as PL
from studies.confirmatory.ledger import claim_test_seed, used_seeds
from pear_lens.reweight import at_step_limit, step_limit, train_coefficients
from pear_lens.recipe import TrainConfig

from .conftest import load_script, tiny

RECIPE = TrainConfig(steps=2, batch_size=2, micro_batch=2, n=8)
TASKS = ("kv", "mdqa", "closed-book")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model, its 'published' artifact and an exploratory summary (KV and MDQA up, closed-book down)."""
    tmp = tmp_path_factory.mktemp("confirm")
    model = tiny("llama")
    heads = [(1, 0), (2, 3)]
    tau = train_coefficients(model, heads, RECIPE, progress=False).tau  # PEAR's τ, as its recipe gives them
    Artifact(heads=heads, tau=tau, base_model=model.describe(),
             training=RECIPE.to_dict()).save(tmp / "artifacts" / model.name)
    pd.DataFrame([{"model": model.name, "task": t, "condition": "PEAR", "gold_position": "all",
                   "delta_vs_baseline": d} for t, d in (("kv", 0.02), ("mdqa", 0.01), ("closed-book", -0.01))]
                 ).to_csv(tmp / "summary.csv", index=False)
    return tmp, model


def _plan(setup, **kw):
    tmp, model = setup
    args = dict(test_seed=11, n=4, batch_size=4, device="cpu", exploratory_summary=tmp / "summary.csv",
                exploratory_record=tmp / "none.json", tasks=TASKS)
    return CF.make_plan(model, tmp / "artifacts" / model.name, **{**args, **kw})


def _argv(tmp, out, *extra):
    return ["--models", "tiny-llama", "--tasks", ",".join(TASKS), "--n", "4", "--batch-size", "4",
            "--out", str(out), "--artifacts", str(tmp / "artifacts"), "--registry", str(tmp / "seeds.json"),
            "--exploratory", str(tmp / "summary.csv"), "--exploratory-record", str(tmp / "none.json"), "--quiet",
            "--report", str(tmp / "report"), "--run-json", str(tmp / "report" / "run.json"), "--no-png", *extra]


@pytest.fixture(scope="module")
def run(setup):
    tmp, model = setup
    assert load_script("confirm").main(_argv(tmp, tmp / "out", "--test-seed", "11")) == 0
    return tmp, model, tmp / "out" / model.name


def test_the_plan_is_fixed_and_the_seed_claimed_before_any_item_is_drawn(setup, tmp_path, monkeypatch):
    tmp, model = setup
    plan, registry, mdir = _plan(setup), tmp_path / "seeds.json", tmp_path / model.name
    seen = []
    real = CF.generate_items

    def spy(task, *a, **kw):  # records what was on disk at the moment items were drawn
        seen.append(((mdir / CF.PLAN_JSON).exists(), [u.seed for u in used_seeds(registry)]))
        return real(task, *a, **kw)

    monkeypatch.setattr(CF, "generate_items", spy)
    with pytest.raises(PearLensError, match="plan is fixed before any test item"):
        CF.task_items(model, PL.TaskName.KV, plan, mdir, progress=False)
    assert seen == []
    fixed, sha = PL.fix_plan(mdir / CF.PLAN_JSON, plan, registry, "test")
    CF.task_items(model, PL.TaskName.KV, fixed, mdir, progress=False)
    assert seen == [(True, [11])]
    assert len(sha) == 64 and PL.read_plan(mdir / CF.PLAN_JSON) == (plan, sha)


def test_a_used_test_seed_is_refused_in_one_line_and_nothing_is_written(setup, tmp_path, capsys):
    tmp, _ = setup
    registry = tmp_path / "seeds.json"
    claim_test_seed(registry, 0, "exploratory test items")
    before = registry.read_bytes()
    argv = _argv(tmp, tmp_path / "out", "--test-seed", "0")
    argv[argv.index("--registry") + 1] = str(registry)
    assert load_script("confirm").main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "test seed 0 was already used" in err and "e.g. 1" in err
    assert registry.read_bytes() == before and not (tmp_path / "out").exists()


def test_a_changed_plan_is_refused_naming_the_field(setup, tmp_path):
    registry = tmp_path / "seeds.json"
    PL.fix_plan(tmp_path / "plan.json", _plan(setup), registry, "test")
    before = (tmp_path / "plan.json").read_bytes()
    with pytest.raises(PearLensError, match="fields n differ"):
        PL.fix_plan(tmp_path / "plan.json", _plan(setup, n=5), registry, "test")
    assert (tmp_path / "plan.json").read_bytes() == before and len(used_seeds(registry)) == 1


def test_endpoint_rule():
    roles = {e.task: e.role for e in PL.choose_endpoints({"kv": -0.036, "mdqa": 0.073, "counterfactual": -0.003,
                                                          "closed-book": -0.016})}
    assert roles == {"mdqa": "primary", "kv": "secondary", "counterfactual": "secondary", "closed-book": "safety"}
    with pytest.raises(PearLensError, match="one or two primary"):  # nothing went up: nothing to confirm
        _plan_with({"kv": -0.1, "mdqa": -0.1, "counterfactual": -0.1, "closed-book": 0.0})
    with pytest.raises(PearLensError, match="no PEAR result on counterfactual"):
        PL.choose_endpoints({"kv": 0.1, "mdqa": 0.1, "closed-book": 0.0})


def _plan_with(deltas):
    return PL.ConfirmatoryPlan(model="m", fingerprint="f", test_seed=1, n=1, artifact={}, recipe={}, exploratory={},
                               endpoints=tuple(PL.choose_endpoints(deltas)))


def test_every_planned_condition_is_evaluated_on_identical_items_with_peArs_recipe(run):
    tmp, model, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    planned = PL.planned_conditions(plan)
    assert planned["kv"].count("uniform_s00") == 1
    primary = [t for t in TASKS if t in plan.tasks(PL.PRIMARY)]
    assert primary == ["kv", "mdqa"]
    for task in primary:
        ids = planned[task]
        # two primary endpoints: 40 uniform controls, so Holm over them can bring the rank p below 0.05 (2/41)
        assert sum(i.startswith("uniform_s") for i in ids) == 40 and sum(i.startswith("layer_matched_s") for i in ids) == 6
        assert {"baseline", "pear", "fixed_damping", "pear_unclipped"} <= set(ids)
        assert sum("_unclipped_s" in i for i in ids) == 6
    assert sum(i.startswith("uniform_s") for i in planned["closed-book"]) == 3
    for task, ids in planned.items():
        saved = dict(CF.iter_outputs(mdir, task))
        assert set(saved) == set(ids)
        assert len({tuple(r["item_ids"]) for r in saved.values()}) == 1
        assert all(r["key"]["device"] == "cpu" and r["key"]["dtype"] == "float32" and r["key"]["batch_size"] == 4
                   for r in saved.values())
    recipe = {k: v for k, v in RECIPE.to_dict().items() if k not in ("heads", "top_k")}
    for path in (mdir / "tau").glob("*.json"):
        rec = json.loads(path.read_text())
        lr = plan.arms.unclipped_lr if "unclipped" in path.stem else RECIPE.lr
        assert rec["key"]["recipe"] == {**recipe, "lr": lr}  # PEAR's steps, seed, sequences; only the lr differs
        assert len(rec["tau"]) == 2 and rec["at_step_limit"] == at_step_limit(rec["tau"], TrainConfig(**{**recipe, "lr": lr}))
    fixed = read_record(mdir / "outputs" / "kv" / "fixed_damping.json.gz")
    mean_tau = round(float(np.mean(plan.artifact["tau"])), 4)
    assert [h[2] for h in fixed["key"]["heads"]] == [pytest.approx(mean_tau)] * 2  # the mean learned τ, untrained
    assert PL.deviations(plan, {t: list(dict(CF.iter_outputs(mdir, t))) for t in TASKS}, {"device": "cpu"}) == []


def test_a_second_run_trains_and_generates_nothing(run, monkeypatch):
    tmp, model, mdir = run

    def boom(*a, **kw):
        raise AssertionError("recomputed a saved stage")

    monkeypatch.setattr(CF, "generate_outputs", boom)
    monkeypatch.setattr("pear_lens.reweight.train_coefficients", boom)
    before = {p: p.read_bytes() for p in mdir.rglob("*") if p.is_file() and p.name != CF.RECORD_JSON}
    assert load_script("confirm").main(_argv(tmp, tmp / "out")) == 0  # no --test-seed: the fixed plan runs
    assert {p: p.read_bytes() for p in before} == before


def test_outputs_are_keyed_by_batch_size_device_and_dtype_and_never_replaced(run, monkeypatch):
    """The key holds the batch size and the device and dtype measured off the weights; a saved output made
    under another key is refused in one message naming the field, and the file stays byte for byte."""
    tmp, model, mdir = run
    kv = PL.TaskName.KV
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    items = CF.task_items(model, kv, plan, mdir, progress=False)
    settings = CF.item_settings(model, kv, mdir)
    arm = CF.arms(plan, model.n_layers, model.n_heads)[0]
    cond = CF.build_condition(model, arm, plan, tmp, mdir, {})
    path = mdir / "outputs" / "kv" / "baseline.json.gz"
    before = path.read_bytes()
    assert CF.weights_device_dtype(model) == ("cpu", "float32")
    assert lookup(path, CF.output_key(model, cond, items, kv, plan, settings), OnMismatch.REFUSE) is not None
    with pytest.raises(PearLensError, match=r"another key \(batch_size differ\)"):
        CF.evaluate_arm(model, cond, arm, kv, items, settings, dataclasses.replace(plan, batch_size=8), mdir, {},
                        False)
    for measured, field in ((("cuda", "float32"), "device"), (("cpu", "bfloat16"), "dtype")):
        monkeypatch.setattr(CF, "weights_device_dtype", lambda m, v=measured: v)
        with pytest.raises(PearLensError, match=rf"another key \({field} differ\).*move the file aside"):
            lookup(path, CF.output_key(model, cond, items, kv, plan, settings), OnMismatch.REFUSE)
    assert path.read_bytes() == before


def test_items_are_asked_with_the_settings_they_were_drawn_with(run, monkeypatch):
    """A recalibration after the items exist cannot change a running study's prompts or its keys."""
    _, model, mdir = run
    drawn = read_record(mdir / "items" / "kv.jsonl.gz")["meta"]["settings"]
    monkeypatch.setattr(CF, "settings_for", lambda *a, **kw: CF.TaskSettings(n_context=99))
    assert CF.item_settings(model, PL.TaskName.KV, mdir).to_dict() == drawn


def test_deviations_name_missing_conditions_and_another_device(run):
    _, _, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    done = {t: [i for i in ids if i != "uniform_s39"] for t, ids in PL.planned_conditions(plan).items()}
    out = PL.deviations(plan, done, {"device": "cuda", "n_items": {"kv": 3}})
    assert any(d.startswith("kv: 1 of") and "uniform_s39" in d for d in out)
    assert "device: ran on cuda, planned cpu" in out and "kv: 3 items, planned 4" in out


def test_the_plan_names_the_trainings_the_run_builds(run):
    """pending_work counts trainings from the plan alone; the run decides them from its arms: they must agree."""
    _, model, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    built = [a.id for a in CF.arms(plan, model.n_layers, model.n_heads) if a.train_lr is not None]
    assert sorted(PL.planned_trainings(plan)) == sorted(built) and len(built) == len(set(built))
    assert "pear_unclipped" in built and not set(PL.UNTRAINED) & set(built)


def test_pending_work_counts_what_is_missing_and_prices_it_at_the_runs_own_pace(run, tmp_path):
    from studies.confirmatory import report as R
    from studies.reading import _pending

    _, model, mdir = run
    done = R.pending_work(R.load_run(mdir))
    assert (done["evaluations"], done["trainings"]) == (0, 0) and _pending(done) == ""
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    (copy / "outputs" / "kv" / "uniform_s05.json.gz").unlink()
    (copy / "tau" / "uniform_s05.json").unlink()
    run_ = R.load_run(copy)
    left = R.pending_work(run_)
    seconds = run_.record["seconds"]
    train = np.median([v for k, v in seconds.items() if k.startswith("train/")][-R.RECENT_PACE:])
    kv = np.median([v for k, v in seconds.items() if k.startswith("eval/kv/")][-R.RECENT_PACE:])
    assert (left["evaluations"], left["trainings"]) == (1, 1)
    assert left["minutes_estimate"] == pytest.approx((train + kv) / 60)
    assert _pending(left).startswith(" (1 evaluation and 1 training left, about ") and "make confirm" in _pending(left)
    # priced at the recent pace: slower measurements of another day, even most of them, no longer count
    slow = {f"{kind}old{i}": 6000.0 for kind in ("train/", "eval/kv/") for i in range(R.RECENT_PACE + 1)}
    run_.record["seconds"] = {**slow, **{f"train/c{i}": 60.0 for i in range(R.RECENT_PACE)},
                              **{f"eval/kv/c{i}": 30.0 for i in range(R.RECENT_PACE)}}
    assert R.pending_work(run_)["minutes_estimate"] == pytest.approx(1.5)
    run_.record["seconds"] = {k: v for k, v in seconds.items() if not k.startswith("train/")}
    unpriced = R.pending_work(run_)  # no training measured yet: counted, not priced
    assert unpriced["trainings"] == 1 and unpriced["minutes_estimate"] is None
    assert _pending(unpriced) == " (1 evaluation and 1 training left; `make confirm` resumes)"


def test_outputs_made_with_other_settings_or_batch_size_are_named_among_the_deviations(run, tmp_path):
    """A condition generated with other settings (say a longer answer budget) or another batch size than the
    rest of its task would not be compared on equal terms: the report names it, the key alone is not enough."""
    from studies.confirmatory import report as R

    _, model, mdir = run
    assert R.summarise(R.load_run(mdir))["deviations"] == []
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    path = copy / "outputs" / "kv" / "uniform_s00.json.gz"
    rec = read_record(path)
    settings = {**rec["key"]["settings"], "max_new_tokens": rec["key"]["settings"]["max_new_tokens"] + 1}
    write_record(path, {**rec, "key": {**rec["key"], "settings": settings, "batch_size": 7}})
    out = R.summarise(R.load_run(copy))["deviations"]
    assert "kv: uniform_s00 made on other settings than the task's other conditions, so not compared on equal terms" \
        in out
    assert any(d.startswith("batch_size: ran on ") and "7" in d for d in out)
    path = copy / "outputs" / "mdqa" / "pear.json.gz"
    rec = read_record(path)
    write_record(path, {**rec, "key": {**rec["key"], "items": "another digest"}})
    assert any(d.startswith("mdqa: pear made on other items") for d in R.summarise(R.load_run(copy))["deviations"])


def test_step_limit_of_the_reference_recipe():
    assert step_limit(TrainConfig()) == pytest.approx(0.005 * (0.5 + sum((2500 - s) / 2498 for s in range(2, 60))))
    assert at_step_limit([0.716, 0.7215, 1.034], TrainConfig()) == [True, True, False]
    assert at_step_limit([0.716], TrainConfig(lr=0.05)) == [False]  # the same τ is far from a 10x larger limit


def _rewrite(mdir, task, cid, outputs):
    path = mdir / "outputs" / task / f"{cid}.json.gz"
    rec = read_record(path)
    write_record(path, {**rec, "outputs": outputs})


def test_the_report_is_recomputed_from_the_outputs_and_every_word_follows_the_rule(run, tmp_path):
    from studies.confirmatory import report as R

    tmp, model, mdir = run
    record = json.loads((tmp / "report" / "run.json").read_text())["confirmatory"][model.name]
    plan, sha = PL.read_plan(mdir / CF.PLAN_JSON)
    assert record["plan_sha256"] == sha and record["test_seed"] == 11 and record["deviations"] == []
    assert {r["task"] for r in record["endpoints"]} == set(TASKS)
    readme = (tmp / "report" / "README.md").read_text()
    assert sha in readme and "## Verdicts" in readme
    table = R.endpoint_table(R.load_run(mdir))
    assert list(table["subset"].unique()) == ["all items"] and len(table) == 3
    assert set(table["verdict"]) <= {"no significant change", "knowledge kept"}  # 4 items cannot reach 0.05
    assert (table.loc[table["role"] == "primary", "uniform_done"] == 40).all()
    rank = table.set_index("task").loc["kv"]
    assert rank["uniform_rank_p"] == (1 + rank["uniform_n_at_least_pear"]) / 41

    # change the numbers, not the code: PEAR right and the baseline and every control wrong on all 4 items gives
    # Δ = 1 and the rank 1 of 41; McNemar on 4 items cannot go below 2/2**4 = 0.125, so the word stays "no
    # significant change" (test_verdict_words_switch_at_the_planned_alpha moves the word with the rule)
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    items = R.load_run(copy).items["kv"]
    right, wrong = [it.answers[0] for it in items], ["" for _ in items]
    for cid in R.load_run(copy).outputs["kv"]:
        _rewrite(copy, "kv", cid, wrong)
    _rewrite(copy, "kv", "pear", right)
    t = R.endpoint_table(R.load_run(copy)).set_index("task")
    assert t.loc["kv", "delta"] == 1.0 and t.loc["kv", "p_raw"] == pytest.approx(2 / 2 ** 4)
    assert t.loc["kv", "uniform_rank_p"] == pytest.approx(1 / 41)
    assert t.loc["kv", "p_holm"] >= 0.125 and t.loc["kv", "verdict"] == "no significant change"
    _rewrite(copy, "kv", "pear", wrong)
    _rewrite(copy, "kv", "baseline", right)
    t = R.endpoint_table(R.load_run(copy)).set_index("task")
    assert t.loc["kv", "delta"] == -1.0 and t.loc["kv", "uniform_rank_p"] == 1.0  # every control ties or beats it
    assert t.loc["kv", "verdict"] == "no significant change"


def test_verdict_words_switch_at_the_planned_alpha(run, tmp_path, monkeypatch):
    """One number changed in the fixture (the plan's alpha) moves every word with it."""
    from studies.confirmatory import report as R

    _, model, mdir = run
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    items = R.load_run(copy).items["kv"]
    _rewrite(copy, "kv", "baseline", ["" for _ in items])
    _rewrite(copy, "kv", "pear", [it.answers[0] for it in items])
    base = R.load_run(copy)
    p = R.endpoint_table(base).set_index("task").loc["kv", "p_holm"]
    for alpha, word in ((min(0.99, p * 1.01), "helps"), (p, "no significant change")):
        run_ = dataclasses.replace(base, plan=dataclasses.replace(base.plan, rule={**base.plan.rule, "alpha": alpha}))
        assert R.endpoint_table(run_).set_index("task").loc["kv", "verdict"] == word


def test_beyond_random_heads_is_reachable_with_the_planned_controls_and_said_out_of_reach_without(run, tmp_path):
    """PEAR above all 40 controls on both primary endpoints: Holm gives 2/41 < 0.05, the word is 'yes'. The same
    outputs under a plan with 19 controls (the first study's) cannot go below 2/20: the 'no' says so."""
    from studies.confirmatory import document as W
    from studies.confirmatory import report as R

    _, model, mdir = run
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    for task in ("kv", "mdqa"):
        items = R.load_run(copy).items[task]
        for cid in R.load_run(copy).outputs[task]:
            _rewrite(copy, task, cid, ["" for _ in items])
        _rewrite(copy, task, "pear", [it.answers[0] for it in items])
    loaded = R.load_run(copy)
    t = R.endpoint_table(loaded).set_index("task")
    assert t.loc["kv", "uniform_rank_p_holm"] == pytest.approx(2 / 41) and t.loc["kv", "rank_test_reachable"]
    assert set(t.loc[["kv", "mdqa"], "beyond_random_heads"]) == {"yes"}
    few = dataclasses.replace(loaded, plan=dataclasses.replace(loaded.plan, controls=PL.ControlPlan(uniform_primary=19)))
    t = R.endpoint_table(few)
    assert set(t.loc[t["role"] == "primary", "rank_test_reachable"]) == {False}
    t.loc[t["role"] == "primary", "beyond_random_heads"] = "no"
    cell = W.verdict_rows(t).set_index("task").loc["kv (primary)", "PEAR's rank among uniform controls"]
    assert "beyond random heads: no (out of reach: the plan's controls, its 19, allow adjusted p ≥ 0.1)" in cell


def test_a_control_drawn_with_one_of_pears_heads_is_named(run, tmp_path):
    from studies.confirmatory import report as R

    _, model, mdir = run
    assert R.controls_sharing_pear_heads(R.load_run(mdir)) == []  # the draws exclude PEAR's heads
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    path = copy / "tau" / "layer_matched_s02.json"
    rec = json.loads(path.read_text())
    rec["key"]["heads"][0] = list(R.load_run(copy).plan.artifact["heads"][1])
    path.write_text(json.dumps(rec))
    assert R.controls_sharing_pear_heads(R.load_run(copy)) == ["layer_matched_s02"]


def test_the_committed_report_is_what_the_saved_outputs_give(tmp_path):
    """figures/results/README.md and run.json's confirmatory numbers are recomputed from the committed
    per-item outputs (a stale or hand-edited report fails here)."""
    from pathlib import Path

    from studies.confirmatory import document as W

    root = Path(__file__).resolve().parents[2] / "figures" / "results"
    if not list((root / "confirm").glob(f"*/{CF.PLAN_JSON}")):
        pytest.skip("no confirmatory plan committed yet")
    W.write_report(root / "confirm", tmp_path, run_json=tmp_path / "run.json", png=False,
                   registry=root / "test_seeds.json")
    assert (tmp_path / "README.md").read_text() == (root / "README.md").read_text()
    fresh = json.loads((tmp_path / "run.json").read_text())["confirmatory"]
    committed = json.loads((root / "run.json").read_text())["confirmatory"]
    for model, rec in fresh.items():
        assert rec["endpoints"] == committed[model]["endpoints"] and rec["plan_sha256"] == committed[model]["plan_sha256"]


def test_plan_only_fixes_the_plan_and_draws_no_item(setup, tmp_path):
    tmp, model = setup
    argv = _argv(tmp, tmp_path / "out", "--test-seed", "12", "--plan-only")
    argv[argv.index("--registry") + 1] = str(tmp_path / "seeds.json")
    assert load_script("confirm").main(argv) == 0
    mdir = tmp_path / "out" / model.name
    assert (mdir / CF.PLAN_JSON).exists() and not (mdir / "items").exists() and not (mdir / "outputs").exists()
    assert [u.seed for u in used_seeds(tmp_path / "seeds.json")] == [12]


def test_a_control_that_ties_pear_counts_as_at_least_pear():
    """The rank compares item counts: at n = 300 the float means of two different item sets with equal counts
    can differ by a rounding step, which would hide a tie and make PEAR's rank p 1/20 too small."""
    from studies.confirmatory.report import rank_among

    rng = np.random.default_rng(0)
    base = np.zeros(300, dtype=bool)
    base[rng.choice(300, 128, replace=False)] = True
    pear = np.zeros(300, dtype=bool)
    pear[rng.choice(300, 134, replace=False)] = True
    tied = np.zeros(300, dtype=bool)
    tied[:134] = True
    assert np.mean(pear.astype(float) - base) != tied.mean() - base.mean()  # the case the counts are for
    n_at_least, p = rank_among(pear, base, [tied, np.zeros(300, dtype=bool)])
    assert (n_at_least, p) == (1, pytest.approx(2 / 3))


def test_no_beyond_random_heads_word_until_every_primary_endpoint_has_its_controls(run, tmp_path):
    from studies.confirmatory import document as W
    from studies.confirmatory import report as R

    _, model, mdir = run
    table = R.endpoint_table(R.load_run(mdir))
    primary = table["role"] == "primary"
    assert set(table.loc[primary, "beyond_random_heads"]) <= {"yes", "no"}
    cells = W.verdict_rows(table).set_index("task")["PEAR's rank among uniform controls"]
    assert "Holm" in cells["kv (primary)"] and "; beyond random heads: " in cells["kv (primary)"]
    assert "Holm" not in cells["closed-book (safety)"]  # the rank test is the primary endpoints' only
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    (copy / "outputs" / "mdqa" / "uniform_s39.json.gz").unlink()  # one control missing on one endpoint...
    table = R.endpoint_table(R.load_run(copy))
    assert set(table.loc[table["role"] == "primary", "beyond_random_heads"]) == {"pending"}  # ...no word on any
    cells = W.verdict_rows(table).set_index("task")["PEAR's rank among uniform controls"]
    assert "beyond random heads" not in cells["kv (primary)"] and cells["mdqa (primary)"].endswith("39/40 controls so far")


def test_pear_unclipped_is_compared_with_the_controls_trained_at_its_learning_rate(run, tmp_path):
    from studies.confirmatory import document as W
    from studies.confirmatory import report as R

    _, model, mdir = run
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    loaded = R.load_run(copy)
    items = loaded.items["kv"]
    right, wrong = [it.answers[0] for it in items], ["" for _ in items]
    unclipped = [c for k in (R.UNIFORM, R.LAYER_MATCHED) for c in loaded.controls("kv", k, "_unclipped")]
    assert len(unclipped) == 6 and not set(unclipped) & set(loaded.controls("kv", R.UNIFORM))
    for cid in ("baseline", "pear_unclipped", *unclipped):
        _rewrite(copy, "kv", cid, wrong)
    _rewrite(copy, "kv", unclipped[0], right)  # one unclipped control right everywhere, PEAR unclipped nowhere
    row = R.endpoint_table(R.load_run(copy)).set_index("task").loc["kv"]
    assert row["unclipped_controls_done"] == 6 and row["unclipped_controls_deltas"] == [1.0] + [0.0] * 5
    assert row["unclipped_controls_n_at_least_pear"] == 6  # the five that tie count as reaching it
    _rewrite(copy, "kv", "pear_unclipped", right)
    table = R.endpoint_table(R.load_run(copy))
    assert table.set_index("task").loc["kv", "unclipped_controls_n_at_least_pear"] == 1
    cell = W.arms_rows(table).set_index("task").loc["kv", "unclipped controls' Δ (≥ PEAR unclipped)"]
    assert cell == "+100.0, +0.0, +0.0, +0.0, +0.0, +0.0 (1 of 6)"


def test_pear_is_retrained_on_the_controls_device_and_a_gap_to_the_published_tau_is_named(run, tmp_path):
    """The controls are trained where the run is; PEAR's τ come from the artifact, trained elsewhere. PEAR is
    trained again here: the same τ (the fixture's artifact was trained with its recipe on this CPU) leave no
    deviation; τ that came out otherwise are named among the deviations."""
    from studies.confirmatory import document as W
    from studies.confirmatory import report as R

    tmp, model, mdir = run
    rec = json.loads((mdir / "tau" / f"{CF.PEAR_RETRAINED}.json").read_text())
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    assert rec["key"]["heads"] == plan.artifact["heads"] and rec["key"]["recipe"]["lr"] == plan.recipe["lr"]
    assert rec["tau_trajectory"] and len(rec["loss_curve"]) == RECIPE.steps
    record = json.loads((tmp / "report" / "run.json").read_text())["confirmatory"][model.name]
    assert record["pear_retrained"]["within_tolerance"] and record["pear_retrained"]["gap"] <= CF.RETRACE_TOLERANCE
    assert "within 0.001" in W._retrained_line(R.load_run(mdir))
    assert CF.PEAR_RETRAINED not in {c["condition"] for c in record["conditions"]}  # a check, not a condition
    copy = tmp_path / model.name
    shutil.copytree(mdir, copy)
    path = copy / "tau" / f"{CF.PEAR_RETRAINED}.json"
    path.write_text(json.dumps({**rec, "tau": [t + 0.01 for t in plan.artifact["tau"]]}))
    summary = R.summarise(R.load_run(copy))
    assert summary["pear_retrained"]["gap"] == pytest.approx(0.01) and not summary["pear_retrained"]["within_tolerance"]
    assert any("differ from the published τ by up to 0.01" in d for d in summary["deviations"])
    assert summary["standing_deviations"] == [d for d in summary["deviations"] if "differ from the published" in d]
    path.unlink()
    (copy / "outputs" / "kv" / "uniform_s05.json.gz").unlink()
    pending = R.summarise(R.load_run(copy))  # work left is among the deviations, not among those that stand
    assert any("not yet retrained" in d for d in pending["deviations"])
    assert any(d.startswith("kv: 1 of") for d in pending["deviations"]) and pending["standing_deviations"] == []


def test_the_record_shows_each_conditions_recipe_answer_kinds_and_when_the_study_drew_items(run):
    from studies.confirmatory import report as R

    tmp, model, mdir = run
    rec = json.loads((tmp / "report" / "run.json").read_text())["confirmatory"][model.name]
    trained = [c for c in rec["conditions"] if c["condition"] == "pear" or c["condition"].startswith("uniform")]
    assert trained and all((c["train_steps"], c["train_seed"]) == (RECIPE.steps, RECIPE.seed) for c in trained)
    assert {c["train_steps"] for c in rec["conditions"] if c["condition"] == "baseline"} == {None}
    kinds = {(k["task"], k["condition"]) for k in rec["answer_kinds"]}
    assert ("kv", "pear") in kinds and ("mdqa", "baseline") in kinds and ("closed-book", "pear") in kinds
    closed_kinds = {k["kind"] for k in rec["answer_kinds"] if k["task"] == "closed-book"}
    assert closed_kinds == {"correct", "empty", "looping", "other"}  # no other item to retrieve, no memorised fact
    run_ = R.load_run(mdir)
    closed = R.study_closed_at(tmp / "seeds.json", run_)
    assert closed and R.plan_created(run_) <= closed and rec["study_items_first_drawn"] == closed
    late = R.summarise(run_, study_closed="2000-01-01T00:00:00+00:00")
    assert late["deviations"][0].startswith("this plan was fixed on") and late["standing_deviations"] == late["deviations"]
    assert "after its study had drawn its first test items" in late["deviations"][0]


def test_few_controls_show_their_extremes_and_missing_ones_say_pending():
    """Below ten controls the 10–90 % quantiles are interpolations: the cell shows the extremes; a planned
    kind with none in yet says 'pending', a kind not planned on the task says '–'."""
    from studies.confirmatory import document as W

    row = {"uniform_done": 3, "uniform_median": 0.003, "uniform_q10": -0.005, "uniform_q90": 0.017,
           "uniform_min": -0.007, "uniform_max": 0.02}
    assert W._spread_cell(row, "uniform") == "+0.3 (3 controls: -0.7 to +2.0)"
    assert W._spread_cell({**row, "uniform_done": 10}, "uniform") == "+0.3 [-0.5, +1.7]"
    assert W._spread_cell({"uniform_done": 0}, "uniform") == "–"
    assert W._spread_cell({**row, "uniform_done": 1}, "uniform").startswith("+0.3 (1 control: ")
    old = {k: v for k, v in row.items() if k not in ("uniform_min", "uniform_max")}  # a record from before the extremes
    assert W._spread_cell(old, "uniform") == "+0.3 [-0.5, +1.7]"
    assert W._unclipped_cell({"unclipped_controls_planned": 6}) == "pending (0/6)"
    assert W._unclipped_cell({"unclipped_controls_planned": 0}) == "–"
    cell = W._unclipped_cell({"unclipped_controls_planned": 6, "unclipped_controls_deltas": [0.01, -0.02],
                              "unclipped_controls_n_at_least_pear": 1})
    assert cell == "+1.0, -2.0 (1 of 2); 2/6 so far"
    lm = {"layer_matched_done": 3, "layer_matched_planned": 6, "layer_matched_n_at_least_pear": 1}
    assert W._layer_matched_rank(lm) == "2 of 4, 3/6 so far"
    assert W._layer_matched_rank({**lm, "layer_matched_done": 6}) == "2 of 7"
    assert W._layer_matched_rank({**lm, "layer_matched_done": 0}) == "pending (0/6)"
    assert W._layer_matched_rank({"layer_matched_done": 0, "layer_matched_planned": 0}) == "–"


def test_tau_paths_are_saved_and_say_whether_tau_settled(run):
    from studies.confirmatory import report as R

    _, _, mdir = run
    rec = json.loads((mdir / "tau" / "uniform_s00.json").read_text())
    assert len(rec["tau_trajectory"]) == RECIPE.steps + 1 and len(rec["lr_curve"]) == RECIPE.steps
    assert rec["tau_trajectory"][-1] == pytest.approx(rec["tau"], abs=1e-6)
    run_ = R.load_run(mdir)
    steps = R.SETTLE_STEPS + 2
    moving = [[1 - 0.1 * s] for s in range(steps + 1)]  # at full speed to the end
    settled = [[1 - 0.1 * min(s, 2)] for s in range(steps + 1)]  # still after step 2
    for path, share in ((moving, 1.0), (settled, 0.0)):
        tau = {"x": {**rec, "tau": path[-1], "at_step_limit": [False], "tau_trajectory": path,
                     "lr_curve": [0.1] * steps}}
        row = R.step_limit_table(dataclasses.replace(run_, tau=tau)).set_index("condition").loc["x"]
        assert row["last_steps_move_share"] == pytest.approx(share)


def test_the_report_is_written_while_a_task_has_items_but_no_outputs(run, tmp_path):
    """An interrupted run (items drawn, nothing evaluated on the first task yet) still gets its report."""
    from studies.confirmatory import document as W

    _, model, mdir = run
    copy = tmp_path / "confirm" / model.name
    shutil.copytree(mdir, copy)
    shutil.rmtree(copy / "outputs" / "kv")
    W.write_report(tmp_path / "confirm", tmp_path / "report", run_json=tmp_path / "run.json")
    devs = json.loads((tmp_path / "run.json").read_text())["confirmatory"][model.name]["deviations"]
    assert any(d.startswith("kv: ") and "not evaluated yet" in d for d in devs)


def test_every_plan_of_a_study_is_fixed_before_any_item_is_drawn(setup, tmp_path, monkeypatch):
    """Two models in one study: both plans and their claims are on disk when the first item is drawn."""
    tmp, model = setup
    other = tiny("gpt2")
    Artifact(heads=[(0, 0)], tau=torch.tensor([0.9]), base_model=other.describe(),
             training=RECIPE.to_dict()).save(tmp_path / "artifacts" / other.name)
    shutil.copytree(tmp / "artifacts" / model.name, tmp_path / "artifacts" / model.name)
    rows = pd.read_csv(tmp / "summary.csv")
    pd.concat([rows, rows.assign(model=other.name)]).to_csv(tmp_path / "summary.csv", index=False)
    out = tmp_path / "out"
    seen = []

    def spy(task, *a, **kw):
        seen.append(sorted(p.parent.name for p in out.glob(f"*/{CF.PLAN_JSON}")))
        raise KeyboardInterrupt  # enough: the first draw is what matters

    monkeypatch.setattr(CF, "generate_items", spy)
    argv = _argv(tmp, out, "--test-seed", "13")
    for flag, value in (("--artifacts", tmp_path / "artifacts"), ("--registry", tmp_path / "seeds.json"),
                        ("--exploratory", tmp_path / "summary.csv")):
        argv[argv.index(flag) + 1] = str(value)
    argv[argv.index("--models") + 1] = f"{model.name},{other.name}"
    with pytest.raises(KeyboardInterrupt):
        load_script("confirm").main(argv)
    assert seen == [sorted([model.name, other.name])]
    uses = used_seeds(tmp_path / "seeds.json")
    assert [u.seed for u in uses] == [13, 13] and all(u.closed for u in uses)


def test_a_tau_record_saved_without_its_path_gets_it_by_training_again(run, tmp_path):
    """retrace_arm keeps the saved τ; it adds the path only when training again ends at them."""
    _, model, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    arm = next(a for a in CF.arms(plan, model.n_layers, model.n_heads) if a.id == "pear_unclipped")
    saved = json.loads((mdir / "tau" / "pear_unclipped.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("loss_curve", "tau_trajectory", "lr_curve")}
    path = tmp_path / "pear_unclipped.json"
    path.write_text(json.dumps(old))
    assert CF.retrace_arm(model, arm, plan, path)
    rec = json.loads(path.read_text())
    assert rec.pop("retrace_gap") <= 1e-6 and rec == saved  # the same path, the same τ
    assert not CF.retrace_arm(model, arm, plan, path)  # once
    path.write_text(json.dumps({**old, "tau": [t + 0.1 for t in old["tau"]]}))
    assert CF.retrace_arm(model, arm, plan, path)
    rec = json.loads(path.read_text())
    assert rec["retrace_gap"] == pytest.approx(0.1, abs=1e-6) and "tau_trajectory" not in rec
    assert rec["tau"] == [t + 0.1 for t in old["tau"]]  # the saved τ are kept, whatever the retrain gave


def test_the_estimate_prices_the_plans_work_at_the_pace_timed_now(run, capsys):
    """The study states its work (every training at the plan's steps, every evaluation on the plan's items, the
    fact check where counterfactual is planned); studies.estimate times the pace and prints the minutes."""
    tmp, model, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    est = CF.estimate(model, plan, items_per_task=2)
    work = CF.count_work(plan, model.n_layers, model.n_heads)
    assert list(est.seconds_per_item) == plan.tasks() and est.seconds_per_step > 0
    assert est.minutes["training"] == pytest.approx(work["trainings"] * plan.recipe["steps"] * est.seconds_per_step / 60)
    for task in plan.tasks():
        assert est.minutes[f"eval/{task}"] == pytest.approx(work["evaluations"][task] * plan.n
                                                            * est.seconds_per_item[task] / 60)
    assert est.total_minutes == pytest.approx(sum(est.minutes.values()))
    with_cf = dataclasses.replace(plan, endpoints=(*plan.endpoints, PL.Endpoint("counterfactual", PL.SECONDARY,
                                                                                "efficacy", "mcnemar")))
    for priced, at in ((["kv", "closed-book"], "closed-book"), (["kv", "counterfactual"], "counterfactual")):
        check = CF.estimate_stages(with_cf, model.n_layers, model.n_heads, priced)[-1]
        assert check.name == "closed-book check of every fact" and list(check.items) == [at]
    assert load_script("confirm").main(_argv(tmp, tmp / "out", "--estimate")) == 0  # the fixed plan's estimate
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{model.name}: ") and "s per training step (timed now on cpu: 2 steps); s/item kv " in out[0]
    assert out[0].endswith(f"; {work['trainings']} trainings, evaluations "
                           + ", ".join(f"{t} {c}" for t, c in work["evaluations"].items()))
    assert out[1].startswith("  training: ") and out[-1].startswith("  total: ")


def test_the_reports_fixed_prose_is_the_templates():
    """Every block of studies/templates/confirmatory.md is one the report writes; the legend README and reading
    share is the template's."""
    import inspect

    from studies.confirmatory import document as W
    from studies.templates import blocks, join

    names = blocks("confirmatory")
    source = inspect.getsource(W)
    assert [n for n in names if f'"{n}"' not in source] == []
    assert W.LEGEND.startswith("Δ and CIs in percentage points; CIs: 95 % paired bootstrap") and "$" not in W.LEGEND
    assert W.PROSE("figure", alt="a b", stem="s") == "![a b](figures/s.png) ([interactive](figures/s.html))"
    with pytest.raises(KeyError):
        W.PROSE("figure", alt="a b")  # a placeholder left unfilled is an error, not a '$stem' in the report
    assert join(["# t", "| a |\n|---|\n", "p"]) == "# t\n\n| a |\n|---|\n\np\n"


@pytest.mark.parametrize("model, n_layers, n_heads", [("smollm2-135m-instruct", 30, 9), ("gemma-3-270m", 18, 4)])
def test_the_record_the_jobs_leave_is_the_one_the_sequential_run_wrote(model, n_layers, n_heads):
    """Run as jobs, the study's record.json is built from the τ and output records afterwards (no job writes a
    file another job writes): rebuilt from the committed records it equals the committed record.json, order
    included, so the committed study is what the job runner would have left."""
    from studies.update_readme import ROOT

    mdir = ROOT / "figures" / "results" / "confirm" / model
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    committed = json.loads((mdir / CF.RECORD_JSON).read_text())
    assert len(committed["seconds"]) > 100
    rebuilt = CF.build_record(plan, mdir, n_layers, n_heads, committed["devices"])
    assert list(rebuilt["seconds"]) == list(committed["seconds"])
    assert rebuilt == committed


def test_every_condition_is_one_job_naming_its_tau_and_outputs(run):
    tmp, model, mdir = run
    plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
    jobs = CF.study_jobs(plan, model.n_layers, model.n_heads, tmp / "artifacts" / model.name, model.fingerprint)
    assert [j.name for j in jobs][:-1] == [a.id for a in CF.arms(plan, model.n_layers, model.n_heads)]
    written = {p.relative_to(mdir).as_posix() for p in [*(mdir / "tau").glob("*.json"),
                                                         *(mdir / "outputs").rglob("*.json.gz")]}
    assert written == {o for j in jobs for o in j.outputs}
    receipts = {p.stem for p in (mdir / "jobs").glob("*.json") if p.name != "study.json"}
    assert receipts == {j.name for j in jobs}  # every job ran to its receipt
