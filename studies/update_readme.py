"""Fill the generated blocks of README.md and docs/*.md from files that scripts wrote; never from typed numbers.

A block is ``<!-- BEGIN GENERATED: NAME -->`` ... ``<!-- END GENERATED: NAME -->`` in any of :data:`PAGES`; the
function ``GENERATORS[NAME]`` writes its body. The README holds the first screen, docs/ the rest:

- README.md: ``headline`` (what PEAR did on these models, in words read off the confirmatory record),
  ``verdicts`` (the compact verdict table) and ``quickstart`` (``examples/quickstart.py``, which the tests run,
  so it cannot rot);
- docs/results.md: ``confirmatory`` and ``exploratory`` (``figures/results/`` from ``studies/confirm.py`` and
  ``studies/evaluate_all.py``: tables, K and how it was chosen, accuracy-by-position figures), ``k-sweep``
  (published ``artifacts/*/ablation.csv``), ``heatmaps`` and ``families`` (``studies/make_figures.py``),
  ``atlas`` (``studies/make_atlas.py``), ``stability`` (``figures/results/stability/*/summary.json`` from
  ``studies/stability.py``: seeds, top-K probability, intervals, caterpillar figures), ``empty-answers``
  (``studies/context_use/empty_answers.py``: greedy accuracy against empty answers);
- docs/methods.md: ``commands`` (the command table, the scoring-method and head-detector tables, from the parser
  that the config dataclasses generate, ``pear_lens.mediation.METHODS`` and ``pear_lens.atlas.DETECTORS``);
- docs/benchmarks.md: ``benchmarks`` (the result lines of ``figures/benchmarks/*.txt``);
- docs/options.md: ``shared-options`` (every option more than one command takes, its one default and where a
  command must differ the reason, from the config dataclasses: :func:`pear_lens.config.describe_options`).

Generators write links relative to the repository root; each page gets them relative to itself. Every table
is :func:`pear_lens.tables.markdown_table`'s.

    python -m studies.update_readme          # rewrite the pages
    python -m studies.update_readme --check  # exit 1 if a page is not what the files say (a test runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Callable

from pear_lens.tables import markdown_table

# the reading (every number and sentence about a result) is in studies.reading: this script
# only places it, with the headings, prose and figures, in the pages
from studies.exploratory.config import PROTOCOL_MODELS
from studies.reading import (
    k_sweep_table,
    atlas_roles_sentence,
    confirmatory_markdown,
    confirmatory_sentences,
    exploratory_markdown,
    exploratory_sentences,
    exploratory_table,
    headline,
    model_sentence,
    verdict_legend,
    verdict_table,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "figures" / "results"
BENCHMARKS = ROOT / "figures" / "benchmarks"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
                   re.S)
LINK = re.compile(r"(\]\()(?P<target>[^)\s#]*)(?P<anchor>#[^)\s]*)?(\))")


def pages() -> list[Path]:
    """The README and every page of docs/ (a page without blocks is left as it is)."""
    return [README, *sorted(DOCS.glob("*.md"))]


# --------------------------------------------------------------------------- README.md


def quickstart() -> str:
    code = (ROOT / "examples" / "quickstart.py").read_text().rstrip("\n")
    return f"```python\n{code}\n```\n\n([`examples/quickstart.py`](examples/quickstart.py); the tests run it.)\n"


def _records() -> tuple[dict, dict]:
    """``run.json``'s exploratory models and confirmatory records (empty where not run yet)."""
    record = RESULTS / "run.json"
    data = json.loads(record.read_text()) if record.exists() else {}
    return data.get("models", {}), data.get("confirmatory", {})


def headline_block() -> str:
    models, records = _records()
    exploratory = exploratory_table(RESULTS / "summary.csv", models) if models else None
    empty_path = RESULTS / "context_use" / "empty_answers.json"
    empty = json.loads(empty_path.read_text()) if empty_path.exists() else None
    fresh_path = RESULTS / "confirm" / "freshness.json"
    fresh = json.loads(fresh_path.read_text()) if fresh_path.exists() else None
    return "\n".join(headline(records, exploratory, empty, fresh)) + "\n"


