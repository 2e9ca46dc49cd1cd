"""Amendments to the context-use plan: Qwen2.5's head scans by attribution patching, checked against the exact scan.

The plan scans every head of every model exactly (zeroed at every position, :mod:`pear_lens.evaluation.task_scan`)
on the first 100 dev and test items of each task: seven scans per model. It sized the study's conditions from the
pilot's cost, but not these scans. The exact scan reruns, per head, every later layer at every position, about
``n_heads · (n_layers + 1) / 2`` forward passes per item, and on Qwen2.5 (24 layers × 14 heads) that is about 175
passes per item, some hundred CPU hours on this machine (:func:`cost`, from the committed outputs' own seconds).

**Amendment 1**: Qwen2.5's seven scans use attribution patching, the one-pass linear estimate of the same zero
ablation at every position, on the same items with the same metric; SmolLM2 and Gemma-3 keep the exact scan.
Checks (:data:`CHECKS_1`): on SmolLM2 and Gemma-3, attribution on the same 100 test items beside every exact test
scan; on Qwen2.5, the exact scan and attribution of the first :data:`QWEN_CHECK_ITEMS` test items of its two
shortest-prompt tasks; a rule for reading Qwen2.5's scans (:data:`READING_RULE_1`).

**Amendment 2**, after a review and still before any Qwen2.5 scan: amendment 1's rule read all seven scans from
checks of two tasks, the two of shortest prompts, where a linear estimate is least in doubt. Qwen2.5's checks now
cover every task it scans (:data:`CHECKS`) and the rule is per task (:data:`READING_RULE`), covering the dev scans
and the task-scan condition chosen from them; the top-K overlap of the two scans is reported beside ρ; an item whose
every competitor shares its first token (every KV item on Gemma-3's and Qwen2.5's tokenizers, which the plan's rule
would leave out) is scored where the answers part (:data:`SCAN_POSITION`); two errata.

``python -m studies.context_use.amendment --number N`` writes ``amendment_N.json`` and ``.md`` beside the plan;
each is committed on its own before any Qwen2.5 scan output (a test checks the order in git), and the study's run
reads the amended design from the committed files (:func:`load`).
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
AMENDMENTS = (AMENDMENT, RESULTS / "amendment_2.json")
"""In order: each later one replaces what its ``replaces`` names."""
QWEN = "qwen2.5-coder-0.5b-instruct"
EXACT, ATTRIBUTION = "activation", "attribution"
SCAN_METHODS = {"smollm2-135m-instruct": EXACT, "gemma-3-270m": EXACT, QWEN: ATTRIBUTION}
"""The method of each model's seven planned scans (the plan's for SmolLM2 and Gemma-3)."""
QWEN_CHECK_ITEMS = 10
CONTEXT_TASKS = ("kv", "mdqa", "counterfactual")
SCANNED_TASKS = (*CONTEXT_TASKS, "closed-book")
_OTHER_CHECKS = {
    "smollm2-135m-instruct": {"methods": [ATTRIBUTION], "tasks": list(SCANNED_TASKS), "n_items": N_SCAN,
                              "beside": "the planned exact test scan of the same items"},
    "gemma-3-270m": {"methods": [ATTRIBUTION], "tasks": list(SCANNED_TASKS), "n_items": N_SCAN,
                     "beside": "the planned exact test scan of the same items"},
}
CHECKS_1 = {**_OTHER_CHECKS, QWEN: {"methods": [EXACT, ATTRIBUTION], "tasks": ["counterfactual", "closed-book"],
                                    "n_items": QWEN_CHECK_ITEMS, "beside": "each other"}}
"""Amendment 1's checks: per model, the scans added (``scans/check/METHOD_TASK``), on which test tasks and how
many of their first items, and what they are read against. Qwen2.5's exact check took its two tasks of shortest
prompts."""
CHECKS = {**_OTHER_CHECKS, QWEN: {"methods": [EXACT, ATTRIBUTION], "tasks": list(SCANNED_TASKS),
                                  "n_items": QWEN_CHECK_ITEMS, "beside": "each other"}}
"""Amendment 2's checks: Qwen2.5's exact check on every task it scans."""
_METHOD_WORDS = {EXACT: "the exact scan", ATTRIBUTION: "attribution patching"}
SCAN_POSITION = ("Where no competitor's first token differs from the gold answer's, the item is scored where the "
                 "gold answer and its first competitor part: the tokens they share are appended to the prompt "
                 "(teacher-forced) and the next token of each is the gold and the foil; it is dropped only when no "
                 "competitor parts from the gold answer at a token both have. Every other item is scored as "
                 "planned, at the first answer token (pear_lens.evaluation.task_scan.rag_scan_task); each scan "
                 "names the items scored after a shared prefix.")
"""Amendment 2's rule for the scored position, for every model (the plan's rule is kept wherever it applies)."""
RHO_FLOOR = 0.7
READING_RULE_1 = (f"Qwen2.5's attribution scans stand for the planned exact scans when, on each of its checked "
                  f"tasks, the lower end of the 95 % interval of Spearman's ρ between its exact and attribution "
                  f"scans of the same {QWEN_CHECK_ITEMS} items is at least {RHO_FLOOR}; then they are reported as the "
                  "planned scans, labelled as attribution. Otherwise each is reported labelled 'attribution "
                  "patching, not validated on this model', and no sentence of the reading rests on it. The SmolLM2 "
                  "and Gemma-3 checks are reported beside, as how far attribution follows the exact scan on the "
                  "other models; they do not change the rule.")
READING_RULE = (f"Per task: Qwen2.5's attribution scans of a task (dev and test) stand for the planned exact scans "
                f"when the lower end of the 95 % interval of Spearman's ρ between its exact and attribution scans of "
                f"the same first {QWEN_CHECK_ITEMS} test items of that task (heads and items resampled, the items "
                f"drawn once for both) is at least {RHO_FLOOR}; they are then reported as the planned scans, "
                "labelled 'attribution (checked)'. The dev scan is covered by its task's check on test items: both "
                "come from the task's one item generator. Otherwise (the interval below the floor, or undefined) "
                "that task's scans are reported labelled 'attribution patching, not validated on this model', no "
                "sentence of the reading rests on them, and the task-scan condition chosen from that task's dev "
                "scan is reported as chosen by an unvalidated scan. Until a task's check is in, its scans are "
                "labelled 'check pending' and not read. Beside ρ, the share of the exact scan's top K heads "
                "(K = PEAR's) that attribution also ranks in its top K is reported, descriptive. The SmolLM2 and "
                "Gemma-3 checks are reported beside, as how far attribution follows the exact scan on the other "
                "models; they do not change the rule.")


def heads_reruns(n_layers: int, n_heads: int) -> float:
    """Forward passes per item the exact scan makes: each head reruns its own and every later layer at every
    position, on average (n_layers + 1) / 2 of the n_layers blocks."""
    return n_heads * (n_layers + 1) / 2


def _tracked(root: Path, folder: Path) -> set[Path]:
    """The files under ``folder`` that git tracks in the checkout at ``root`` (outputs a running study wrote but
    nobody committed are not a record yet)."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", "--", str(folder.relative_to(root))], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return {root / f for f in out.split("\0") if f}


