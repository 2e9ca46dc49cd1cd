"""Amendment 1 to the context-use plan: Qwen2.5's head scans by attribution patching, checked against the exact scan.

The plan scans every head of every model exactly (zeroed at every position, :mod:`pear_lens.evaluation.task_scan`)
on the first 100 dev and test items of each task: seven scans per model. It sized the study's conditions from the
pilot's cost, but not these scans. The exact scan reruns, per head, every later layer at every position, about
``n_heads · (n_layers + 1) / 2`` forward passes per item, and on Qwen2.5 (24 layers × 14 heads) that is about 175
passes per item, some hundred CPU hours on this machine (:func:`cost`, from the committed outputs' own seconds).

What changes, for Qwen2.5 only: its seven scans use attribution patching, the one-pass linear estimate of the same
zero ablation at every position, on the same items with the same metric. SmolLM2 and Gemma-3 keep the exact scan.
Added checks (:data:`CHECKS`), so the estimate is never read unchecked: on SmolLM2 and Gemma-3, attribution on the
same 100 test items beside every exact test scan; on Qwen2.5 itself, the exact scan of the first
:data:`QWEN_CHECK_ITEMS` test items of its two shortest-prompt tasks beside attribution on the same items. The
rule for reading Qwen2.5's scans (:data:`READING_RULE`) is written here, before any of them exists.

``python -m studies.context_use.amendment`` writes ``amendment_1.json`` and ``.md`` beside the plan; they are
committed on their own before any Qwen2.5 scan output (a test checks the order in git), and the study's run reads
its scan methods from the committed file (:func:`scan_methods`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pear_lens.io import atomic_write_text
from studies.context_use.design import RESULTS
from studies.context_use.plan import N_SCAN, check_committed_before

AMENDMENT = RESULTS / "amendment_1.json"
QWEN = "qwen2.5-coder-0.5b-instruct"
EXACT, ATTRIBUTION = "activation", "attribution"
SCAN_METHODS = {"smollm2-135m-instruct": EXACT, "gemma-3-270m": EXACT, QWEN: ATTRIBUTION}
"""The method of each model's seven planned scans (the plan's for SmolLM2 and Gemma-3)."""
QWEN_CHECK_ITEMS = 10
CONTEXT_TASKS = ("kv", "mdqa", "counterfactual")
SCANNED_TASKS = (*CONTEXT_TASKS, "closed-book")
CHECKS = {
    "smollm2-135m-instruct": {"methods": [ATTRIBUTION], "tasks": list(SCANNED_TASKS), "n_items": N_SCAN,
                              "beside": "the planned exact test scan of the same items"},
    "gemma-3-270m": {"methods": [ATTRIBUTION], "tasks": list(SCANNED_TASKS), "n_items": N_SCAN,
                     "beside": "the planned exact test scan of the same items"},
    QWEN: {"methods": [EXACT, ATTRIBUTION], "tasks": ["counterfactual", "closed-book"], "n_items": QWEN_CHECK_ITEMS,
           "beside": "each other"},
}
"""Per model: the scans added as checks (``scans/check/METHOD_TASK``), on which test tasks and how many of their
first items, and what they are read against. Qwen2.5's exact check takes its two tasks of shortest prompts."""
_METHOD_WORDS = {EXACT: "the exact scan", ATTRIBUTION: "attribution patching"}
RHO_FLOOR = 0.7
READING_RULE = (f"Qwen2.5's attribution scans stand for the planned exact scans when, on each of its checked "
                f"tasks, the lower end of the 95 % interval of Spearman's ρ between its exact and attribution scans "
                f"of the same {QWEN_CHECK_ITEMS} items is at least {RHO_FLOOR}; then they are reported as the "
                "planned scans, labelled as attribution. Otherwise each is reported labelled 'attribution patching, "
                "not validated on this model', and no sentence of the reading rests on it. The SmolLM2 and Gemma-3 "
                "checks are reported beside, as how far attribution follows the exact scan on the other models; "
                "they do not change the rule.")


def heads_reruns(n_layers: int, n_heads: int) -> float:
    """Forward passes per item the exact scan makes: each head reruns its own and every later layer at every
    position, on average (n_layers + 1) / 2 of the n_layers blocks."""
    return n_heads * (n_layers + 1) / 2


def _seconds_per_item(folder: Path, task: str) -> float | None:
    """The median seconds per item of the damped random controls' likelihood scoring (one pass per item with its
    candidate answers: the plain model's cost), as the committed outputs recorded it."""
    from pear_lens.stage_cache import read_record

    per_item = []
    for path in sorted((folder / "outputs" / task).glob("damped-*.likelihood.json.gz")):
        rec = read_record(path)
        if rec.get("seconds") and rec.get("value"):
            per_item.append(rec["seconds"] / len(rec["value"]))
    return statistics.median(per_item) if per_item else None