def context_use_verdict() -> str:
    """The README's lead: the context-use study's verdict, read off its report."""
    from studies.reading import context_use_lines

    path = RESULTS / "context_use" / "report.json"
    return "\n".join(context_use_lines(json.loads(path.read_text()) if path.exists() else None)) + "\n"


def context_use() -> str:
    """docs/results.md: the context-use study's report (without its title) and its figures."""
    path = RESULTS / "context_use" / "report.md"
    if not path.exists():
        return ("No results yet: `python -m studies.context_use.run --model MODEL`, then "
                "`python -m studies.context_use.report`.\n")
    body = path.read_text().split("\n", 2)[2].strip("\n").replace("\n## ", "\n### ")
    figs = [f"![{png.stem}](figures/{png.name})" for png in sorted((ROOT / "figures").glob("task_scan_*.png"))]
    return (f"The plan: [`figures/results/context_use/plan.md`](figures/results/context_use/plan.md), and its "
            "amendments, each committed on its own before the scans it changes: "
            "[`amendment_1.md`](figures/results/context_use/amendment_1.md) (Qwen2.5's head scans by attribution "
            "patching, checked against the exact scan) and "
            "[`amendment_2.md`](figures/results/context_use/amendment_2.md) (those checks on every task, the "
            "rule for reading them per task, and where an item whose competitors share a first token is scored). "
            "Every number "
            "below is recomputed from the committed per-item outputs by `python -m studies.context_use.report`.\n\n"
            + body + "\n" + ("\n" + "\n\n".join(figs) + "\n" if figs else ""))


def verdicts() -> str:
    _, records = _records()
    table = verdict_table(records)
    if table.empty:
        return "No confirmatory test has finished yet: `make confirm` runs it.\n"
    return (markdown_table(table) + "\n" + verdict_legend(records) + " Every control, arm, answer kind and the "
            "exploratory run: [docs/results.md](docs/results.md).\n")


# --------------------------------------------------------------------------- docs/results.md


def empty_answers() -> str:
    """The table :mod:`studies.context_use.empty_answers` wrote (without its title) and its figure."""
    path = RESULTS / "context_use" / "empty_answers.md"
    if not path.exists():
        return "Not computed yet: `python -m studies.context_use.empty_answers`.\n"
    body = path.read_text().split("\n", 2)[2].strip("\n")
    return (body + "\n\n![Δcorrect against Δempty per condition](figures/empty_vs_correct.png)\n\n"
            "(`python -m studies.context_use.empty_answers`, from the committed outputs of the confirmatory test.)\n")


def confirmatory() -> str:
    _, records = _records()
    if not records:
        return "No confirmatory test yet: `make confirm` runs it.\n"
    table, status = confirmatory_markdown(records)
    reading = confirmatory_sentences(records)
    lines = ["`make confirm` (`python -m studies.confirm`, resuming from the committed outputs): per model a plan "
             "(endpoints, test, correction, controls, verdict rule) written and "
             "hashed before any of its results existed, on a test seed no other study used (a study's models share it; "
             "`figures/results/test_seeds.json` closes a study when it draws its first item, and a plan fixed after "
             "that is named among its deviations); 19 uniform and 6 "
             "layer-matched random-K controls trained like PEAR on the primary endpoints. Verdicts: Holm over the "
             "model's tests, significant below 0.05; on the primary endpoints PEAR's rank among the uniform controls is "
             "Holm-adjusted over them and read as 'beyond random heads' once every control is in. Plans, deviations, "
             "arms (fixed damping, unclipped τ), answer "
             "kinds and every per-condition number: [`figures/results/README.md`](figures/results/README.md), "
             "recomputed from the per-item outputs in `figures/results/confirm/`.", "", *status, "", table.strip(), "",
             *reading, "",
             *(f"![{png.stem}](figures/results/figures/{png.name})"
               for png in sorted((RESULTS / "figures").glob("confirm_positions_*.png")))]
    return "\n".join(lines).rstrip("\n") + "\n"