def _seconds_per_item(folder: Path, task: str, tracked: set[Path]) -> float | None:
    """The median seconds per item of the damped random controls' likelihood scoring (one pass per item with its
    candidate answers: the plain model's cost), as the committed outputs recorded it."""
    from pear_lens.stage_cache import read_record

    per_item = []
    for path in sorted((folder / "outputs" / task).glob("damped-*.likelihood.json.gz")):
        if path not in tracked:
            continue
        rec = read_record(path)
        if rec.get("seconds") and rec.get("value"):
            per_item.append(rec["seconds"] / len(rec["value"]))
    return statistics.median(per_item) if per_item else None


def cost(root: Path = RESULTS.parents[2]) -> list[dict[str, Any]]:
    """Per model and task: the estimated CPU hours of its planned scans (two for a context task, dev and test;
    one for closed-book) by the exact method and by attribution (about three passes per item: one forward, one
    backward), and of an exact check on the first :data:`QWEN_CHECK_ITEMS` test items, from the damped controls'
    seconds per item in the committed outputs (wall clock, one thread on a shared machine, candidate answers
    included: an upper estimate)."""
    from pear_lens.results import HeadScores

    results = root / RESULTS.relative_to(RESULTS.parents[2])
    tracked = _tracked(root, results)
    rows = []
    for model in SCAN_METHODS:
        n_layers, n_heads = HeadScores.load_run(root / "artifacts" / model)[0].scores.shape
        reruns = heads_reruns(n_layers, n_heads)
        for task in SCANNED_TASKS:
            sec = _seconds_per_item(results / model, task, tracked)
            if sec is None:
                continue
            scans = 2 if task in CONTEXT_TASKS else 1
            rows.append({"model": model, "task": task, "seconds_per_item": round(sec, 3),
                         "passes_per_item_exact": reruns, "scans": scans,
                         "exact_hours": round(sec * reruns * N_SCAN * scans / 3600, 1),
                         "attribution_hours": round(sec * 3 * N_SCAN * scans / 3600, 1),
                         "exact_check_hours": round(sec * reruns * QWEN_CHECK_ITEMS / 3600, 1)})
    return rows


