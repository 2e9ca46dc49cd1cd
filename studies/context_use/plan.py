"""The confirmatory plan of the context-use study (issue 33), fixed from the pilot before any test item exists.

Everything the verdict depends on is chosen here, by rules written before the numbers they apply to: the
endpoints and their roles, the conditions and controls, the tests and their correction, the non-inferiority
margin, the number of items (from the pilot's measured cost, by :data:`SIZE_RULE`), the smallest effect each
primary endpoint can detect at 80 % power (from the pilot's spread), and the test seed (claimed in the seed
record). ``python -m studies.context_use.plan`` writes ``figures/results/context_use/plan.json`` and
``plan.md``; the plan is committed on its own, and the study refuses to draw items under a plan that is not
in a commit before them (:func:`studies.context_use.plan.check_committed_before`).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scipy.stats import norm

from pear_lens.io import atomic_write_text, file_sha256
from studies.confirmatory.ledger import claim_test_seed
from studies.context_use.design import DEV_SEED, REGISTRY, RESULTS

ROOT = Path(__file__).resolve().parents[2]
STUDY = "context-use study (issue 33)"
TEST_SEED = 20261207
MODELS_ALL = ("smollm2-135m-instruct", "gemma-3-270m")
"""Every endpoint, greedy ones included."""
MODELS_LIKELIHOOD = ("qwen2.5-coder-0.5b-instruct",)
"""Likelihood endpoints only: greedy KV sits at its 98.7 % ceiling on Qwen2.5, log-probabilities do not."""
PRIMARY_TASKS = ("kv", "mdqa", "counterfactual")
ALPHA, POWER = 0.05, 0.80
NI_MARGIN_NATS = 0.10
"""Closed-book non-inferiority: the lower end of the 95 % interval of PEAR − baseline in mean log p(gold) must
lie above −0.10 nats (a drop of at most about 10 % in the probability of the true answer)."""
N_DAMPED = {"uniform": 40, "layer-matched": 40}
"""Random head sets of PEAR's size per kind, damped at PEAR's mean τ without training (80 in all: the smallest
Holm-adjusted rank p over 3 tasks is 3/81 = 0.037)."""
N_PRUNED = {"uniform": 20}
"""Random head sets of PEAR's size pruned (τ = 0): the pruning peer's control."""
CAD_ALPHA = 0.5
N_SCAN = 100
"""Items per task in each head scan (the dev scan choosing the task's heads; the test scan beside the proxy)."""
N_CHOICES = (300, 250, 200, 150, 100)
BUDGET_HOURS = 6.0
SIZE_RULE = (f"n items per task = the largest of {', '.join(map(str, N_CHOICES))} whose likelihood passes (items × "
             f"conditions × the pilot's baseline seconds per item, CAD counted twice) fit in {BUDGET_HOURS:g} CPU "
             "hours per model on this machine (the smallest choice where none fits); counterfactual n is further "
             "capped by the known test facts × 2")

ENDPOINTS = [
    {"name": "contrast", "tasks": list(PRIMARY_TASKS), "role": "primary",
     "definition": "log p(gold) − log Σ p(competitors), teacher-forced, per item (KV: the other values; MDQA: the "
                   "other documents' answers; counterfactual: the memorised answer)",
     "test": "PEAR − baseline, paired; 95 % cluster-bootstrap interval and two-sided bootstrap p (items of one fact "
             "resampled together); Holm over the 3 tasks within a model",
     "rank_test": "PEAR's mean Δ against the 80 damped random controls' Δ: one-sided empirical p = (1 + #controls "
                  "≥ PEAR) / 81; Holm over the 3 tasks within a model (smallest adjusted p 3/81 = 0.037)"},
    {"name": "logp_gold", "tasks": ["closed-book"], "role": "safety (non-inferiority)",
     "definition": "log p(true answer) closed-book, test question, known test facts",
     "test": f"lower end of the 95 % cluster-bootstrap interval of PEAR − baseline above −{NI_MARGIN_NATS} nats"},
    {"name": "logp_gold", "tasks": list(PRIMARY_TASKS), "role": "secondary",
     "definition": "log p(gold answer), teacher-forced", "test": "as the primary, Holm over the secondary family"},
    {"name": "head scan", "tasks": [*PRIMARY_TASKS, "closed-book"], "role": "descriptive",
     "definition": f"every head's effect when removed (zeroed at every position) on the first answer token's contrast "
                   f"(logit difference of gold and the first competitor with another first token; closed-book: "
                   f"log-probability), first {N_SCAN} test items; pear_lens.evaluation.task_scan",
     "test": "Spearman's ρ over heads with the proxy task's Δπ (artifacts/MODEL/head_scores), heads and both "
             "maps' prompts resampled (2,000 replicates); reported with its interval, no verdict"},
    {"name": "greedy accuracy", "tasks": [*PRIMARY_TASKS, "closed-book"], "role": "secondary (SmolLM2, Gemma-3)",
     "definition": "best-subspan exact match of the greedy answer; broken down by answer kind (correct, empty, "
                   "another item's answer, memorised, other); the no-empty arm forbids end of sequence until the "
                   "answer holds text", "test": "paired cluster bootstrap; reported, not a verdict"},
]
CONDITIONS = [
    {"label": "baseline", "what": "the unmodified model"},
    {"label": "PEAR", "what": "the committed artifact's τ folded in (artifacts/MODEL)"},
    {"label": "PEAR heads damped", "what": "PEAR's heads at PEAR's mean τ, untrained: how much training adds"},
    {"label": "PEAR heads pruned", "what": "τ = 0 on PEAR's heads (Jin et al. 2024, arXiv 2402.18154)"},
    {"label": f"CAD α={CAD_ALPHA:g}", "what": "context-aware decoding (Shi et al. 2023, arXiv 2305.14739), no "
                                                  "weight changed, two passes"},
    {"label": "damped random", "what": f"{sum(N_DAMPED.values())} random head sets of PEAR's size ({N_DAMPED}) at "
                                        "PEAR's mean τ, drawn by pear_lens.controls with seeds 0…39 per kind"},
    {"label": "pruned random", "what": f"{sum(N_PRUNED.values())} random head sets of PEAR's size ({N_PRUNED}), τ = 0"},
    {"label": "task-scan heads pruned", "what": f"per context task, the K heads (K = PEAR's number of heads) whose removal "
                                                 f"raises the task's contrast most in the head scan of the first "
                                                 f"{N_SCAN} dev items (pilot items), pruned and evaluated on the test "
                                                 "items: what a selection made on the task itself can do (an upper "
                                                 "reference for any head selection)"},
    {"label": "trained controls", "what": "the issue-16 study's committed trained controls (tau/*.json), reused, "
                                          "not retrained (SmolLM2, Gemma-3)"},
]
VERDICT = ("On a model and task, PEAR **improves context use** when the Holm-adjusted paired p of the contrast is "
           "below 0.05 with Δ > 0 **and** the Holm-adjusted rank p against the damped random controls is below "
           "0.05; **hurts** when the adjusted paired p is below 0.05 with Δ < 0; otherwise **no detectable "
           "effect** (with the smallest detectable effect beside it). Closed-book is **retained** when "
           "non-inferior, else **not shown retained**. Damping, pruning and CAD are compared with PEAR by the "
           "same paired test, as secondary results.")


HISTORY = ("The endpoints, the non-inferiority margin and the verdict rule were first committed in this file before "
           "the pilot ran (git log -- studies/context_use/plan.py); the number of controls, the budget and the cost "
           "rule were set after the SmolLM2 pilot's costs and spreads on dev items had been read. No test item "
           "existed at either time.")


def mde(sd: float, n_clusters: int, m_tests: int = len(PRIMARY_TASKS)) -> float:
    """Smallest mean paired difference detectable at :data:`POWER` by a two-sided test at ``ALPHA / m_tests``
    (Holm's first step, the conservative end), normal approximation on cluster means."""
    z = norm.ppf(1 - ALPHA / m_tests / 2) + norm.ppf(POWER)
    return float(z * sd / math.sqrt(n_clusters))


def n_conditions(task: str, model: str) -> float:
    """Likelihood passes per item, CAD counted twice (two prompt passes)."""
    n = 1 + 1 + 1 + 1 + sum(N_DAMPED.values()) + sum(N_PRUNED.values()) + 1  # + the task-scan heads
    if task != "closed-book":
        n += 2  # CAD
    if model in MODELS_ALL:
        n += 19  # trained controls
    return n


def size(model: str, pilot: dict[str, Any]) -> dict[str, Any]:
    sec = {t: v["seconds_per_item"]["baseline"] for t, v in pilot["tasks"].items()}
    for n in N_CHOICES:
        hours = sum(n * n_conditions(t, model) * s for t, s in sec.items()) / 3600
        if hours <= BUDGET_HOURS or n == N_CHOICES[-1]:
            return {"n": n, "estimated_hours": round(hours, 1), "seconds_per_item": sec}
    raise AssertionError("unreachable")


def model_plan(model: str, pilot: dict[str, Any]) -> dict[str, Any]:
    sized = size(model, pilot)
    n = sized["n"]
    power = {}
    for task in (*PRIMARY_TASKS, "closed-book"):
        endpoint = "logp_gold" if task == "closed-book" else "contrast"
        s = pilot["tasks"][task]["endpoints"][endpoint]["PEAR"]
        per_cluster = s["n"] / max(s["n_clusters"], 1)
        g = max(1, int(n / per_cluster))
        power[task] = {"endpoint": endpoint, "pilot_sd_cluster": round(s["sd_cluster"], 4),
                       "pilot_mean_diff": round(s["mean_diff"], 4), "pilot_n": s["n"], "n_clusters_planned": g,
                       "mde_80": round(mde(s["sd_cluster"], g, 3 if task != "closed-book" else 1), 4)}
    return {"model": model, "fingerprint": pilot["fingerprint"], "n_items_per_task": n,
            "counterfactual_cap": "2 items per known test fact", "estimated_hours": sized["estimated_hours"],
            "pilot_seconds_per_item": sized["seconds_per_item"], "power": power,
            "endpoints": "all" if model in MODELS_ALL else "likelihood only",
            "pilot": f"figures/results/context_use/pilot/{model}/pilot.json",
            "pilot_sha256": file_sha256(RESULTS / "pilot" / model / "pilot.json")}


def build(models: list[str]) -> dict[str, Any]:
    plans = []
    for m in models:
        path = RESULTS / "pilot" / m / "pilot.json"
        if not path.is_file():
            raise SystemExit(f"no pilot for {m}: run python -m studies.context_use.pilot --model {m} first")
        plans.append(model_plan(m, json.loads(path.read_text(encoding="utf-8"))))
    return {"kind": "pear_lens context-use plan", "study": STUDY, "test_seed": TEST_SEED, "dev_seed": DEV_SEED,
            "facts": "studies/context_use/data/subdivision_facts.json, test half (studies.context_use.design.split_of)",
            "knowledge_rule": "a test fact is known when the baseline's greedy answer to its probe question is correct "
                              "(closed-book settings of the model's calibration)",
            "size_rule": SIZE_RULE, "alpha": ALPHA, "power": POWER, "ni_margin_nats": NI_MARGIN_NATS,
            "cad_alpha": CAD_ALPHA, "endpoints": ENDPOINTS, "conditions": CONDITIONS, "verdict": VERDICT,
            "history": HISTORY,
            "models": plans}


def markdown(plan: dict[str, Any]) -> str:
    lines = [f"# Plan: {plan['study']}", "", f"Test seed {plan['test_seed']} (claimed in figures/results/test_seeds.json); "
             f"dev seed {plan['dev_seed']} (pilot only). Facts: {plan['facts']}. {plan['knowledge_rule'].capitalize()}.",
             "", "## Endpoints", ""]
    for e in plan["endpoints"]:
        lines.append(f"- **{e['name']}** on {', '.join(e['tasks'])} ({e['role']}): {e['definition']}. Test: {e['test']}."
                     + (f" Rank test: {e['rank_test']}." if "rank_test" in e else ""))
    lines += ["", "## Conditions", ""] + [f"- **{c['label']}**: {c['what']}." for c in plan["conditions"]]
    lines += ["", "## Verdict rule", "", plan["verdict"], "", "## History", "", plan["history"], "", "## Size and power (from the pilot, dev items only)", "",
              plan["size_rule"] + ".", "",
              "| model | n per task | est. CPU hours | task | endpoint | pilot SD (cluster) | clusters | smallest effect at 80 % |",
              "|---|---|---|---|---|---|---|---|"]
    for m in plan["models"]:
        for task, p in m["power"].items():
            lines.append(f"| {m['model']} | {m['n_items_per_task']} | {m['estimated_hours']} | {task} | {p['endpoint']} "
                         f"| {p['pilot_sd_cluster']} | {p['n_clusters_planned']} | {p['mde_80']} nats |")
    lines += ["", "Smallest effects: two-sided tests at α = 0.05/3 (Holm's first step) for the primary contrasts, "
                  "α = 0.05 for closed-book; normal approximation on cluster means."]
    return "\n".join(lines) + "\n"


def purpose(models: list[str]) -> str:
    """The seed record's purpose line for the study's test items."""
    return f"test items of the context-use study (issue 33): {', '.join(models)}"


def check_committed_before(plan_path: Path = RESULTS / "plan.json") -> str:
    """The commit that added the plan (or an amendment), refusing one that is not committed or that changed since."""
    rel = plan_path.relative_to(ROOT)
    out = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--", str(rel)], cwd=ROOT,
                         capture_output=True, text=True, check=False).stdout.split()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", str(rel)], cwd=ROOT, capture_output=True,
                           text=True, check=False).stdout.strip()
    if not out or dirty:
        raise SystemExit(f"{rel} is not committed as it is; commit it on its own before anything that follows it "
                         "(a plan before its items, an amendment before the outputs it changes)")
    return out[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[*MODELS_ALL, *MODELS_LIKELIHOOD])
    args = ap.parse_args(argv)
    if (RESULTS / "plan.json").exists():
        raise SystemExit(f"{(RESULTS / 'plan.json').relative_to(ROOT)} exists: a plan is written once")
    plan = build(args.models)
    # one claim for the study: its one plan file covers every model (a second claim by the same record would
    # return the first entry, naming one model only)
    claim_test_seed(REGISTRY, TEST_SEED, purpose(args.models), record="figures/results/context_use/plan.json",
                    study=STUDY)
    plan["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(RESULTS / "plan.json", json.dumps(plan, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(RESULTS / "plan.md", markdown(plan))
    print(markdown(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