def exploratory() -> str:
    models, _ = _records()
    if not (RESULTS / "summary.md").exists() or not models:
        return "No evaluation results yet: run `make results` (`python -m studies.evaluate_all`).\n"
    out = ["`make results` (`python -m studies.evaluate_all` per model, as the Makefile lists; each model's line says "
           "on which device its stages ran): greedy decoding, "
           "95% bootstrap CIs, exact McNemar test against the baseline on the same items; task sizes and prompt "
           "styles from the calibration (`pear_lens/evaluation/tasks/data/calibration.json`).", ""]
    out += [model_sentence(name, r, ROOT / "artifacts") for name, r in models.items()]
    missing = [m for m in PROTOCOL_MODELS if m not in models]
    if missing:
        out.append(f"- Not evaluated yet: {', '.join(missing)}.")
    compact = exploratory_table(RESULTS / "summary.csv", models)
    out += ["", "One row per model and task (reference budget; the per-condition table with every control and "
            "the longer budget is in [`figures/results/summary.md`](figures/results/summary.md)). Words by the "
            "confirmatory plan's rule: Holm over each model's tests, significant below 0.05; rank p = (1 + controls "
            "with Δ ≥ PEAR's) / (1 + controls).", "", exploratory_markdown(compact).strip(), "",
            *exploratory_sentences(compact), ""]
    out.append("Accuracy by gold position, one line per condition: `figures/results/summary.html`.")
    for name in models:
        for stem in (f"dev_k_{name}", f"ablation_curve_{name}", f"coefficients_{name}"):
            if (ROOT / "figures" / f"{stem}.png").exists():
                out.append(f"![{stem}](figures/{stem}.png)")
    return "\n".join(out) + "\n"


def _k_sweeps() -> list[str]:
    """Per published artifact: held-out copy loss of the top-K heads beside K random heads (ablation.csv)."""
    out = []
    order = list(PROTOCOL_MODELS)
    for csv in sorted((ROOT / "artifacts").glob("*/ablation.csv"),
                      key=lambda p: (order.index(p.parent.name) if p.parent.name in order else len(order), p)):
        out += k_sweep_table(csv)
    return out or ["No K sweep is published: K is chosen on dev items (the dev accuracy-versus-K "
                   "figures above); `pear-lens ablate RUN_DIR` draws this curve for any run."]


def k_sweep() -> str:
    """The intro and the tables, or only the sentence that says why there are none."""
    tables = _k_sweeps()
    published = any(line.startswith("**") for line in tables)
    lines = [_k_sweep_intro(), "", *tables] if published else tables
    return "\n".join(lines).rstrip("\n") + "\n"


def _k_sweep_intro() -> str:
    models, _ = _records()
    if any("protocol" in r for r in models.values()):
        return ("Held-out copy loss (nats, lower is better) after re-weighting K heads (`pear-lens ablate`), beside "
                "the dev accuracy-versus-K curves above; K for the evaluation is chosen on the dev items, not here.")
    return ("Held-out copy loss (nats, lower is better) after re-weighting K heads; K for the evaluation is chosen "
            "from this curve (`pear_lens.k_sweep.choose_k`).")


def heatmaps() -> str:
    lines = ["Δπ of every head (`python -m studies.make_figures`; top heads marked):", ""]
    lines += [f"![heatmap {name}](figures/heatmap_{name}.png)" for name in PROTOCOL_MODELS
              if (ROOT / "figures" / f"heatmap_{name}.png").exists()]
    return "\n".join(lines) + "\n"