def _totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = ("exact_hours", "attribution_hours", "exact_check_hours")
    return {m: {k: round(sum(r[k] for r in rows if r["model"] == m), 1) for k in keys} for m in SCAN_METHODS}


_UNCHANGED = ("the items (the first 100 of each split), the metric (first answer token's logit difference; "
              "closed-book its log-probability), the ablation (zero at every position), the proxy map and ρ's "
              "bootstrap; every endpoint, control and verdict rule of the plan")


def build_1(root: Path = RESULTS.parents[2]) -> dict[str, Any]:
    """Amendment 1 (committed at 31b314f; kept so its text can be read against the code that wrote it)."""
    rows = cost(root)
    totals = _totals(rows)
    return {"amends": "figures/results/context_use/plan.json", "number": 1,
            "what": "the head scans' method for Qwen2.5, and checks of attribution against the exact scan",
            "scan_methods": SCAN_METHODS, "checks": CHECKS_1, "rho_floor": RHO_FLOOR, "reading_rule": READING_RULE_1,
            "why": ("the plan sized its conditions from the pilot, not its head scans; by the committed outputs' "
                    "own seconds, Qwen2.5's seven exact scans take about "
                    f"{totals[QWEN]['exact_hours']:g} CPU hours here (SmolLM2's "
                    f"{totals['smollm2-135m-instruct']['exact_hours']:g}, Gemma-3's "
                    f"{totals['gemma-3-270m']['exact_hours']:g}), attribution about "
                    f"{totals[QWEN]['attribution_hours']:g} (seconds per item as the damped controls' likelihood "
                    "scoring recorded them: wall clock, one thread on a shared two-core machine, candidate answers "
                    "included, so an upper estimate)"),
            "unchanged": _UNCHANGED, "cost": rows, "totals": totals}


def scored_positions(results: Path) -> list[dict[str, Any]]:
    """Per model and context task, over the first :data:`N_SCAN` test items: how many the plan's rule (first
    answer token, the first competitor whose first token differs) drops, and how many the amended rule scores
    after a shared prefix or drops (tokenizers only: no model output is read)."""
    from pear_lens.evaluation.task_scan import rag_scan_task
    from pear_lens.evaluation.tasks import TASKS as SPEC
    from pear_lens.evaluation.tasks import TaskName
    from pear_lens.evaluation.tasks.calibration import settings_for
    from pear_lens.models import load_model

    rows = []
    for model_name in SCAN_METHODS:
        tokenizer = load_model(model_name).tokenizer
        for task in CONTEXT_TASKS:
            items = SPEC[TaskName(task)].load(results / model_name / "items" / f"{task}.jsonl")[:N_SCAN]
            scan = rag_scan_task(items, settings_for(model_name, TaskName(task), tokenizer).prompt_style, tokenizer,
                                 name=task)
            rows.append({"model": model_name, "task": task, "items": len(items),
                         "dropped_as_planned": len(scan.after_shared_prefix) + len(scan.dropped),
                         "after_shared_prefix": len(scan.after_shared_prefix), "dropped": len(scan.dropped)})
    return rows