def cost(root: Path = RESULTS.parents[2]) -> list[dict[str, Any]]:
    """Per model and task: the estimated CPU hours of its planned scans (two for a context task, dev and test;
    one for closed-book) by the exact method and by attribution (about three passes per item: one forward, one
    backward), from the damped controls' recorded seconds per item."""
    from pear_lens.results import HeadScores

    rows = []
    for model in SCAN_METHODS:
        n_layers, n_heads = HeadScores.load_run(root / "artifacts" / model)[0].scores.shape
        reruns = heads_reruns(n_layers, n_heads)
        for task in SCANNED_TASKS:
            sec = _seconds_per_item(root / "figures" / "results" / "context_use" / model, task)
            if sec is None:
                continue
            scans = 2 if task in CONTEXT_TASKS else 1
            rows.append({"model": model, "task": task, "seconds_per_item": round(sec, 3),
                         "passes_per_item_exact": reruns, "scans": scans,
                         "exact_hours": round(sec * reruns * N_SCAN * scans / 3600, 1),
                         "attribution_hours": round(sec * 3 * N_SCAN * scans / 3600, 1)})
    return rows


def build(root: Path = RESULTS.parents[2]) -> dict[str, Any]:
    rows = cost(root)
    totals = {m: {"exact_hours": round(sum(r["exact_hours"] for r in rows if r["model"] == m), 1),
                  "attribution_hours": round(sum(r["attribution_hours"] for r in rows if r["model"] == m), 1)}
              for m in SCAN_METHODS}
    return {"amends": "figures/results/context_use/plan.json", "number": 1,
            "what": "the head scans' method for Qwen2.5, and checks of attribution against the exact scan",
            "scan_methods": SCAN_METHODS, "checks": CHECKS, "rho_floor": RHO_FLOOR, "reading_rule": READING_RULE,
            "why": ("the plan sized its conditions from the pilot, not its head scans; by the committed outputs' "
                    "own seconds, Qwen2.5's seven exact scans take about "
                    f"{totals[QWEN]['exact_hours']:g} CPU hours here (SmolLM2's "
                    f"{totals['smollm2-135m-instruct']['exact_hours']:g}, Gemma-3's "
                    f"{totals['gemma-3-270m']['exact_hours']:g}), attribution about "
                    f"{totals[QWEN]['attribution_hours']:g} (seconds per item as the damped controls' likelihood "
                    "scoring recorded them: wall clock, one thread on a shared two-core machine, candidate answers "
                    "included, so an upper estimate)"),
            "unchanged": ("the items (the first 100 of each split), the metric (first answer token's logit "
                          "difference; closed-book its log-probability), the ablation (zero at every position), "
                          "the proxy map and ρ's bootstrap; every endpoint, control and verdict rule of the plan"),
            "cost": rows, "totals": totals}


def markdown(a: dict[str, Any]) -> str:
    from pear_lens.tables import markdown_table

    lines = ["# Amendment 1 to the context-use plan", "",
             f"Amends {a['amends']} (written at {a['written_at']}), before any Qwen2.5 head scan exists: "
             f"{a['what']}.", "",
             "## What changes", "",
             *[f"- **{m}**: its seven head scans by **{_METHOD_WORDS[v]}**{' (as planned)' if v == EXACT else ''}."
               for m, v in a["scan_methods"].items()], "",
             f"Unchanged: {a['unchanged']}.", "",
             "## Why", "", f"{a['why'][0].upper()}{a['why'][1:]}.", "",
             markdown_table(["model", "task", "s per item (damped controls)", "passes per item (exact)", "scans",
                             "exact CPU h", "attribution CPU h"],
                            [[r["model"], r["task"], f"{r['seconds_per_item']:.3f}", f"{r['passes_per_item_exact']:g}",
                              r["scans"], f"{r['exact_hours']:g}", f"{r['attribution_hours']:g}"] for r in a["cost"]]),
             "", "## Checks added", "",
             *[f"- **{m}**: {' and '.join(_METHOD_WORDS[x] for x in c['methods'])} on the first {c['n_items']} test "
               f"items of {', '.join(c['tasks'])}, beside {c['beside']}; Spearman's ρ over heads with its 95 % "
               "interval (heads and both scans' items resampled)." for m, c in a["checks"].items()],
             "", "## Reading rule", "", a["reading_rule"], ""]
    return "\n".join(lines)


def load(path: Path = AMENDMENT) -> dict[str, Any]:
    """The amendment as committed (refused when it is not committed as it is)."""
    check_committed_before(path)
    return json.loads(path.read_text(encoding="utf-8"))


def scan_methods(path: Path = AMENDMENT) -> dict[str, str]:
    """Each model's scan method, from the committed amendment."""
    return load(path)["scan_methods"]


def checks(path: Path = AMENDMENT) -> dict[str, dict[str, Any]]:
    """Each model's check scans, from the committed amendment."""
    return load(path)["checks"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args(argv)
    if AMENDMENT.exists():
        raise SystemExit(f"{AMENDMENT.relative_to(RESULTS.parents[2])} exists: an amendment is written once")
    made = sorted((RESULTS / QWEN / "scans").glob("*/scores.json"))
    if made:
        raise SystemExit(f"{QWEN} already has head scans ({made[0].parent.name}): this amendment must come first")
    a = build()
    a["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(AMENDMENT, json.dumps(a, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(AMENDMENT.with_suffix(".md"), markdown(a))
    print(markdown(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