def families() -> str:
    """The cross-family comparison of ``studies/make_figures.py``: where the top heads sit and how concentrated
    suppression is (``figures/compare_summary.csv``)."""
    import pandas as pd

    csv = ROOT / "figures" / "compare_summary.csv"
    missing = "No cross-family comparison yet: `python -m studies.make_figures` writes it.\n"
    if not csv.exists():
        return missing
    df = pd.read_csv(csv)
    if not {"top1%_share", "top1%_suppression_share", "prepend_bos"} <= set(df.columns):
        return missing
    rows = []
    for row in df.to_dict("records"):
        heads = " ".join(f"{h} ({d})" for h, d in zip(str(row["top_heads"]).split(), str(row["top_relative_depths"]).split()))
        bos = {True: "yes", False: "no"}.get(row.get("prepend_bos"), "?")
        cells = [f"{row[f'top{p}_heads']}, {row[f'top{p}_share']:.0%}, {row[f'top{p}_suppression_share']:.0%}"
                 for p in ("1%", "5%")]
        rows.append([row["model"], f"{row['n_layers']} × {row['n_heads']}", bos, heads, *cells])
    out = ["Each model's discovery run (path patching, reference settings, each on the copy task it can do). "
           "Relative depth is `layer / (n_layers − 1)`; the shares are those of the top 1 % and 5 % of heads "
           "(ranked by Δπ) in the total |Δπ| of all heads and in the positive Δπ alone (the suppression mass).", "",
           markdown_table(["model", "layers × heads", "BOS", "top-10 heads (relative depth)",
                           "top 1 %: heads, share of Σ|Δπ|, of Σ positive Δπ",
                           "top 5 %: heads, share of Σ|Δπ|, of Σ positive Δπ"], rows).rstrip("\n")]
    for stem in ("relative_depth", "concentration", "score_distributions"):
        if (ROOT / "figures" / f"{stem}.png").exists():
            out.append(f"\n![{stem}](figures/{stem}.png)")
    return "\n".join(out) + "\n"


def atlas() -> str:
    """The head atlas of ``studies/make_atlas.py`` (``figures/atlas_summary.csv``, ``figures/atlas_roles.csv``):
    how Δπ relates to known head roles in each family, and what the top suppression heads are."""
    import pandas as pd

    summary_csv, roles_csv = ROOT / "figures" / "atlas_summary.csv", ROOT / "figures" / "atlas_roles.csv"
    if not summary_csv.exists() or not roles_csv.exists():
        return "No head atlas yet: `python -m studies.make_atlas` writes it.\n"
    summary, roles = pd.read_csv(summary_csv), pd.read_csv(roles_csv)
    k = int(summary["top_k"].iloc[0])
    level = "/".join(f"{100 * v:.10g} %" for v in summary["level"].unique())
    rows = []
    for row in summary.to_dict("records"):
        prompts = (f"{int(row['n_prompts'])} of {int(row['needle_prompts'])} needle prompts copied"
                   if row["detector"] == "retrieval" and row.get("needle_prompts") == row.get("needle_prompts")
                   else f"{int(row['n_prompts'])} proxy sequences")
        shared = row["overlap_heads"] if isinstance(row["overlap_heads"], str) and row["overlap_heads"] else "—"
        overlap = row["top_k_overlap"]  # NaN where a top k would be tie-broken: pear_lens.uncertainty.TIE_RULE
        rows.append([row["model"], row["short"], row["interval"], int(overlap) if overlap == overlap else "undefined",
                     shared, prompts])
    out = ["`python -m studies.make_atlas` on each model's run folder (`pear-lens atlas artifacts/MODEL`): every "
           "head's Δπ beside six head scores (definitions and sources: `pear-lens atlas --help`, "
           "`pear_lens.atlas.DETECTORS`). "
           f"ρ is Spearman's rank correlation of Δπ with the score over all heads, with a {level} percentile bootstrap "
           f"interval; overlap counts the top-{k} Δπ heads among the detector's top {k} (for copy suppression, its "
           f"most negative). {_atlas_resampling(summary)} The retrieval score reads needle prompts the model answered "
           "by copying the needle (count in the last column). Signs: induction and retrieval scores are high for heads "
           "that copy, whose Δπ is negative (removing them hurts copying); a copy-suppression score is negative for "
           "heads that lower the logit of what they attend to.", "",
           markdown_table(["model", "detector", f"ρ with Δπ [{level} CI]", f"top-{k} overlap", "shared heads",
                           "prompts"], rows).rstrip("\n")]
    out += ["", f"What the top-{k} Δπ heads are (a role: the head is in that detector's top {k}; a retrieval head: "
            "retrieval score above 0.1, Wu et al.'s threshold):", ""]
    for model, part in roles.groupby("model", sort=False):
        out.append(f"- {model}: " + atlas_roles_sentence(part, k, summary[summary["model"] == model]))
    for stem in ["atlas_across_models", *(f"atlas_heatmaps_{m}" for m in PROTOCOL_MODELS)]:
        if (ROOT / "figures" / f"{stem}.png").exists():
            out.append(f"\n![{stem}](figures/{stem}.png)")
    return "\n".join(out) + "\n"