def build_2(root: Path = RESULTS.parents[2], count_positions: bool = True) -> dict[str, Any]:
    """Amendment 2: Qwen2.5's checks on every task, the rule per task, the top-K overlap, two errata."""
    rows = cost(root)
    totals = _totals(rows)
    results = root / RESULTS.relative_to(RESULTS.parents[2])
    plan = json.loads((results / "plan.json").read_text(encoding="utf-8"))
    first = json.loads((results / "amendment_1.json").read_text(encoding="utf-8"))
    added = [t for t in CHECKS[QWEN]["tasks"] if t not in CHECKS_1[QWEN]["tasks"]]
    positions = scored_positions(results) if count_positions else []
    more = round(sum(r["exact_check_hours"] for r in rows if r["model"] == QWEN and r["task"] in added), 1)
    return {"amends": ["figures/results/context_use/plan.json", "figures/results/context_use/amendment_1.json"],
            "number": 2,
            "what": ("Qwen2.5's exact checks on every task it scans, the reading rule per task, the top-K overlap, and "
                     "where an item whose competitors share its first token is scored"),
            "replaces": {"checks": CHECKS, "reading_rule": READING_RULE, "rho_floor": RHO_FLOOR,
                         "scan_position": SCAN_POSITION},
            "scored_position": positions,
            "why": (f"amendment 1 read all seven of Qwen2.5's scans from checks on {' and '.join(CHECKS_1[QWEN]['tasks'])}"
                    f", its two tasks of shortest prompts; {' and '.join(added)} have the longest prompts and were "
                    "not checked at all, their dev scans choose the heads the task-scan condition prunes, and "
                    "ρ over every head is dominated by the many heads near zero while the study uses top-K sets. "
                    f"Checking {' and '.join(added)} exactly on {QWEN_CHECK_ITEMS} items each costs about {more:g} "
                    "more CPU hours by the estimate below (from committed outputs only)"),
            "errata": [f"Amendment 1 says the plan was 'written at {first['written_at']}': that is amendment 1's own "
                       f"time; the plan was written at {plan['written_at']}.",
                       "Amendment 1's cost table read every damped control's output in the working tree, some not "
                       "yet committed, while its text says 'the committed outputs'; the table below reads only "
                       "committed outputs. The conclusion, that exact scans of Qwen2.5 are out of reach here, is "
                       "the same."],
            "unchanged": ("the items (the first 100 of each split), the metric (the gold answer's logit difference "
                          "against its competitor's; closed-book the gold answer's first-token log-probability), the "
                          "ablation (zero at every position), the proxy map and ρ's bootstrap; every endpoint, "
                          "control and verdict rule of the plan; the scan methods of amendment 1"),
            "cost": rows, "totals": totals}


def _table(rows: list[dict[str, Any]], check: bool = False) -> str:
    from pear_lens.tables import markdown_table

    head = ["model", "task", "s per item (damped controls)", "passes per item (exact)", "scans", "exact CPU h",
            "attribution CPU h"] + ([f"exact check of {QWEN_CHECK_ITEMS} items, CPU h"] if check else [])
    return markdown_table(head, [[r["model"], r["task"], f"{r['seconds_per_item']:.3f}",
                                  f"{r['passes_per_item_exact']:g}", r["scans"], f"{r['exact_hours']:g}",
                                  f"{r['attribution_hours']:g}"] + ([f"{r['exact_check_hours']:g}"] if check else [])
                                 for r in rows])


def _check_lines(checks: dict[str, Any], resampled: str = "heads and both scans' items resampled") -> list[str]:
    return [f"- **{m}**: {' and '.join(_METHOD_WORDS[x] for x in c['methods'])} on the first {c['n_items']} test "
            f"items of {', '.join(c['tasks'])}, beside {c['beside']}; Spearman's ρ over heads with its 95 % "
            f"interval ({resampled})." for m, c in checks.items()]


