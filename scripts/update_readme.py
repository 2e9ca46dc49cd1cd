"""Fill the README's generated blocks from files that scripts wrote; never from typed numbers.

Blocks (``<!-- BEGIN GENERATED: NAME -->`` ... ``<!-- END GENERATED: NAME -->``):

- ``quickstart``: ``examples/quickstart.py`` (tests run it, on a tiny model, so it cannot rot);
- ``commands``: the command table and the scoring-method table, from the parser that the config
  dataclasses generate (``pear_lens.commands.cli``) and the method registry (``pear_lens.mediation.METHODS``);
- ``stability``: ``figures/results/stability/*/summary.json`` from ``scripts/stability.py`` (seeds, top-K
  probability, intervals) and its caterpillar figures;
- ``results``: ``figures/results/`` from ``scripts/evaluate_all.py`` (table, K and how it was chosen,
  accuracy-by-position figures), the benchmark lines in ``figures/benchmarks/``, the paper figures of
  ``scripts/make_figures.py`` and the head atlas of ``scripts/make_atlas.py``.

    python scripts/update_readme.py          # rewrite README.md
    python scripts/update_readme.py --check  # exit 1 if README.md is not what the files say (a test runs this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# the reading (every number and sentence about a result) is in pear_lens.evaluation.reading: this script
# only places it, with the headings, prose and figures, in the README
from pear_lens.evaluation.protocol_config import PROTOCOL_MODELS
from pear_lens.evaluation.reading import (
    k_sweep_table,
    atlas_roles_sentence,
    confirmatory_markdown,
    confirmatory_sentences,
    exploratory_markdown,
    exploratory_sentences,
    exploratory_table,
    model_sentence,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "figures" / "results"
BENCHMARKS = ROOT / "figures" / "benchmarks"
BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED: (?P=name) -->)",
                   re.S)


def quickstart() -> str:
    code = (ROOT / "examples" / "quickstart.py").read_text().rstrip("\n")
    return f"```python\n{code}\n```\n\n(`examples/quickstart.py`; the tests run it.)\n"


def _benchmarks() -> list[str]:
    lines = []
    for path in sorted(BENCHMARKS.glob("*.txt")):
        # the machine-readable lines (only key=value pairs): the last line, and any other result line
        results = [f"`{line}`" for line in path.read_text().splitlines() if re.fullmatch(r"\S+=\S+( \S+=\S+)*", line)]
        # the command that wrote the file (its first line), e.g. `benchmarks/discovery.py --model NAME`
        command = path.read_text().splitlines()[0].removeprefix("# command: ").removeprefix("python ")
        if results:
            lines.append(f"| `{command}` | {'<br>'.join(results)} | [{path.name}](figures/benchmarks/{path.name}) |")
    if not lines:
        return ["No benchmark output yet: run `make bench`."]
    return ["| benchmark | results (ratios measured side by side in one run) | full output |",
            "| --- | --- | --- |", *lines]


def _evaluation() -> list[str]:
    table, record = RESULTS / "summary.md", RESULTS / "run.json"
    if not table.exists() or not record.exists():
        return ["No evaluation results yet: run `.venv/bin/python scripts/evaluate_all.py`."]
    models = json.loads(record.read_text())["models"]
    out = [*_confirmatory(), "### Exploratory run (test seed 0, before the confirmatory plan)", "",
           "`make results` (`scripts/evaluate_all.py` per model, as the Makefile lists; each model's line says on "
           "which device its stages ran): greedy decoding, "
           "95% bootstrap CIs, exact McNemar test against the baseline on the same items; task sizes and prompt "
           "styles from the calibration (`pear_lens/evaluation/data/calibration.json`).", ""]
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
    return out


def _confirmatory() -> list[str]:
    record = RESULTS / "run.json"
    records = json.loads(record.read_text()).get("confirmatory", {}) if record.exists() else {}
    if not records:
        return []
    table, status = confirmatory_markdown(records)
    reading = confirmatory_sentences(records)
    return ["### Confirmatory test (plans fixed in advance, fresh test items)", "",
            "`make confirm` (`scripts/confirm.py`, resuming from the committed outputs): per model a plan (endpoints, test, correction, controls, verdict rule) written and "
            "hashed before any of its results existed, on a test seed no other study used (a study's models share it; "
            "`figures/results/test_seeds.json` closes a study when it draws its first item, and a plan fixed after "
            "that is named among its deviations); 19 uniform and 6 "
            "layer-matched random-K controls trained like PEAR on the primary endpoints. Verdicts: Holm over the "
            "model's tests, significant below 0.05; on the primary endpoints PEAR's rank among the uniform controls is "
            "Holm-adjusted over them and read as 'beyond random heads' once every control is in. Plans, deviations, arms (fixed damping, unclipped τ), answer "
            "kinds and every per-condition number: [`figures/results/README.md`](figures/results/README.md), "
            "recomputed from the per-item outputs in `figures/results/confirm/`.", "", *status, "", table.strip(), "",
            *reading, "",
            *(f"![{png.stem}](figures/results/figures/{png.name})"
              for png in sorted((RESULTS / "figures").glob("confirm_positions_*.png"))), ""]


STABILITY = RESULTS / "stability"


def stability() -> str:
    """The ``stability`` block: ``scripts/stability.py``'s summaries, one paragraph and figure per model."""
    summaries = [json.loads(p.read_text()) for p in sorted(STABILITY.glob("*/summary.json"))]
    order = list(PROTOCOL_MODELS)
    summaries.sort(key=lambda s: order.index(s["model"]) if s["model"] in order else len(order))
    if not summaries:
        return "No stability run yet: `python scripts/stability.py`.\n"
    out = ["`python scripts/stability.py`: the path scan of each published discovery run (same method, metric, "
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


def _k_sweeps() -> list[str]:
    """Per published artifact: held-out copy loss of the top-K heads beside K random heads (ablation.csv)."""
    out = []
    order = list(PROTOCOL_MODELS)
    for csv in sorted((ROOT / "artifacts").glob("*/ablation.csv"),
                      key=lambda p: (order.index(p.parent.name) if p.parent.name in order else len(order), p)):
        out += k_sweep_table(csv)
    return out or ["No K sweep is published: K is chosen on dev items (the dev accuracy-versus-K "
                   "figures above); `pear-lens ablate RUN_DIR` draws this curve for any run."]


def _k_sweep_section() -> list[str]:
    """The intro and the tables, or only the sentence that says why there are none."""
    tables = _k_sweeps()
    published = any(line.startswith("**") for line in tables)
    return [_k_sweep_intro(), "", *tables] if published else tables


def _k_sweep_intro() -> str:
    record = RESULTS / "run.json"
    models = json.loads(record.read_text())["models"] if record.exists() else {}
    if any("protocol" in r for r in models.values()):
        return ("Held-out copy loss (nats, lower is better) after re-weighting K heads (`pear-lens ablate`), beside "
                "the dev accuracy-versus-K curves above; K for the evaluation is chosen on the dev items, not here.")
    return ("Held-out copy loss (nats, lower is better) after re-weighting K heads; K for the evaluation is chosen "
            "from this curve (`pear_lens.k_sweep.choose_k`).")


def results() -> str:
    lines = ["## Results", "", *_evaluation(), "",
             "### How many heads: the K sweep", "",
             *_k_sweep_section(), "",
             "### Speed", "", *_benchmarks(), "",
             "### Suppression heads", "",
             "Δπ of every head (`scripts/make_figures.py`; top heads marked):", ""]
    for name in PROTOCOL_MODELS:
        if (ROOT / "figures" / f"heatmap_{name}.png").exists():
            lines.append(f"![heatmap {name}](figures/heatmap_{name}.png)")
    lines += ["", *_families(), "", *_atlas()]
    return "\n".join(lines).rstrip("\n") + "\n"


def _atlas() -> list[str]:
    """The head atlas of ``scripts/make_atlas.py`` (``figures/atlas_summary.csv``, ``figures/atlas_roles.csv``):
    how Δπ relates to known head roles in each family, and what the top suppression heads are."""
    import pandas as pd

    summary_csv, roles_csv = ROOT / "figures" / "atlas_summary.csv", ROOT / "figures" / "atlas_roles.csv"
    if not summary_csv.exists() or not roles_csv.exists():
        return []
    summary, roles = pd.read_csv(summary_csv), pd.read_csv(roles_csv)
    k = int(summary["top_k"].iloc[0])
    level = "/".join(f"{100 * v:.10g} %" for v in summary["level"].unique())
    out = ["### Head atlas: what the suppression heads are", "",
           "`scripts/make_atlas.py` on each model's run folder (`pear-lens atlas artifacts/MODEL`): every head's Δπ "
           "beside six head scores (definitions and sources: `pear-lens atlas --help`, `pear_lens.atlas.DETECTORS`). "
           f"ρ is Spearman's rank correlation of Δπ with the score over all heads, with a {level} percentile bootstrap "
           f"interval; overlap counts the top-{k} Δπ heads among the detector's top {k} (for copy suppression, its "
           f"most negative). {_atlas_resampling(summary)} The retrieval score reads needle prompts the model answered "
           "by copying the needle (count in the last column). Signs: induction and retrieval scores are high for heads "
           "that copy, whose Δπ is negative (removing them hurts copying); a copy-suppression score is negative for "
           "heads that lower the logit of what they attend to.", "",
           f"| model | detector | ρ with Δπ [{level} CI] | top-{k} overlap | shared heads | prompts |",
           "| --- | --- | --- | --- | --- | --- |"]
    for row in summary.to_dict("records"):
        prompts = (f"{int(row['n_prompts'])} of {int(row['needle_prompts'])} needle prompts copied"
                   if row["detector"] == "retrieval" and row.get("needle_prompts") == row.get("needle_prompts")
                   else f"{int(row['n_prompts'])} proxy sequences")
        shared = row["overlap_heads"] if isinstance(row["overlap_heads"], str) and row["overlap_heads"] else "—"
        out.append(f"| {row['model']} | {row['short']} | {row['interval']} | {int(row['top_k_overlap'])} | {shared} "
                   f"| {prompts} |")
    out += ["", f"What the top-{k} Δπ heads are (a role: the head is in that detector's top {k}; a retrieval head: "
            "retrieval score above 0.1, Wu et al.'s threshold):", ""]
    for model, part in roles.groupby("model", sort=False):
        out.append(f"- {model}: " + atlas_roles_sentence(part, k, summary[summary["model"] == model]))
    for stem in ["atlas_across_models", *(f"atlas_heatmaps_{m}" for m in PROTOCOL_MODELS)]:
        if (ROOT / "figures" / f"{stem}.png").exists():
            out.append(f"\n![{stem}](figures/{stem}.png)")
    return out


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
    notes = summary.assign(note=summary["note"].fillna("")).query("note != ''")
    why = "".join(f"; {note}{which(rows)}" for note, rows in notes.groupby("note", sort=False))
    return f"Each interval's {boots} bootstrap replicates resampled {drawn}{why}."


def _families() -> list[str]:
    """The cross-family comparison of ``scripts/make_figures.py``: where the top heads sit and how concentrated
    suppression is (``figures/compare_summary.csv``)."""
    import pandas as pd

    csv = ROOT / "figures" / "compare_summary.csv"
    if not csv.exists():
        return []
    df = pd.read_csv(csv)
    if not {"top1%_share", "top1%_suppression_share", "prepend_bos"} <= set(df.columns):
        return []
    out = ["### Across families", "",
           "Each model's discovery run (path patching, reference settings, each on the copy task it can do). "
           "Relative depth is `layer / (n_layers − 1)`; the shares are those of the top 1 % and 5 % of heads "
           "(ranked by Δπ) in the total |Δπ| of all heads and in the positive Δπ alone (the suppression mass).", "",
           "| model | layers × heads | BOS | top-10 heads (relative depth) | top 1 %: heads, share of Σ\\|Δπ\\|, "
           "of Σ positive Δπ | top 5 %: heads, share of Σ\\|Δπ\\|, of Σ positive Δπ |",
           "|---|---|---|---|---|---|"]
    for row in df.to_dict("records"):
        heads = " ".join(f"{h} ({d})" for h, d in zip(str(row["top_heads"]).split(), str(row["top_relative_depths"]).split()))
        bos = {True: "yes", False: "no"}.get(row.get("prepend_bos"), "?")
        cells = [f"{row[f'top{p}_heads']}, {row[f'top{p}_share']:.0%}, {row[f'top{p}_suppression_share']:.0%}"
                 for p in ("1%", "5%")]
        out.append(f"| {row['model']} | {row['n_layers']} × {row['n_heads']} | {bos} | {heads} | {cells[0]} | {cells[1]} |")
    for stem in ("relative_depth", "concentration", "score_distributions"):
        if (ROOT / "figures" / f"{stem}.png").exists():
            out.append(f"\n![{stem}](figures/{stem}.png)")
    return out



def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def commands() -> str:
    """Every command with its arguments and options, and every registered scoring method with its options."""
    import dataclasses

    from pear_lens.commands.cli import COMMANDS, build_parser
    from pear_lens.config import attribute_docs, show
    from pear_lens.atlas import DETECTORS
    from pear_lens.mediation import METHODS

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    rows = ["| command | what it does | options |", "| --- | --- | --- |"]
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
        rows.append(f"| `{_cell(' '.join(usage))}` | {_cell(help_text)} | {', '.join(options) or '—'} |")
    rows += ["", "Scoring methods (`pear-lens discover --method NAME`, `score_heads(..., method=NAME)`), each with "
             "its own options; an option of another method is an error:", "",
             "| method | what it computes | options (default) |", "| --- | --- | --- |"]
    for m in METHODS.values():
        docs = attribute_docs(m.options)
        opts = [f"`--{f.name.replace('_', '-')}` ({show(f.default)}): {docs.get(f.name, '')}"
                for f in dataclasses.fields(m.options)]
        rows.append(f"| `{m.name}` ({m.short}) | {_cell(m.description)} | {_cell('<br>'.join(opts)) or '—'} |")
    rows += ["", "Head detectors (`pear-lens atlas --detectors NAME,...`, `head_atlas(..., detectors=[NAME])`), each "
             "with its own options (`--NAME.OPTION`); an option of a detector not chosen is an error:", "",
             "| detector | what it measures | source | options (default) |", "| --- | --- | --- | --- |"]
    for d in DETECTORS.values():
        docs = attribute_docs(d.options)
        opts = [f"`--{d.name}.{f.name}`".replace("_", "-") + f" ({show(f.default)}): {docs.get(f.name, '')}"
                for f in dataclasses.fields(d.options)]
        rows.append(f"| `{d.name}` ({d.short}) | {_cell(d.definition)} | {_cell(d.source)} | "
                    f"{_cell('<br>'.join(opts)) or '—'} |")
    return "\n".join(rows) + "\n"


GENERATORS = {"quickstart": quickstart, "results": results, "stability": stability, "commands": commands}


def render(text: str) -> str:
    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in GENERATORS:
            raise SystemExit(f"README block {name!r} has no generator in {Path(__file__).name}")
        return m.group(1) + GENERATORS[name]() + m.group(4)

    return BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    current = README.read_text()
    new = render(current)
    if args.check:
        if new != current:
            print("README.md is out of date: run `python scripts/update_readme.py`", file=sys.stderr)
            return 1
        return 0
    if new != current:
        tmp = README.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(README)
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