def _atlas_resampling(summary) -> str:
    """How the atlas's ρ intervals were drawn, one sentence from ``atlas_summary.csv``'s ``n_boot``, ``resampled``
    and ``note`` columns: B, what the replicates resampled and why anything was held fixed (naming the models
    where that differs)."""
    every = list(summary["model"].unique())

    def which(rows) -> str:
        models = list(rows["model"].unique())
        return "" if models == every else f" ({', '.join(models)})"

    boots = "/".join(str(int(b)) for b in summary["n_boot"].unique())
    drawn = "; ".join(f"{what}{which(rows)}" for what, rows in summary.groupby("resampled", sort=False))
    notes = summary.assign(note=summary["note"].astype(object).fillna("")).query("note != ''")
    why = "".join(f"; {note}{which(rows)}" for note, rows in notes.groupby("note", sort=False))
    return f"Each interval's {boots} bootstrap replicates resampled {drawn}{why}."


STABILITY = RESULTS / "stability"


def stability() -> str:
    """The ``stability`` block: ``studies/stability.py``'s summaries, one paragraph and figure per model."""
    summaries = [json.loads(p.read_text()) for p in sorted(STABILITY.glob("*/summary.json"))]
    order = list(PROTOCOL_MODELS)
    summaries.sort(key=lambda s: order.index(s["model"]) if s["model"] in order else len(order))
    if not summaries:
        return "No stability run yet: `python -m studies.stability`.\n"
    out = ["`python -m studies.stability`: the path scan of each published discovery run (same method, metric, "
           "settings and BOS) repeated on new proxy-task seeds, every prompt's values kept "
           "(`figures/results/stability/`). K is the number of heads the published artifact trained; the top-K "
           "probability is the share of seeds in whose top K a head is. Intervals: percentile bootstrap over the "
           "seed-0 sequences, resampled within each (batch, n) setting; tests: one-sample t-test of each head's "
           "per-sequence effect, Benjamini-Hochberg over all heads. Per-head tables: `figures/stability_MODEL.csv`.",
           ""]
    for s in summaries:
        k, seeds = s["k"], s["seeds"]
        probs = ", ".join(f"{h} {p:.2f}" for h, p in s["pear_top_k_probability"].items())
        seed0 = s["seed0"]
        up, down = seed0["significant_suppressors"], seed0["significant_helpers"]
        out.append(
            f"- **{s['model']}** ({s['n_heads']} heads, {len(seeds)} seeds: {', '.join(map(str, seeds))}; "
            f"{s['n_prompts_per_seed']} sequences a seed): {s['pear_heads_in_every_top_k']} of PEAR's K = {k} heads "
            f"are in the top {k} of every seed (top-{k} probability: {probs}). Heads in every seed's top {k}: "
            f"{', '.join(s['stable_heads']) or 'none'}. Top-{k} overlap between two seeds: mean "
            f"{s['mean_top_k_overlap']:.2f}, lowest {s['min_top_k_overlap']:.2f}. On seed 0, "
            f"{seed0['pear_heads_ci_excluding_zero']} of PEAR's {k} have a {seed0['level']:.0%} interval "
            f"(B = {seed0['n_boot']}) that excludes 0; at a false discovery rate of {seed0['alpha']} over all "
            f"{s['n_heads']} heads, {len(up)} differ from 0 as suppressors (Δπ > 0"
            + (f": {', '.join(up[:10])}{', ...' if len(up) > 10 else ''}" if up else "")
            + f") and {len(down)} as helpers of copying (Δπ < 0).")
    out.append("")
    for s in summaries:
        png = ROOT / "figures" / f"caterpillar_{s['model']}.png"
        if png.exists():
            out.append(f"![caterpillar_{s['model']}](figures/{png.name})")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- docs/benchmarks.md