def markdown(a: dict[str, Any]) -> str:
    """The amendment as its ``.md`` says it."""
    if a["number"] == 1:
        lines = ["# Amendment 1 to the context-use plan", "",
                 f"Amends {a['amends']} (written at {a['written_at']}), before any Qwen2.5 head scan exists: "
                 f"{a['what']}.", "",
                 "## What changes", "",
                 *[f"- **{m}**: its seven head scans by **{_METHOD_WORDS[v]}**{' (as planned)' if v == EXACT else ''}."
                   for m, v in a["scan_methods"].items()], "",
                 f"Unchanged: {a['unchanged']}.", "",
                 "## Why", "", f"{a['why'][0].upper()}{a['why'][1:]}.", "", _table(a["cost"]),
                 "", "## Checks added", "", *_check_lines(a["checks"]),
                 "", "## Reading rule", "", a["reading_rule"], ""]
        return "\n".join(lines)
    from pear_lens.tables import markdown_table

    r = a["replaces"]
    lines = [f"# Amendment {a['number']} to the context-use plan", "",
             f"Amends {' and '.join(a['amends'])}; written at {a['written_at']}, before any Qwen2.5 head scan "
             f"exists: {a['what']}.", "",
             "## Why", "", f"{a['why'][0].upper()}{a['why'][1:]}.", "", _table(a["cost"], check=True), "",
             "## Checks (replacing amendment 1's)", "",
             *_check_lines(r["checks"], "heads and the shared items resampled, the items drawn once for both scans"),
             "",
             "## Reading rule (replacing amendment 1's)", "", r["reading_rule"], "",
             "## Where an item is scored (every model)", "",
             "The plan scores each item at the first answer token, against the first competitor whose first token "
             "differs, and leaves out an item with none. On tokenizers that give a number's leading space a token "
             "of its own, every KV value starts with that token, so the plan's rule leaves no KV item to scan. "
             + r["scan_position"] + " Over the first test items of each context task:", "",
             markdown_table(["model", "task", "items", "left out by the plan's rule",
                             "scored after a shared prefix", "left out by the amended rule"],
                            [[p["model"], p["task"], p["items"], p["dropped_as_planned"], p["after_shared_prefix"],
                              p["dropped"]] for p in a["scored_position"]]), "",
             "## Errata to amendment 1", "", *[f"- {e}" for e in a["errata"]], "",
             f"Unchanged: {a['unchanged']}.", ""]
    return "\n".join(lines)


def merged(amendments: list[dict[str, Any]]) -> dict[str, Any]:
    """The design the amendments leave, in order: the first one's fields, each later one's ``replaces`` on top."""
    out = dict(amendments[0])
    for a in amendments[1:]:
        out.update(a["replaces"])
    out["numbers"] = [a["number"] for a in amendments]
    return out


def read(results: Path) -> dict[str, Any]:
    """The amended design from the amendments in ``results`` (as files, not checked against git: a report reads
    an exported tree)."""
    return merged([json.loads((results / p.name).read_text(encoding="utf-8")) for p in AMENDMENTS
                   if (results / p.name).is_file()])


def load() -> dict[str, Any]:
    """The amended design, every amendment committed as it is (refused otherwise)."""
    for path in AMENDMENTS:
        check_committed_before(path)
    return read(RESULTS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, choices=(1, 2), required=True)
    args = ap.parse_args(argv)
    path = RESULTS / f"amendment_{args.number}.json"
    if path.exists():
        raise SystemExit(f"{path.name} exists: an amendment is written once")
    made = sorted(p for p in (RESULTS / QWEN / "scans").rglob("*") if p.is_file())
    if made:
        raise SystemExit(f"{QWEN} already has head scan outputs ({made[0].relative_to(RESULTS / QWEN)}): an "
                         "amendment of its scans must come first")
    if args.number > 1 and not (RESULTS / f"amendment_{args.number - 1}.json").is_file():
        raise SystemExit(f"amendment_{args.number - 1}.json is missing: amendments are written in order")
    a = build_1() if args.number == 1 else build_2()
    a["written_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_text(path, json.dumps(a, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(path.with_suffix(".md"), markdown(a))
    print(markdown(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
