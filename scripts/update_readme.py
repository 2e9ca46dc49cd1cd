"""Fill the README's generated blocks from files that scripts wrote; never from typed numbers.

Blocks (``<!-- BEGIN GENERATED: NAME -->`` ... ``<!-- END GENERATED: NAME -->``):

- ``quickstart``: ``examples/quickstart.py`` (tests run it, on a tiny model, so it cannot rot);
- ``results``: ``figures/results/`` from ``scripts/evaluate_all.py`` (table, K and how it was chosen,
  accuracy-by-position figures), the benchmark lines in ``figures/benchmarks/`` and the paper figures of
  ``scripts/make_figures.py``.

    python scripts/update_readme.py          # rewrite README.md
    python scripts/update_readme.py --check  # exit 1 if README.md is not what the files say (a test runs this)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

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
    import pandas as pd

    table, record = RESULTS / "summary.md", RESULTS / "run.json"
    if not table.exists() or not record.exists():
        return ["No evaluation results yet: run `.venv/bin/python scripts/evaluate_all.py`."]
    models = json.loads(record.read_text())["models"]
    out = ["`scripts/evaluate_all.py` on this machine's 2 CPU cores: greedy decoding, 95% bootstrap CIs, exact "
           "McNemar test against the baseline on the same items; task sizes and prompt styles from the calibration "
           "(`pear_lens/evaluation/data/calibration.json`).", ""]
    for name, r in models.items():
        control = (f"{r['control_steps']} training steps each" if r["control_steps"] else "the same training budget as PEAR")
        out.append(f"- **{name}** ({_timing(r)}; tasks: {', '.join(r['tasks'])}; n = {r['n']} "
                   f"items per task and condition): K = {r['k']} ({r['k_chosen']}); heads {', '.join(r['heads'])}; "
                   f"τ {', '.join(f'{t:.3f}' for t in r['tau'])}. Random-K controls: {len(r['control_seeds'])} seeds, "
                   f"{control}" + (", drawn from all heads (K is more than half of them, so they may share PEAR heads)"
                   if r.get("controls_avoid_pear_heads") is False else ", none of them a PEAR head")
                   + f". Artifact: [`artifacts/{name}`](artifacts/{name}).")
        ablation = ROOT / "artifacts" / name / "ablation.csv"
        if ablation.exists():
            grid = pd.read_csv(ablation)["k"]
            if r["k"] == grid.max():
                out[-1] += (f" K is the largest value the ablation tried ({grid.max()}): the copy-loss gain had not "
                            "levelled off, so more heads might help further on the proxy task.")
    missing = [m for m in ("smollm2-135m-instruct", "gemma-3-270m") if m not in models]
    if missing:
        out.append(f"- Not evaluated yet: {', '.join(missing)}.")
    out += ["", table.read_text().strip(), "", *_verdicts(RESULTS / "summary.csv"), ""]
    for png in sorted((RESULTS / "figures").glob("*.png")):
        out.append(f"![{png.stem}](figures/results/figures/{png.name})")
    for name in models:
        for stem in (f"ablation_curve_{name}", f"coefficients_{name}"):
            if (ROOT / "figures" / f"{stem}.png").exists():
                out.append(f"![{stem}](figures/{stem}.png)")
    return out


def _timing(record: dict) -> str:
    """The measured minutes of each evaluate_all stage; stages reused from an earlier run are named as such."""
    seconds = record["seconds"]
    stages = {"discovery": seconds.get("discovery"), "ablation": seconds.get("ablation"),
              "PEAR training": seconds.get("train_pear"),
              "random-K training": sum(v for k, v in seconds.items() if k.startswith("train_random_")) or None,
              **{f"{task} evaluation": seconds.get(f"eval_{task}") for task in record["tasks"]}}
    timed = [f"{stage} {v / 60:.0f}" for stage, v in stages.items() if v is not None]
    reused = [stage for stage, v in stages.items() if v is None]
    return (f"{record['total_seconds'] / 60:.0f} min measured: " + ", ".join(timed)
            + (f"; {', '.join(reused)} reused from an earlier run, not timed" if reused else ""))


def _verdicts(summary_csv: Path, alpha: float = 0.05) -> list[str]:
    """One sentence per model and task, read off the summary table: PEAR against the baseline (McNemar),
    and against the spread of the random-K controls (does re-weighting *these* heads matter?)."""
    import pandas as pd

    if not summary_csv.exists():
        return []
    df = pd.read_csv(summary_csv)
    df = df[df["gold_position"].astype(str) == "all"]
    out = [f"What the table says (PEAR against the baseline at p < {alpha}, and against the random-K controls):", ""]
    for (model, task), g in df.groupby(["model", "task"], sort=False):
        pear = g[g["condition"] == "PEAR"]
        controls = g[g["condition"].str.startswith("random-K")]["delta_vs_baseline"] * 100
        if pear.empty:
            continue
        delta, p = float(pear["delta_vs_baseline"].iloc[0]) * 100, float(pear["p_vs_baseline"].iloc[0])
        if p >= alpha:
            effect = "no significant change" + (" (knowledge kept)" if task == "closed-book" else "")
        elif task == "closed-book":
            effect = "knowledge lost" if delta < 0 else "closed-book accuracy up"
        else:
            effect = "PEAR helps" if delta > 0 else "PEAR hurts"
        sentence = f"- {model}, {task}: {effect}, {delta:+.1f} points (p = {p:.2g})"
        if len(controls):
            lo, hi = controls.min(), controls.max()
            where = ("above every random-K control" if delta > hi else "below every random-K control" if delta < lo
                     else "within the random-K controls' range")
            sentence += f"; {where} ({lo:+.1f} to {hi:+.1f})"
        out.append(sentence + ".")
    return out


def _ablations() -> list[str]:
    """Per published artifact: held-out copy loss of the top-K heads beside K random heads (ablation.csv)."""
    import pandas as pd

    out = []
    order = ["smollm2-135m-instruct", "gemma-3-270m"]
    for csv in sorted((ROOT / "artifacts").glob("*/ablation.csv"),
                      key=lambda p: (order.index(p.parent.name) if p.parent.name in order else len(order), p)):
        df = pd.read_csv(csv)
        base = float(df.loc[df["selection"] == "none", "copy_loss"].iloc[0])
        top = df[df["selection"] == "top"].set_index("k")["copy_loss"]
        rand = df[df["selection"] == "random"].groupby("k")["copy_loss"].mean()
        steps = "/".join(str(v) for v in sorted(df.loc[df["k"] > 0, "steps"].unique()))
        out += [f"**{csv.parent.name}** (`pear-lens ablate`, {steps} training steps per run, "
                f"{df['n_eval'].iloc[0]} held-out sequences; original model: {base:.3f}):", "",
                "| K | " + " | ".join(str(k) for k in top.index) + " |",
                "|---|" + "---|" * len(top),
                "| top-K heads | " + " | ".join(f"{v:.3f}" for v in top) + " |",
                f"| random K heads (mean of {df.loc[df['selection'] == 'random', 'seed'].nunique()}) | " + " | ".join(f"{rand.get(k, float('nan')):.3f}" for k in top.index) + " |", ""]
    return out or ["No ablation yet."]


def results() -> str:
    lines = ["## Results", "", "### Evaluation on retrieval tasks", "", *_evaluation(), "",
             "### How many heads: the ablation curve", "",
             "Held-out copy loss (nats, lower is better) after re-weighting K heads; K for the evaluation is chosen "
             "from this curve (`pear_lens.ablation.choose_k`).", "", *_ablations(), "",
             "### Speed", "", *_benchmarks(), "",
             "### Suppression heads", "",
             "Δπ of every head (`scripts/make_figures.py`; top heads marked):", ""]
    for name in ("smollm2-135m-instruct", "gemma-3-270m"):
        if (ROOT / "figures" / f"heatmap_{name}.png").exists():
            lines.append(f"![heatmap {name}](figures/heatmap_{name}.png)")
    return "\n".join(lines).rstrip("\n") + "\n"


GENERATORS = {"quickstart": quickstart, "results": results}


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