def benchmarks() -> str:
    rows = []
    for path in sorted(BENCHMARKS.glob("*.txt")):
        # the machine-readable lines (only key=value pairs): the last line, and any other result line
        results = [f"`{line}`" for line in path.read_text().splitlines() if re.fullmatch(r"\S+=\S+( \S+=\S+)*", line)]
        # the command that wrote the file (its first line), e.g. `benchmarks/discovery.py --model NAME`
        command = path.read_text().splitlines()[0].removeprefix("# command: ").removeprefix("python ")
        if results:
            rows.append([f"`{command}`", "<br>".join(results), f"[{path.name}](figures/benchmarks/{path.name})"])
    return markdown_table(["benchmark", "results (ratios measured side by side in one run)", "full output"], rows,
                          empty="No benchmark output yet: run `make bench`.\n")


# --------------------------------------------------------------------------- docs/methods.md


def commands() -> str:
    """Every command with its arguments and options, and every registered scoring method with its options."""
    import dataclasses

    from pear_lens.commands.cli import COMMANDS, build_parser
    from pear_lens.config import attribute_docs, show
    from pear_lens.atlas import DETECTORS
    from pear_lens.mediation import METHODS

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = []
    for name, (help_text, _, _) in COMMANDS.items():
        usage, options = [f"pear-lens {name}"], []
        for action in sub.choices[name]._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:
                usage.append(action.metavar + ("..." if action.nargs in ("+", "*") else ""))
            elif action.required:
                usage.append(f"{action.option_strings[0]} {action.metavar}")
            else:
                options.append(f"`{action.option_strings[0]}`")
        rows.append([f"`{' '.join(usage)}`", help_text, ", ".join(options) or "—"])
    methods = []
    for m in METHODS.values():
        docs = attribute_docs(m.options)
        opts = [f"`--{f.name.replace('_', '-')}` ({show(f.default)}): {docs.get(f.name, '')}"
                for f in dataclasses.fields(m.options)]
        methods.append([f"`{m.name}` ({m.short})", m.description, "<br>".join(opts) or "—"])
    detectors = []
    for d in DETECTORS.values():
        docs = attribute_docs(d.options)
        opts = [f"`--{d.name}.{f.name}`".replace("_", "-") + f" ({show(f.default)}): {docs.get(f.name, '')}"
                for f in dataclasses.fields(d.options)]
        detectors.append([f"`{d.name}` ({d.short})", d.definition, d.source, "<br>".join(opts) or "—"])
    return "\n".join([
        markdown_table(["command", "what it does", "options"], rows),
        "Scoring methods (`pear-lens discover --method NAME`, `score_heads(..., method=NAME)`), each with "
        "its own options; an option of another method is an error:", "",
        markdown_table(["method", "what it computes", "options (default)"], methods),
        "Head detectors (`pear-lens atlas --detectors NAME,...`, `head_atlas(..., detectors=[NAME])`), each "
        "with its own options (`--NAME.OPTION`); an option of a detector not chosen is an error:", "",
        markdown_table(["detector", "what it measures", "source", "options (default)"], detectors)]).rstrip("\n") + "\n"


