"""The reading of the results in the README and docs/results.md: tables and sentences computed from the records,
never typed.

Two sources of verdicts: the exploratory protocol (``studies/evaluate_all.py``: ``summary.csv`` and
``run.json``'s ``models``) and the confirmatory run (``studies/confirm.py``: ``run.json``'s ``confirmatory``).
Both are read with the same rule (:class:`~pear_lens.evaluation.verdict.VerdictRule`, Holm within each model),
so a word in the README is always the rule applied to a number in the record. Besides: each model's protocol
and the minutes its stages took (:func:`model_sentence`), a published K sweep
(:func:`k_sweep_table`) and what the head atlas says of the top suppression heads (:func:`atlas_roles_sentence`).
For the README's first screen, :func:`headline` and :func:`verdict_table` say the confirmatory verdicts in a few
lines. ``studies/update_readme.py`` only places these in the README and the pages of ``docs/``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pear_lens.evaluation.outcomes import LOOP_RULE, AnswerKind
from pear_lens.evaluation.stats import empirical_p
from pear_lens.evaluation.verdict import EndpointKind, VerdictRule
from pear_lens.tables import markdown_table

SAFETY_TASKS = ("closed-book",)


def exploratory_table(summary_csv: str | Path, records: dict[str, Any], rule: VerdictRule = VerdictRule()) -> pd.DataFrame:
    """One row per model and task at the reference budget: PEAR against the baseline (McNemar, Holm within the
    model, the rule's word) and PEAR's rank among the controls trained with its budget."""
    df = pd.read_csv(summary_csv)
    df = df[df["gold_position"].astype(str) == "all"]
    rows = []
    for (model, task), g in df.groupby(["model", "task"], sort=False):
        acc = g.set_index("condition")
        roles = [c for c in records.get(model, {}).get("conditions", []) if c.get("budget", "reference") == "reference"
                 and c["label"] in acc.index]
        pear = next((c["label"] for c in roles if c["role"] == "pear"), "PEAR" if "PEAR" in acc.index else None)
        if pear is None or "baseline" not in acc.index:
            continue
        base, row = float(acc.loc["baseline", "accuracy"]), acc.loc[pear]
        controls = [float(acc.loc[c["label"], "accuracy"]) - base for c in roles if c["role"] == "control"]
        delta = float(row["delta_vs_baseline"])
        rows.append({"model": model, "task": task, "n": int(row["n"]), "baseline": base, "pear": float(row["accuracy"]),
                     "delta": delta, "p_raw": float(row["p_vs_baseline"]), "n_controls": len(controls),
                     "controls_at_least": int(sum(c >= delta for c in controls)),
                     "rank_p": empirical_p(delta, controls) if controls else np.nan,
                     "controls_min": min(controls) if controls else np.nan,
                     "controls_max": max(controls) if controls else np.nan})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for model, g in out.groupby("model", sort=False):
        out.loc[g.index, "p_holm"] = rule.adjust(g["p_raw"].to_numpy())
    out["verdict"] = [rule.verdict(r.delta, r.p_holm, _kind(r.task)).value for r in out.itertuples()]
    return out


def _kind(task: str) -> EndpointKind:
    return EndpointKind.SAFETY if task in SAFETY_TASKS else EndpointKind.EFFICACY


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 0.001 else f"{x:.1e}"


def exploratory_markdown(table: pd.DataFrame) -> str:
    columns = ["model", "task", "n", "baseline %", "PEAR %", "Δ pts", "p raw", "p Holm", "verdict",
               "controls ≥ PEAR (rank p)", "controls' Δ range"]
    rows = []
    for r in table.itertuples():
        ctrl = ("–" if not r.n_controls else f"{r.controls_at_least} of {r.n_controls} ({_p(r.rank_p)})")
        rng = "–" if not r.n_controls else f"{_pts(r.controls_min)} to {_pts(r.controls_max)}"
        rows.append([r.model, r.task, r.n, f"{100 * r.baseline:.1f}", f"{100 * r.pear:.1f}", _pts(r.delta),
                     _p(r.p_raw), _p(r.p_holm), r.verdict, ctrl, rng])
    return markdown_table(columns, rows)


def exploratory_sentences(table: pd.DataFrame, rule: VerdictRule = VerdictRule()) -> list[str]:
    """What the exploratory table says, one sentence per model, each fact a cell of the table."""
    out = []
    for model, g in table.groupby("model", sort=False):
        words = {r.task: r.verdict for r in g.itertuples()}
        sig = [t for t, w in words.items() if w not in ("no significant change", "knowledge kept")]
        raw_only = [r.task for r in g.itertuples() if r.p_raw < rule.alpha <= r.p_holm]
        text = (f"- **{model}**: after Holm's correction over its {len(g)} tests, "
                + (", ".join(f"{t} {words[t]}" for t in sig) if sig else "no test stays significant"))
        if raw_only:
            text += f"; {', '.join(raw_only)} below {rule.alpha:g} before the correction only"
        best = g[g["n_controls"] > 0]
        if not best.empty:
            top = best[best["controls_at_least"] == 0]["task"].tolist()
            text += (f"; PEAR above all {int(best['n_controls'].iloc[0])} controls on {', '.join(top)}" if top else
                     "; PEAR above every control on no task")
            text += f" (the smallest rank p {int(best['n_controls'].iloc[0])} controls allow is {_p(1 / (1 + best['n_controls'].iloc[0]))})"
        out.append(text + "." + _outside_band(g))
    return out


def _outside_band(g: pd.DataFrame) -> str:
    """Beside a 'no significant change' (or 'knowledge kept'): a test baseline outside the calibration's band
    leaves little room to move in the direction the test is about (an efficacy task near its ceiling, a
    safety task near its floor); said with the smallest exact McNemar p that room allows."""
    from pear_lens.evaluation.tasks.calibration import TARGET

    low, high = TARGET
    band = f"the calibrated {100 * low:.0f}–{100 * high:.0f} % band"
    out = ""
    for r in g.itertuples():
        if r.verdict not in ("no significant change", "knowledge kept"):
            continue
        safety = _kind(r.task) == EndpointKind.SAFETY
        if not safety and r.baseline > high:
            room = int(round(r.n * (1 - r.baseline)))
            out += (f" {r.task}: the baseline answers {100 * r.baseline:.1f} %, above {band}: even fixing all "
                    f"{room} items it gets wrong, PEAR could reach no McNemar p below {_p(_min_mcnemar_p(room))}.")
        elif safety and r.baseline < low:
            room = int(round(r.n * r.baseline))
            out += (f" {r.task}: the baseline answers {100 * r.baseline:.1f} %, below {band}: even losing all "
                    f"{room} items it gets right, PEAR could reach no McNemar p below {_p(_min_mcnemar_p(room))}.")
    return out


def _min_mcnemar_p(flips: int) -> float:
    """The exact two-sided McNemar p when ``flips`` discordant items all go one way (its smallest value)."""
    return min(1.0, 2 * 0.5 ** flips)


def confirmatory_markdown(records: dict[str, Any]) -> tuple[str, list[str]]:
    """The compact verdict table of every confirmatory model and one status line each (plan, progress)."""
    from studies.confirmatory.document import LEGEND, verdict_rows

    frames, status = [], []
    for model, rec in records.items():
        endpoints = pd.DataFrame(rec["endpoints"])
        done, planned = _progress(rec)
        standing = _standing(rec)
        status.append(f"- **{model}**: plan `{rec['plan_sha256'][:12]}` (test seed {rec['test_seed']}, fixed "
                      f"{rec.get('plan_created') or 'before its items'}); {done} of {planned} planned evaluations "
                      f"done" + (" — **provisional**, the rest is pending" if _provisional(rec) else "")
                      + _pending(rec.get("pending"))
                      + ("" if not standing else f". Deviation{'s' * (len(standing) > 1)} from the plan: "
                         + "; ".join(standing) + "."))
        if not endpoints.empty:
            frames.append(verdict_rows(endpoints))
    table = ((markdown_table(pd.concat(frames)) + "\n" + str(LEGEND) + "\n") if frames
             else "(no confirmatory evaluation finished yet)\n")
    return table, status


def _standing(rec: dict[str, Any]) -> list[str]:
    """The deviations that stay once the pending work is done; a record written before they were kept apart
    gives all its deviations but the pending-work ones."""
    from studies.confirmatory.report import NOT_RETRAINED
    from studies.confirmatory.plan import NOT_EVALUATED

    if "standing_deviations" in rec:
        return list(rec["standing_deviations"])
    return [d for d in rec.get("deviations", []) if NOT_EVALUATED not in d and not d.startswith(NOT_RETRAINED)]


def _provisional(rec: dict[str, Any]) -> bool:
    """Any planned evaluation or training (PEAR's retraining included) still to do."""
    done, planned = _progress(rec)
    pending = rec.get("pending") or {}
    return done < planned or bool(pending.get("evaluations") or pending.get("trainings"))


def confirmatory_sentences(records: dict[str, Any]) -> list[str]:
    """What the confirmatory table says, one bullet per model; every word is the plan's rule applied to a
    number of the record (verdict, 'beyond random heads'), every number a cell of it."""
    out = []
    for model, rec in records.items():
        done, planned = _progress(rec)
        trainings = int((rec.get("pending") or {}).get("trainings") or 0)
        head = f"- **{model}**" + ("" if not _provisional(rec) else
                                   f" (provisional: {done} of {planned} evaluations" +
                                   (f", {_count(trainings, 'training')} left)" if trainings else ")"))
        t = pd.DataFrame(rec["endpoints"])
        if t.empty:
            out.append(head + ": no test evaluated yet.")
            continue
        t = t[t["subset"] == "all items"]
        text = head + f": after Holm's correction over its {len(rec['plan']['endpoints'])} tests, " + "; ".join(
            f"{r.task} {r.verdict} (Δ {_pts(r.delta)} pts [{_pts(r.ci_low)}, {_pts(r.ci_high)}], adjusted p "
            f"{_p(r.p_holm)}" + _safety_note(r) + ")" for r in t.itertuples()) + "."
        primary = t[t["role"] == "primary"]
        ranked = primary[primary.get("uniform_done", pd.Series(0, index=primary.index)).fillna(0) > 0]
        if not ranked.empty:
            words = set(ranked["beyond_random_heads"])
            text += (" Against the uniform random-K controls on the primary endpoints: "
                     + ", ".join(f"{r.task} rank {1 + int(r.uniform_n_at_least_pear)} of {1 + int(r.uniform_done)} "
                                 f"(adjusted rank p {_p(r.uniform_rank_p_holm)})" for r in ranked.itertuples()))
            yes = ranked.loc[ranked["beyond_random_heads"] == "yes", "task"].tolist()
            unreachable = bool((ranked.get("rank_test_reachable", pd.Series(dtype=object)) == False).any())  # noqa: E712
            text += (" — beyond random heads on " + (", ".join(yes) if yes else "none of them")
                     if words <= {"yes", "no"} and len(ranked) == len(primary) else
                     " — 'no' once every planned control is in, whatever the rest give" if unreachable else
                     " — no word until every planned control is in")
            if unreachable:
                text += (f" (a 'yes' was out of reach under this plan: its {int(ranked['uniform_planned'].iloc[0])} "
                         f"controls allow no adjusted rank p below {_p(float(ranked['rank_p_floor'].iloc[0]))})")
            text += "."
        text += _answer_shifts(rec, t) + _arms_sentences(rec, t)
        out.append(text)
    return out


def _safety_note(r: Any) -> str:
    """Beside 'knowledge kept': how large a loss the CI still allows, and PEAR against the controls' mean."""
    if r.verdict != "knowledge kept":
        return ""
    out = (f"; no significant loss, which is not evidence of none: the CI reaches {_pts(r.ci_low)} pts"
           if r.ci_low < 0 else "")
    vs = getattr(r, "pear_minus_uniform", None)
    if vs is not None and not pd.isna(vs):
        n = getattr(r, "uniform_done", None)
        draws = "" if n is None or pd.isna(n) else f" of {_count(int(n), 'draw')}"
        out += (f"; PEAR − the uniform controls' mean{draws} {_pts(vs)} pts [{_pts(r.pear_minus_uniform_low)}, "
                f"{_pts(r.pear_minus_uniform_high)}], the CI over items with the draws held fixed")
    return out


def _answer_shifts(rec: dict[str, Any], t: pd.DataFrame) -> str:
    """Where a verdict is not 'no change': how the kinds of answer moved from the baseline to PEAR."""
    kinds = pd.DataFrame(rec.get("answer_kinds") or [])
    out = ""
    for r in t.itertuples():
        if r.verdict in ("no significant change", "knowledge kept") or kinds.empty or r.task not in set(kinds["task"]):
            continue
        k = kinds[kinds["task"] == r.task].pivot_table(index="kind", columns="condition", values="share")
        if not {"baseline", "pear"} <= set(k.columns):
            continue
        k = k.reindex([a.value for a in AnswerKind if a.value in k.index])
        k = k[(k[["baseline", "pear"]] > 0).any(axis=1)]  # a kind neither condition gave says nothing
        out += (f" Answer kinds on {r.task}, baseline → PEAR: "
                + ", ".join(f"{kind} {100 * k.loc[kind, 'baseline']:.1f} → {100 * k.loc[kind, 'pear']:.1f} %"
                            for kind in k.index) + ".")
    return out


def _arms_sentences(rec: dict[str, Any], t: pd.DataFrame) -> str:
    """The fixed-damping arm as PEAR minus it (paired CI), the unclipped arm beside its own controls."""
    out = ""
    if "pear_minus_fixed_damping" in t and t["pear_minus_fixed_damping"].notna().any():
        have = t[t["pear_minus_fixed_damping"].notna()]
        out += (" PEAR minus fixed damping (PEAR's heads at their mean τ, untrained): " + ", ".join(
            f"{_pts(r.pear_minus_fixed_damping)} pts [{_pts(r.pear_minus_fixed_damping_low)}, "
            f"{_pts(r.pear_minus_fixed_damping_high)}] on {r.task}" for r in have.itertuples()))
        above = have.loc[have["pear_minus_fixed_damping_low"] > 0, "task"].tolist()
        below = have.loc[have["pear_minus_fixed_damping_high"] < 0, "task"].tolist()
        out += (f"; by these unadjusted CIs, learning τ beats damping the same heads by their mean τ on "
                + (f"{', '.join(above)}" if above else "none") + f" of the {_count(len(have), 'task')} evaluated"
                + (f", and loses to it on {', '.join(below)}" if below else "") + ".")
    if "pear_unclipped_delta" in t and t["pear_unclipped_delta"].notna().any():
        have = t[t["pear_unclipped_delta"].notna()]

        def controls(r: Any) -> str:
            n = getattr(r, "unclipped_controls_done", 0)
            reach = getattr(r, "unclipped_controls_n_at_least_pear", None)
            return "" if not n or reach is None or pd.isna(reach) else f"; {int(reach)} of {int(n)} controls at that lr score at least as high"

        out += (f" Unclipped τ (PEAR's heads trained at lr {rec['plan']['arms']['unclipped_lr']:g}): Δ " + ", ".join(
            f"{_pts(r.pear_unclipped_delta)} on {r.task} (PEAR {_pts(r.delta)}{controls(r)})" for r in have.itertuples())
            + "." + _looping(rec, list(have["task"])))
    return out


def _looping(rec: dict[str, Any], tasks: list[str]) -> str:
    """Shares of answers that loop (whatever their kind) for baseline, PEAR, PEAR unclipped and the mean of the
    controls trained at the unclipped learning rate, on ``tasks``; with the share of PEAR unclipped's answers
    that loop yet score correct."""
    rates = rec.get("looping_rate") or {}
    names = {"baseline": "baseline", "pear": "PEAR", "pear_unclipped": "PEAR unclipped"}

    def cell(task: str) -> str:
        r = rates[task]
        shares = " → ".join(f"{100 * r[c]['share']:.1f}" for c in names if c in r)
        ctrl = [v["share"] for c, v in r.items() if c.startswith(("uniform_unclipped_s", "layer_matched_unclipped_s"))]
        extra = [f"{100 * r['pear_unclipped']['correct_share']:.1f} % loop yet score correct"]
        extra += [f"its {len(ctrl)} controls {100 * float(np.mean(ctrl)):.1f} %"] if ctrl else []
        return f"{shares} % on {task} ({'; '.join(extra)})"

    cells = [cell(t) for t in tasks if "pear_unclipped" in rates.get(t, {})]
    if not cells:
        return ""
    shown = [names[c] for c in names if any(c in rates[t] for t in tasks if t in rates)]
    return (f" Answers that loop ({LOOP_RULE}; a lower bound, answers are cut at the task's token budget), "
            + " → ".join(shown) + ": " + ", ".join(cells) + ".")


def _pending(pending: dict[str, Any] | None) -> str:
    """The status line's tail: how many evaluations and trainings are left, about how long, how to resume."""
    if not pending or not (pending["evaluations"] or pending["trainings"]):
        return ""
    pace = ""
    if pending.get("minutes_estimate") is not None:
        where = f" on {' and '.join(pending['devices'])}" if pending.get("devices") else ""
        pace = f", about {pending['minutes_estimate'] / 60:.1f} h at this run's recent pace{where}"
    return (f" ({_count(pending['evaluations'], 'evaluation')} and {_count(pending['trainings'], 'training')} "
            f"left{pace}; `make confirm` resumes)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _progress(rec: dict[str, Any]) -> tuple[int, int]:
    """(evaluations done, evaluations planned) of one model's confirmatory record."""
    return sum(len(c) for c in _done(rec).values()), sum(len(c) for c in _planned(rec).values())


def _planned(rec: dict[str, Any]) -> dict[str, list[str]]:
    from studies.confirmatory import plan as PL

    plan = PL.ConfirmatoryPlan.from_dict({k: v for k, v in rec["plan"].items() if k != "created"})
    return PL.planned_conditions(plan)


def _done(rec: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in rec["conditions"]:
        out.setdefault(c["task"], []).append(c["condition"])
    return out


# --------------------------------------------------------------------------- the README's first screen


QUIET = ("no significant change", "knowledge kept")
"""The verdicts that report no significant effect: named by task only; the others come with their numbers."""


def verdict_table(records: dict[str, Any]) -> pd.DataFrame:
    """The README's compact verdict table: one row per confirmatory model and test (all items), seven columns
    read off the record (the full table with every control and arm is :func:`confirmatory_markdown`'s)."""
    rows = []
    for model, rec in records.items():
        t = pd.DataFrame(rec["endpoints"])
        if t.empty:
            continue
        for r in t[t["subset"] == "all items"].itertuples():
            n_u = getattr(r, "uniform_done", 0)
            n_u = 0 if n_u is None or pd.isna(n_u) else int(n_u)
            rows.append({"model": model, "task": f"{r.task} ({r.role})", "baseline %": f"{100 * r.baseline:.1f}",
                         "PEAR Δ pts [95 % CI]": f"{_pts(r.delta)} [{_pts(r.ci_low)}, {_pts(r.ci_high)}]",
                         "p Holm": _p(r.p_holm), "verdict": r.verdict,
                         "PEAR's rank among random heads": (f"{1 + int(r.uniform_n_at_least_pear)} of {1 + n_u}"
                                                            if n_u else "–")})
    return pd.DataFrame(rows)


def verdict_legend(records: dict[str, Any]) -> str:
    """What the compact table's columns mean, with the plans' level, CI and rule (read off the records)."""
    plans = [rec["plan"] for rec in records.values()]
    alpha = "/".join(sorted({f"{p['rule']['alpha']:g}" for p in plans}))
    level = "/".join(sorted({f"{100 * p['statistics']['level']:g}" for p in plans}))
    return (f"Δ in percentage points with its {level} % paired-bootstrap CI; p Holm-adjusted over the model's tests; "
            f"verdict by the plan's rule (significant below {alpha}); rank: 1 = the largest Δ among PEAR and the "
            "uniform random-K controls trained like it.")


def empty_answer_lines(t: pd.DataFrame, empty: dict[str, Any] | None) -> list[str]:
    """For each significant greedy gain, how much of it is fewer empty answers
    (``figures/results/context_use/empty_answers.json``, :mod:`studies.context_use.empty_answers`)."""
    out = []
    if not empty:
        return out
    for r in t[(t["verdict"] == "helps") & (t["delta"] > 0)].itertuples():
        tab = empty.get(r.model, {}).get(r.task)
        rows = {row["condition"]: row for row in (tab or {}).get("rows", [])}
        if not tab or "pear" not in rows or "baseline" not in rows:
            continue
        pear, base, fit = rows["pear"], rows["baseline"], tab["fit"]
        out.append(f"  - Empty answers: {pear['d_empty']:+.1f} pts with PEAR on {r.model} {r.task}.")
        if "slope" in fit:
            out.append(f"  - Over the {fit['n_controls']} trained random-head controls, Δcorrect = {fit['intercept']:+.2f} "
                       f"{fit['slope']:+.2f}·Δempty (r {fit['r']:+.2f}): {fit['intercept'] + fit['slope'] * pear['d_empty']:+.1f}"
                       f" pts at PEAR's Δempty; PEAR {pear['d_correct']:+.1f} (residual {fit['pear_residual']:+.1f}, "
                       f"controls' SD {fit['control_residual_sd']:.1f}).")
        if pear["acc_answered_both"] is not None:
            out.append(f"  - On the {pear['answered_both']} items both answered, accuracy "
                       f"{pear['base_acc_answered_both']:.1f} → {pear['acc_answered_both']:.1f} %; memorised answers "
                       f"{base['memorised']:.1f} → {pear['memorised']:.1f} %.")
        if "slope" in fit and abs(fit["slope"] * pear["d_empty"]) > abs(pear["d_correct"]) / 2:
            out.append("  - More than half of the gain is what the controls' line gives for fewer empty answers "
                       "([docs/results.md](docs/results.md#greedy-accuracy-and-empty-answers)).")
    return out


def freshness_phrase(fresh: dict[str, Any] | None) -> str:
    """Which test items were new (``figures/results/confirm/freshness.json``, :mod:`studies.confirmatory.freshness`):
    a drawn task is new when none of its items repeats one of test seed 0; a fact task names how many of its
    facts seed 0 had asked already."""
    if not fresh:
        return "not checked against earlier test seeds (run `python -m studies.confirmatory.freshness`)"
    new, reasked = [], []
    for task in ("kv", "mdqa", "counterfactual", "closed-book"):
        per = {name: m["tasks"][task] for name, m in fresh["models"].items() if task in m["tasks"]}
        if not per:
            continue
        if all(e["same_item_as_seed_0"] == 0 and not e.get("facts_asked_at_seed_0") for e in per.values()):
            new.append(task)
        elif all("n_facts" in e for e in per.values()):
            counts = ", ".join(f"{e['facts_asked_at_seed_0']} of {e['n_facts']} on {name}" for name, e in per.items())
            reasked.append(f"{task}: {counts}")
    text = f"new {' and '.join(new)} items" if new else "no task on new items"
    if reasked:
        text += (f"; {' and '.join(t.split(':')[0] for t in reasked)} ask about one fact bank, and most of their "
                 f"facts had been asked under the exploratory test seed 0 ({'; '.join(reasked)})")
    return text


def headline(records: dict[str, Any], exploratory: pd.DataFrame | None = None,
             empty: dict[str, Any] | None = None, fresh: dict[str, Any] | None = None) -> list[str]:
    """What PEAR did on these models, in a few lines for the README's first screen: the confirmatory verdicts
    grouped by word (each significant one with its Δ and CI), the plans' rank test against random heads, what
    is still provisional, and the models only the exploratory run evaluated. Every word is the record's."""
    rows, provisional = [], []
    for model, rec in records.items():
        t = pd.DataFrame(rec["endpoints"])
        if not t.empty:
            rows += [{"model": model, **r} for r in t[t["subset"] == "all items"].to_dict("records")]
        if _provisional(rec):
            done, planned = _progress(rec)
            provisional.append(f"{model} ({done} of {planned} planned evaluations in)")
    if not rows:
        return ["No confirmatory test has finished yet: `make confirm` runs it."]
    t = pd.DataFrame(rows)
    alpha = "/".join(sorted({f"{rec['plan']['rule']['alpha']:g}" for rec in records.values()}))
    models = list(dict.fromkeys(t["model"]))
    out = [f"**What PEAR did here.** The confirmatory test ({_count(len(t), 'test')} on {', '.join(models)}; each "
           "plan fixed before any of its results existed; Holm over each model's tests, "
           f"significant below {alpha}):", ""]
    for word in (*(w for w in dict.fromkeys(t["verdict"]) if w not in QUIET), *QUIET):
        part = t[t["verdict"] == word]
        if part.empty:
            continue
        if word in QUIET:
            cases = "; ".join(f"{m} on " + ", ".join(r.task + _kept_floor(r) for r in g.itertuples())
                              for m, g in part.groupby("model", sort=False))
            if word == "knowledge kept" and (part["ci_low"] < 0).any():
                cases += " — no significant loss, which is not evidence of none"
        else:
            cases = "; ".join(f"{r.model} on {r.task} (Δ {_pts(r.delta)} pts [{_pts(r.ci_low)}, {_pts(r.ci_high)}], "
                              f"adjusted p {_p(r.p_holm)})" for r in part.itertuples())
        out.append(f"- **{word}** ({len(part)} of {len(t)}): {cases}.")
        if word == "helps":
            out += empty_answer_lines(part, empty)
    out += _random_heads_line(t, alpha)
    out.append(f"- **Which test items were new**: {freshness_phrase(fresh)}.")
    if provisional:
        out.append(f"- **provisional**, planned work still to do: {', '.join(provisional)}; `make confirm` resumes.")
    if exploratory is not None and not exploratory.empty:
        for model, g in exploratory[~exploratory["model"].isin(models)].groupby("model", sort=False):
            sig = [f"{r.task} {r.verdict}" for r in g.itertuples() if r.verdict not in QUIET]
            out.append(f"- Not in the confirmatory test: {model}, evaluated only by the exploratory run on "
                       f"{', '.join(g['task'])} ({', '.join(sig) if sig else 'no test significant'} after Holm).")
    return out


def _kept_floor(r: Any) -> str:
    """Beside a 'knowledge kept': the lowest loss its CI allows, where it allows one."""
    return f" (CI down to {_pts(r.ci_low)} pts)" if r.verdict == "knowledge kept" and r.ci_low < 0 else ""


def _random_heads_line(t: pd.DataFrame, alpha: str) -> list[str]:
    """The plans' rank test on the primary endpoints: on how many PEAR's heads beat random heads, and why a
    'yes' could not come out where the plan's controls were too few for it."""
    if "beyond_random_heads" not in t:
        return []
    primary = t[t["role"] == "primary"]
    words = primary["beyond_random_heads"].fillna("")
    if primary.empty or not (words != "").any():
        return []
    yes = primary.loc[words == "yes"]
    text = (f"- **beyond random heads** (the plans' rank test among uniform random-K controls) on {len(yes)} of the "
            f"{_count(len(primary), 'primary endpoint')}" + (": " + ", ".join(f"{r.model} {r.task}" for r in
                                                                            yes.itertuples()) if len(yes) else ""))
    pending = primary.loc[words == "pending"]
    if len(pending):
        text += f"; no word yet on {', '.join(f'{r.model} {r.task}' for r in pending.itertuples())} (controls missing)"
    if "rank_test_reachable" in primary:
        out_of_reach = primary[(primary["rank_test_reachable"] == False) & (words != "yes")]  # noqa: E712
        if len(out_of_reach) == len(primary):
            text += ("; under these plans a 'yes' was out of reach: too few controls for an adjusted rank p below "
                     + alpha)
        elif len(out_of_reach):
            text += ("; a 'yes' was out of reach (too few controls) on "
                     + ", ".join(f"{r.model} {r.task}" for r in out_of_reach.itertuples()))
    return [text + "."]


# --------------------------------------------------------------------------- each model's protocol record


def model_sentence(name: str, record: dict[str, Any], artifacts: Path) -> str:
    """One model's exploratory run, read off its ``run.json`` entry (a record from before the protocol, with
    the K sweep of ``ARTIFACTS/NAME`` when published, or :func:`protocol_sentence`)."""
    if "protocol" in record:
        return protocol_sentence(name, record)
    r = record
    control = (f"{r['control_steps']} training steps each" if r["control_steps"] else "the same training budget as PEAR")
    text = (f"- **{name}** ({record_timing(r)}; tasks: {', '.join(r['tasks'])}; n = {r['n']} "
            f"items per task and condition): K = {r['k']} ({r['k_chosen']}); heads {', '.join(r['heads'])}; "
            f"τ {', '.join(f'{t:.3f}' for t in r['tau'])}. Random-K controls: {len(r['control_seeds'])} seeds, "
            f"{control}" + (", drawn from all heads (K is more than half of them, so they may share PEAR heads)"
            if r.get("controls_avoid_pear_heads") is False else ", none of them a PEAR head")
            + f". Artifact: [`artifacts/{name}`](artifacts/{name}).")
    sweep = artifacts / name / "ablation.csv"
    if sweep.exists():
        grid = pd.read_csv(sweep)["k"]
        if r["k"] == grid.max():
            text += (f" K is the largest value the K sweep tried ({grid.max()}): the copy-loss gain had not "
                     "levelled off, so more heads might help further on the proxy task.")
    return text


def protocol_sentence(name: str, r: dict[str, Any]) -> str:
    """One model's protocol, read off its run.json entry (issue 9: matched controls, K on dev, working copy task)."""
    p, copy, sel = r["protocol"], r["copy_task"], r["protocol"]["k_selection"]
    measured = copy.get("measured", {})
    accs = ", ".join(f"{m['clean_copy_accuracy']:.1%} {'with' if m['prepend_bos'] else 'without'} BOS"
                     for m in measured.values())
    kinds: dict[str, list] = {}
    for c in p["controls"]:
        kinds.setdefault(c["kind"], []).append(c)
    control_text = []
    for kind, cs in kinds.items():
        extra = ""
        if kind == "uniform":
            extra = ("none of them a PEAR head" if all(c.get("avoids_pear_heads") for c in cs)
                     else "drawn from all heads (K is more than half of them)")
        elif any(c.get("partial") for c in cs):
            extra = "partial match: some layers hold too few other heads, so PEAR heads fill them"
        else:
            extra = "same number of heads per layer as PEAR, none of them a PEAR head"
        control_text.append(f"{len(cs)} {kind.replace('_', '-')} (seeds {', '.join(str(c['seed']) for c in cs)}; {extra})")
    steps = {c["steps"] for c in p["controls"]} | {p["pear"]["steps"]}
    seeds = {c["train_seed"] for c in p["controls"]} | {p["pear"]["train_seed"]}
    same = len(steps) == 1 and len(seeds) == 1
    text = (f"- **{name}** ({record_timing(r)}; tasks: {', '.join(r['tasks'])}; n = {r['n']} test items per task and "
            f"condition). Copy task: {'with' if copy['prepend_bos'] else 'without'} BOS ({accs} clean copy "
            f"accuracy; rule: {copy['rule']}). K = {r['k']}")
    if sel["split"] == "dev":
        trained = ("top-K and layer-matched random-K alike" if sel.get("dev_seeds", [0]) else
                   "top-K only, no random draws on dev")
        text += (f", chosen on dev items before the test ({sel['rule']}; K in {', '.join(map(str, sel['grid']))}, "
                 f"{sel['dev_steps']} training steps for {trained}, "
                 f"{sel['n_dev']} dev items per task, dev seed {sel['dev_seed']}, test seed {sel['test_seed']}; "
                 f"figure `figures/dev_k_{name}`)")
    else:
        text += f" ({sel['rule']})"
    text += (f"; heads {', '.join(r['heads'])}; τ {', '.join(f'{t:.3f}' for t in r['tau'])}. Controls: "
             f"{'; '.join(control_text)}; " + (f"all trained like PEAR ({p['pear']['steps']} steps, the same "
             f"training sequences, seed {p['pear']['train_seed']})" if same else "training budgets differ from PEAR's")
             + f". Artifact: [`artifacts/{name}`](artifacts/{name}).")
    if p.get("differs_from_default"):
        text += (" **Differs from the default protocol** (as the command that ran it set): "
                 + ", ".join(f"`{d['option']} {_option_value(d['value'])}` (default {_option_value(d['default'])})"
                             for d in p["differs_from_default"]) + ".")
    if p.get("budget"):
        b = p["budget"]
        text += f" Budget sensitivity: PEAR and every control also trained for {b['steps']} steps ({b['note']})."
    return text


def _option_value(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "none"
    return str(value)


def record_timing(record: dict[str, Any]) -> str:
    """The measured minutes of each evaluate_all stage; stages reused from an earlier run are named as such."""
    seconds = record["seconds"]
    if "protocol" in record:
        return stage_minutes(record)
    stages = {"discovery": seconds.get("discovery"), "ablation": seconds.get("ablation"),
              "PEAR training": seconds.get("train_pear"),
              "random-K training": sum(v for k, v in seconds.items() if k.startswith("train_random_")) or None,
              **{f"{task} evaluation": seconds.get(f"eval_{task}") for task in record["tasks"]}}
    timed = [f"{stage} {v / 60:.0f}" for stage, v in stages.items() if v is not None]
    reused = [stage for stage, v in stages.items() if v is None]
    return (f"{record['total_seconds'] / 60:.0f} min measured: " + ", ".join(timed)
            + (f"; {', '.join(reused)} reused from an earlier run, not timed" if reused else ""))


STAGES = (("copy_task", "copy-task check"), ("discovery", "discovery"), ("dev_train/", "dev training"),
          ("dev_eval/", "dev evaluation"), ("train_pear", "PEAR training"), ("train_control/", "control training"),
          ("train_budget/", "longer-budget training"))
"""The record's ``seconds`` keys (or key prefixes) of each stage, and the stage's name in the README."""


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def stage_minutes(record: dict[str, Any]) -> str:
    """Measured time per stage of the protocol (each measured when it ran, maybe in an earlier session or
    on another device: the record lists every device that ran its stages)."""
    seconds = record["seconds"]
    parts = []
    for prefix, stage in STAGES:
        total = sum(v for k, v in seconds.items() if k == prefix or (prefix.endswith("/") and k.startswith(prefix)))
        if any(k == prefix or (prefix.endswith("/") and k.startswith(prefix)) for k in seconds):
            parts.append(f"{stage} {_duration(total)}")
    parts += [f"{task} evaluation {_duration(seconds[f'eval/{task}'])}" for task in record["tasks"]
              if f"eval/{task}" in seconds]
    missing = [stage for prefix, stage in STAGES[:2] if prefix not in seconds]
    devices = record.get("devices") or ([record["device"]] if record.get("device") else [])
    return (f"{_duration(record['total_seconds'])} measured" + (f" on {' then '.join(devices)}" if devices else "")
            + ": " + ", ".join(parts)
            + (f"; {', '.join(missing)} not timed (run before stages were timed)" if missing else ""))


# --------------------------------------------------------------------------- K sweep and atlas


def k_sweep_table(csv: Path) -> list[str]:
    """A published ``ablation.csv`` (``pear-lens ablate``): held-out copy loss of the top-K heads beside the mean
    of K random heads, per K, as Markdown lines headed by the model's name (the artifact folder's)."""
    df = pd.read_csv(csv)
    base = float(df.loc[df["selection"] == "none", "copy_loss"].iloc[0])
    top = df[df["selection"] == "top"].set_index("k")["copy_loss"]
    rand = df[df["selection"] == "random"].groupby("k")["copy_loss"].mean()
    steps = "/".join(str(v) for v in sorted(df.loc[df["k"] > 0, "steps"].unique()))
    table = markdown_table(["K", *(str(k) for k in top.index)],
                           [["top-K heads", *(f"{v:.3f}" for v in top)],
                            [f"random K heads (mean of {df.loc[df['selection'] == 'random', 'seed'].nunique()})",
                             *(f"{rand.get(k, float('nan')):.3f}" for k in top.index)]])
    return [f"**{csv.parent.name}** (`pear-lens ablate`, {steps} training steps per run, "
            f"{df['n_eval'].iloc[0]} held-out sequences; original model: {base:.3f}):", "",
            *table.splitlines(), ""]


def atlas_roles_sentence(part: pd.DataFrame, k: int, stats: pd.DataFrame) -> str:
    """What one model's top-``k`` Δπ heads are (``atlas_roles.csv`` rows of the model), with the largest rank
    correlation of its ``atlas_summary.csv`` rows and its printable ``interval`` (an undefined one is named,
    never NaN): one sentence, every number from the two tables."""
    counts: dict[str, int] = {}
    for roles in part["roles"]:
        for role in ([] if roles == "none" else roles.split(", ")):
            counts[role] = counts.get(role, 0) + 1
    neither = int((part["roles"] == "none").sum())
    held = ", ".join(f"{n} in the top {k} by {role}" for role, n in sorted(counts.items(), key=lambda x: -x[1]))
    retrieval = int(part["retrieval_head"].sum()) if "retrieval_head" in part else 0
    top = part.sort_values("delta_pi_rank").iloc[0]
    text = (f"{held or 'none in any detector’s top ' + str(k)}; {retrieval} retrieval head(s) by the threshold; "
            f"{neither} of {len(part)} hold none of the roles. The strongest suppressor, {top['head']}, holds: "
            f"{top['roles']}.")
    if stats["spearman"].isna().all():
        return text + " The rank correlation of Δπ is undefined with every detector's score (see the table)."
    best = stats.loc[stats["spearman"].abs().idxmax()]
    return text + f" The largest rank correlation of Δπ is with {best['short']} (ρ = {best['interval']})."


# --------------------------------------------------------------------------- the context-use study's verdict


_TASK_NAMES = {"kv": "KV", "mdqa": "MDQA", "counterfactual": "counterfactual", "closed-book": "closed-book"}


def _nats(d: dict[str, Any]) -> str:
    return f"{d['delta']:+.3f} nats [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _side(d: dict[str, Any]) -> str | None:
    """``above`` or ``below`` where a difference's 95 % interval excludes 0 (PEAR − peer: PEAR higher or lower)."""
    return "above" if d["ci_low"] > 0 else "below" if d["ci_high"] < 0 else None


def _peer_sentence(tasks: dict[str, Any], label: str, name: str) -> str | None:
    """How PEAR compares with one peer over the context tasks: where the interval of PEAR − peer excludes 0."""
    got = {t: e["vs_pear"][label] for t, e in tasks.items() if t != "closed-book" and e["vs_pear"].get(label)}
    if not got:
        return None
    above = [_TASK_NAMES[t] for t, d in got.items() if _side(d) == "above"]
    below = [_TASK_NAMES[t] for t, d in got.items() if _side(d) == "below"]
    parts = ([f"above it on {', '.join(above)}"] if above else []) + ([f"below it on {', '.join(below)}"] if below
                                                                       else [])
    return f"{name}: PEAR {' and '.join(parts) if parts else 'indistinguishable from it'} ({len(got)} tasks)"


def _rank_list(ranks: list[tuple[str, dict[str, Any]]]) -> str:
    """``KV rank p 0.1 among 19; ...`` for the tasks whose rank p is defined."""
    return "; ".join(f"{_TASK_NAMES[t]} rank p {c['rank_p']:.3g} among {c['n']}" for t, c in ranks
                     if c.get("rank_p") is not None)


_REASON_PHRASES = {"no-controls": "pending: no random control in yet",
                   "rank-interim": "pending: rank test interim",
                   "rank-underpowered": "no detectable effect: too few random controls for the rank test",
                   "rank-failed": "no detectable effect: the paired test passed, the rank test did not"}
"""How the README says each of the report's verdict reasons (``verdict_reason``) it words the same for any data."""


def _verdict_phrase(e: dict[str, Any]) -> str:
    """A task's verdict as the README gives it: the plan's word and, where the report gives a reason (a passed
    paired test whose rank test is waiting or failed, an interval excluding 0 without Holm's adjustment), why."""
    reason = e.get("verdict_reason", "")
    if reason == "unadjusted-interval":
        return f"no detectable effect: Holm p {e['p_holm']:.2g}"
    if reason:
        return _REASON_PHRASES[reason]
    if e["verdict"] == "no detectable effect" and "mde_80" in e:
        return f"no detectable effect, smallest detectable {e['mde_80']:.2f}"
    return e["verdict"]


def _status(r: dict[str, Any]) -> str:
    """`` *provisional: 145 of 498 planned outputs in*``, or, once every verdict is the plan's final one, that the
    outputs still missing are descriptive."""
    prog = r.get("progress", {})
    if not prog or prog["done"] >= prog["planned"]:
        return ""
    primary = [e for t, e in r["tasks"].items() if t != "closed-book"]
    planned = r.get("planned_damped")
    final = (planned is not None and all(e.get("verdict") not in ("pending", "not evaluated yet") for e in primary)
             and all(e["damped_controls"]["n"] >= planned for e in primary))
    if final:
        return (f" *verdicts final; {prog['done']} of {prog['planned']} planned outputs in, the missing ones "
                "descriptive*")
    return f" *provisional: {prog['done']} of {prog['planned']} planned outputs in*"


def context_use_lines(report: dict[str, Any] | None) -> list[str]:
    """The README's first lines: what PEAR does to context use, read off the context-use study's report
    (``figures/results/context_use/report.json``, :mod:`studies.context_use.report`) — per model the primary
    contrast per task with its verdict, the rank among random heads, and the peers; provisional while outputs
    are missing."""
    if not report or not report.get("models"):
        return ["**Does PEAR make these models use their context?** The context-use study (teacher-forced "
                "log-probabilities, plan committed before its items) has no results yet: "
                "`python -m studies.context_use.run --model MODEL`."]
    out = ["**Does PEAR make these models use their context?** The context-use study measures it directly: the "
           "log-probability contrast of the context's answer against its competitors, teacher-forced, on facts no "
           "earlier study asked, under a plan committed before any item "
           "([results](docs/results.md#context-use-study)).", *_verdict_summary(report["models"]), ""]
    for model, r in report["models"].items():
        per_task = []
        for task, e in r["tasks"].items():
            d = e["vs_baseline"].get("PEAR")
            if d:
                per_task.append(f"{_TASK_NAMES[task]} {_nats(d)} ({_verdict_phrase(e)})")
        status = _status(r)
        if not per_task:
            out.append(f"- **{model}**{status}: no task has both PEAR's and the baseline's outputs yet.")
            continue
        out.append(f"- **{model}**{status}: PEAR − baseline on " + "; ".join(per_task) + ".")
        ranks = [(t, e["damped_controls"]) for t, e in r["tasks"].items() if t != "closed-book"]
        if all(c.get("rank_p") is None for _, c in ranks):
            out.append("  - Against random heads damped alike: no controls in yet.")
        else:
            fewest = min(c["n"] for _, c in ranks)
            if fewest < len(ranks) / 0.05 - 1:
                why = "; too few controls yet for any adjusted rank p below 0.05"
            elif fewest < r.get("planned_damped", 0):
                why = f"; interim: the plan's {r['planned_damped']} controls are not all in"
            else:
                why = ""
            out.append("  - Against random heads damped alike: " + _rank_list(ranks)
                       + f" (Holm over the three tasks in the verdict{why}).")
        trained = [(t, e["trained_controls"]) for t, e in r["tasks"].items()
                   if t != "closed-book" and e.get("trained_controls", {}).get("rank_p") is not None]
        if trained:
            out.append("  - Against random heads trained like PEAR (descriptive, not adjusted): "
                       + _rank_list(trained) + ".")
        peers = [s for s in (_peer_sentence(r["tasks"], label, name) for label, name, _ in _PEERS) if s]
        if peers:
            out.append("  - Peers (PEAR − peer, 95 % interval excluding 0): " + "; ".join(peers) + ".")
        out += _scan_lines(r)
    return out


_PEERS = (("PEAR heads damped", "untrained damping of PEAR's heads", "untrained damping of its heads"),
          ("PEAR heads pruned", "pruning them", "pruning its heads"),
          ("CAD α=0.5", "context-aware decoding", "context-aware decoding"))
"""Each peer's condition label, its name in a model's bullet, and in the lead's summary."""

_SUMMARY_ORDER = ("improves context use", "hurts context use", "no detectable effect", "pending", "not evaluated yet")


def _verdict_summary(models: dict[str, Any]) -> list[str]:
    """The verdicts in three sentences, each model-task pair under its verdict (context tasks; a line per verdict,
    one paragraph in Markdown), closed-book's non-inferiority per model, and how PEAR compares with each peer over
    the context tasks: what a reader takes away before the per-model numbers."""
    by: dict[str, dict[str, list[str]]] = {v: {} for v in _SUMMARY_ORDER}
    kept: dict[str, list[str]] = {"retained": [], "not shown retained": []}
    for model, r in models.items():
        for task, e in r["tasks"].items():
            if task == "closed-book":
                if e.get("verdict") in kept:
                    kept[e["verdict"]].append(model)
            elif e.get("verdict") in by:
                by[e["verdict"]].setdefault(model, []).append(_TASK_NAMES[task])
    groups = [f"{v}{' (the rank test waits on controls the plan runs)' if v == 'pending' else ''} on "
              + ", ".join(f"{m} ({', '.join(ts)})" for m, ts in got.items())
              for v, got in by.items() if got]
    if not groups:
        return []
    out = ["", "In the plan's words, PEAR's verdicts so far:", *(g + ";" for g in groups[:-1]), groups[-1] + "."]
    if any(kept.values()):
        out.append("Closed-book knowledge (non-inferiority): " + "; ".join(
            f"{v} on {', '.join(ms)}" for v, ms in kept.items() if ms) + ".")
    peers = []
    for label, _, name in _PEERS:
        got = [e["vs_pear"][label] for r in models.values() for t, e in r["tasks"].items()
               if t != "closed-book" and e.get("vs_pear", {}).get(label)]
        if got:
            sides = [_side(d) for d in got]
            above, below = sides.count("above"), sides.count("below")
            peers.append(f"{name}: PEAR higher on {above}, lower on {below}, neither on {len(got) - above - below}"
                         f" of {len(got)}")
    if peers:
        out.append("Against its peers (model-task pairs where the unadjusted 95 % interval of PEAR − peer excludes 0): "
                   + "; ".join(peers) + ".")
    return out


_UNREAD = {"pending": "attribution check pending", "not validated": "attribution not validated"}
"""Why a task's scan is not read (the amendments' rule for a model scanned by attribution)."""


def _scan_lines(r: dict[str, Any]) -> list[str]:
    """Do the proxy's heads matter on the real tasks: per task with a test scan, Spearman's ρ of the proxy Δπ with
    the heads' effects on the task and how many of PEAR's K heads are among the task's top K; then the task's own
    top K (from its dev scan) pruned, beside PEAR's heads pruned. A task scanned by attribution is read only once
    its check validates it (amendments 1 and 2); until then its line names why it is not read."""
    scans, standing = r.get("scans", {}), r.get("attribution_standing", {})
    if not scans:
        return []
    lines = ["  - Do the proxy's heads matter on the real tasks? Per task (descriptive): Spearman ρ over heads of the "
             "proxy Δπ with each head's effect when removed (test items); PEAR's heads among the task's top K; the "
             "task's own top K (by its dev scan) pruned, beside PEAR's heads pruned."]
    for task, e in r["tasks"].items():
        v = scans.get(task)
        if why := _UNREAD.get(standing.get(task, "")):  # its scans (test and dev) are by attribution
            lines.append(f"    - {_TASK_NAMES[task]}: {why}, not read yet.")
            continue
        parts = []
        if v:
            k = len(v["pear_head_ranks"])
            top = sum(rank <= k for rank in v["pear_head_ranks"])
            parts.append(f"ρ {v['interval']}" + (" by attribution (checked)" if v.get("method") == "attribution"
                                                 else "") + f"; {top} of PEAR's {k} heads in its top {k}")
        own = e["vs_baseline"].get(f"task-scan heads pruned ({task})")
        if own:
            pruned = e["vs_baseline"].get("PEAR heads pruned")
            parts.append(f"its own top K pruned {_nats(own)}"
                         + (f" (PEAR's heads pruned {_nats(pruned)})" if pruned else ""))
        if parts:
            lines.append(f"    - {_TASK_NAMES[task]}: " + "; ".join(parts) + ".")
    return lines