def shared_options() -> str:
    """docs/options.md: every option that more than one command takes, with its one default (and, where a command
    must differ, the default there and the reason its help states), read off the config dataclasses."""
    from pear_lens.commands.cli import COMMANDS
    from pear_lens.config import describe_options

    uses: dict[str, dict[str, list[tuple[str, dict]]]] = {}  # flag -> help -> [(command, option)]
    for name, (_, load, _) in COMMANDS.items():
        if load is None:
            continue
        for opt in describe_options(load()):
            if not opt["positional"]:
                uses.setdefault(opt["flag"], {}).setdefault(opt["help"], []).append((name, opt))
    rows = []
    for flag, meanings in sorted(uses.items()):
        if sum(len(used) for used in meanings.values()) < 2:
            continue
        helps, defaults, differs = [], [], []
        for help_text, used in meanings.items():
            who = "" if len(meanings) == 1 else ", ".join(f"`{c}`" for c, _ in used) + ": "
            helps.append(who + help_text.replace("|", "\\|"))
            plain = sorted({o["default"] for _, o in used if o["reason"] is None}, key=str)
            # more than one is shown as it is; tests/test_device_options.py refuses it (one meaning, one default)
            defaults.append(who + (" or ".join(f"`{d}`" for d in plain) + (" (UNEXPLAINED)" if len(plain) > 1 else "")
                                   or "—"))
            differs += [f"`{c}`: `{o['default']}`, because {o['reason']}" for c, o in used if o["reason"] is not None]
        commands = ", ".join(f"`{c}`" for used in meanings.values() for c, _ in used)
        rows.append([f"`{flag}`", commands, "<br>".join(helps), "<br>".join(defaults), "<br>".join(differs) or "—"])
    return markdown_table(["option", "commands", "meaning", "default", "where a command differs, and why"],
                          rows).rstrip("\n") + "\n"


# --------------------------------------------------------------------------- placing the blocks


GENERATORS: dict[str, Callable[[], str]] = {
    "context-use-verdict": context_use_verdict, "context-use": context_use,
    "headline": headline_block, "verdicts": verdicts, "quickstart": quickstart,
    "confirmatory": confirmatory, "exploratory": exploratory, "k-sweep": k_sweep, "heatmaps": heatmaps,
    "families": families, "atlas": atlas, "stability": stability,
    "benchmarks": benchmarks, "commands": commands, "empty-answers": empty_answers,
    "shared-options": shared_options,
}


def relink(text: str, page: Path) -> str:
    """``text``'s Markdown links, written relative to the repository root, made relative to ``page``'s folder
    (a web address, an anchor of the page itself and an absolute path are left as they are)."""
    here = page.parent

    def fix(m: re.Match) -> str:
        target = m.group("target")
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)
        relative = Path(os.path.relpath(ROOT / target, here)).as_posix()
        return m.group(1) + relative + (m.group("anchor") or "") + m.group(4)

    return LINK.sub(fix, text)


def render(text: str, page: Path = README) -> str:
    """``text`` (the page ``page``) with every generated block rewritten."""
    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"{page.relative_to(ROOT)}: block {name!r} has no generator in {Path(__file__).name}")
        return m.group(1) + relink(GENERATORS[name](), page) + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that every page is up to date")
    args = parser.parse_args(argv)
    placed: dict[str, list[str]] = {}
    stale: dict[Path, str] = {}
    for page in pages():  # every page rendered before any is written: a failing generator leaves all as they were
        current = page.read_text()
        for m in BLOCK.finditer(current):
            placed.setdefault(m.group("name"), []).append(str(page.relative_to(ROOT)))
        new = render(current, page)
        if new != current:
            stale[page] = new
    unplaced = [name for name in GENERATORS if name not in placed]
    twice = {name: where for name, where in placed.items() if len(where) > 1}
    if unplaced or twice:  # a block nobody places is a result nobody sees; one placed twice says it twice
        print(f"generated blocks placed in no page: {unplaced or 'none'}; in more than one: {twice or 'none'}",
              file=sys.stderr)
        return 1
    if args.check:
        if stale:
            names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
            print(f"out of date: {names}: run `python -m studies.update_readme`", file=sys.stderr)
            return 1
        return 0
    for page, new in stale.items():
        tmp = page.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(page)
        print(f"wrote {page.relative_to(ROOT)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
