"""The ``pear-lens`` command line, built from the same config dataclasses as the API."""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from pear_lens.config import add_arguments, from_namespace
from pear_lens.errors import ManyProblems, PearLensError, debug_enabled, one_line, quiet_when_gone, safe_output
from pear_lens.output_lock import writing
from pear_lens.signals import exit_code, interruptions_raised


def _models(_: None) -> None:
    from pear_lens.models.registry import list_models

    rows = list_models()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "installed" if r["installed"] else "not installed"
        print(f"{r['name']:<{width}}  {state:<13}  {r['description']}")
        if not r["installed"]:
            print(f"{'':<{width}}  install with: {r['install']}")


def _discover(config: Any) -> None:
    from pear_lens.commands.discover import discover

    scores = discover(config)
    k = min(5, scores.scores.numel())
    tied = scores.why_top_k_undefined(k)
    top = f"undefined ({tied})" if tied else ", ".join(f"L{l}.H{h}" for l, h in scores.top_k(k))
    print(f"scored {scores.scores.numel()} heads of {scores.model} in {scores.extra['seconds']:.1f} s; top: {top}")
    if config.seeds:
        import json

        from pear_lens.constants import STABILITY_JSON

        stability = json.loads((config.out / STABILITY_JSON).read_text(encoding="utf-8"))
        mean = stability["mean_top_k_overlap"]
        mean = ("undefined (a seed's top k is picked by ties, not by its scores)" if mean is None or mean != mean
                else f"{mean:.2f}")
        print(f"over seeds {', '.join(map(str, config.seeds))}: mean top-{stability['k']} overlap "
              f"{mean}; in every top {stability['k']}: "
              f"{', '.join(stability['heads_in_every_top_k']) or 'none'}")
    print(f"wrote {config.out}")


def _compare(config: Any) -> None:
    from pear_lens.commands.compare import compare_runs

    pairs = compare_runs(config)
    print(f"compared {len(config.run_dirs)} runs ({len(pairs)} pairs); wrote {config.out}")


def _eval(config: Any) -> None:
    from pear_lens.commands.eval import run_eval

    result = run_eval(config)
    for row in result.summary[result.summary["gold_position"] == "all"].itertuples():
        p = "" if row.p_vs_baseline != row.p_vs_baseline else f", McNemar p = {row.p_vs_baseline:.3g} vs baseline"
        print(f"{row.task} · {row.condition}: {row.accuracy:.1%} [{row.ci_low:.1%}, {row.ci_high:.1%}] "
              f"on {row.n} items{p}")
    print(f"wrote {config.out}")


def _eval_report(config: Any) -> None:
    from pear_lens.commands.eval_report import write_report

    write_report(config)
    print(f"wrote {config.out}")


def _train(config: Any) -> None:
    from pear_lens.commands.train import train_run

    artifact, result = train_run(config)
    taus = ", ".join(f"L{l}.H{h}={t:.3f}" for (l, h), t in artifact.coefficients().items())
    print(f"trained τ for {len(artifact.heads)} heads of {result.model} in {result.seconds:.1f} s; "
          f"copy loss {result.loss_curve[0]:.4f} -> {result.loss_curve[-1]:.4f}")
    print(f"τ: {taus}")
    print(f"wrote {config.run_dir}/{{pear.json, coefficients.safetensors, training_log.csv, training.html}}")


def _apply(config: Any) -> None:
    from pear_lens.commands.apply import apply

    note = apply(config)
    v = note["verification"]
    print(f"folded τ of {len(note['changed'])} heads into {note['base_model']['name']}; largest logit difference "
          f"to the hooked bridge {v['vs_hooked_bridge']:.2g}, to the unfolded model {v['vs_unfolded_hf']:.2g}")
    print(f"wrote {config.out} (load it with AutoModelForCausalLM.from_pretrained({str(config.out)!r}))")


def _ablate(config: Any) -> None:
    from pear_lens.commands.ablate import ablate

    df = ablate(config)
    summary = df.groupby(["selection", "k"])[["copy_accuracy", "copy_loss"]].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {config.run_dir}/{{ablation.csv, ablation.html, ablation.png/.pdf/.svg}} ({df['seconds'].sum():.0f} s of training)")


def _demo(config: Any) -> None:
    from pear_lens.commands.demo import demo

    demo(config)


def _atlas(config: Any) -> None:
    from pear_lens.commands.atlas import atlas

    result = atlas(config)
    stats = result.statistics(config.report_k, config.n_boot).set_index("detector")
    print(f"scored {result.delta_pi.scores.numel()} heads of {result.model} with {len(result.names)} detectors in "
          f"{result.extra['seconds']:.1f} s")
    for name in result.names:
        s = stats.loc[name]
        print(f"  {name}: Spearman ρ with Δπ {s['interval']}; {s['overlap']}")
    print(f"wrote {config.run_dir}/{{head_atlas.csv, head_atlas.json, head_atlas_prompts.safetensors, "
          f"atlas_heatmaps, atlas_scatter}}")


def _rescore(config: Any) -> None:
    from pear_lens.commands.rescore import rescore_run

    added = rescore_run(config)
    r = added.extra["rescored"]
    print(f"rescanned {added.scores.numel()} heads of {added.model} on {added.per_prompt.shape[0]} prompts in "
          f"{r['seconds']:.1f} s; largest difference from the run's scores {r['max_abs_difference']:.2g} (largest "
          f"|score| {r['largest_abs_score']:.3g})")
    print(f"wrote {config.run_dir}/scores/ (the run's scores with every prompt's values)")


def _estimate(config: Any) -> None:
    from pear_lens.commands.estimate import estimate

    result, advice = estimate(config)
    print(result)
    if advice is not None:
        print(advice)


def _config_command(cls_path: str) -> Callable[[], type]:
    def load() -> type:
        module, name = cls_path.rsplit(":", 1)
        return getattr(__import__(module, fromlist=[name]), name)
    return load


# name -> (help, config class loader or None, handler: what runs the command on its config and reports it)
COMMANDS: dict[str, tuple[str, Callable[[], type] | None, Callable[[Any], None]]] = {
    "models": ("list the models pear_lens knows and whether each is installed", None, _models),
    "discover": ("score every attention head on the copy proxy task (or your own --task file) and write a run folder",
                 _config_command("pear_lens.commands.discover:DiscoverConfig"), _discover),
    "train": ("learn one coefficient τ per top head of a discovery run and save the artifact in it",
              _config_command("pear_lens.commands.train:TrainRunConfig"), _train),
    "apply": ("fold a run's coefficients into a plain Hugging Face model folder (verified before saving)",
              _config_command("pear_lens.commands.apply:ApplyConfig"), _apply),
    "ablate": ("retrain for several K (top-K vs random heads) and plot held-out copy accuracy and loss",
               _config_command("pear_lens.commands.ablate:AblateConfig"), _ablate),
    "demo": ("the whole pipeline on one model: discover, train, apply, before/after check",
             _config_command("pear_lens.commands.demo:DemoConfig"), _demo),
    "compare": ("compare discovery runs (models, methods, seeds, proxy settings) by top-K overlap, "
                "rank correlation and relative depth", _config_command("pear_lens.commands.compare:CompareConfig"),
                _compare),
    "eval": ("evaluate baseline (and a trained artifact) on a RAG task; write per-item and summary CSVs",
             _config_command("pear_lens.commands.eval:EvalConfig"), _eval),
    "atlas": ("put every head's Δπ beside known head roles (induction, retrieval, copy suppression, ...) "
              "and add head_atlas.csv to a run folder", _config_command("pear_lens.commands.atlas:AtlasConfig"),
              _atlas),
    "rescore": ("add every prompt's Δπ to a discovery run that kept only its scores (an older run), by rerunning "
                "its scan on the same weights, so intervals resample its prompts",
                _config_command("pear_lens.commands.rescore:RescoreConfig"), _rescore),
    "eval-report": ("draw accuracy-by-position curves and a results table from eval folders",
                    _config_command("pear_lens.commands.eval_report:EvalReportConfig"), _eval_report),
    "jobs": ("say where a study's jobs stand (done, pending, running, failed); --run runs the rest on an executor "
             "(local, submitit-local, slurm, ray)", _config_command("pear_lens.commands.jobs:JobsConfig"),
             lambda config: __import__("pear_lens.commands.jobs", fromlist=["jobs"]).jobs(config)),
    "report": ("write one self-contained HTML page about a run folder (figures, heads, τ, settings; opens offline)", _config_command("pear_lens.commands.report:ReportConfig"), lambda config: __import__("pear_lens.commands.report", fromlist=["report"]).report(config)),
    "estimate": ("predict the time and peak memory of the head scan, one training and an evaluation on a device "
                 "(short probes there), and the workers a study of such jobs needs to end in time",
                 _config_command("pear_lens.commands.estimate:EstimateConfig"), _estimate),
}


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake reported in one line (the usage is one `--help` away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


DEBUG_HELP = "show the full traceback of an error (for bug reports; or set PEAR_LENS_DEBUG=1)"


def _version() -> str:
    from pear_lens import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pear-lens", description=__doc__)
    # SUPPRESS: a subcommand's default must not reset a `pear-lens --debug CMD` given before it
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"pear-lens {_version()}",
                        help="print pear_lens's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, config, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if config is not None:
            add_arguments(p, config())
    return parser


def _output(config: Any) -> Path | None:
    """The folder (or file) ``command`` writes, held from its first check to its last write; None: it writes none."""
    if config is None:
        return None
    run_dir, out = getattr(config, "run_dir", None), getattr(config, "out", None)
    if out is None or (run_dir is not None and Path(run_dir).resolve() in Path(out).resolve().parents):
        return None if run_dir is None else Path(run_dir)  # train, ablate, atlas; report's page inside its run
    return Path(out)


def _interrupted(signum: int) -> str:
    how = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    # true because every command builds its output beside the old one and swaps it in whole
    return f"{how}; nothing was left half-written and no earlier output was changed"


def main(argv: Sequence[str] | None = None) -> int:
    with interruptions_raised():  # from the first moment: Ctrl-C or SIGTERM while starting is one line too
        command, debug = "pear-lens", debug_enabled()
        try:
            safe_output()  # a terminal that cannot encode τ, Δπ or ρ gets ASCII, never an error after the work is done
            ns = build_parser().parse_args(argv)
            command, debug = f"pear-lens {ns.command}", debug_enabled(getattr(ns, "debug", False))
            _, load_config, handler = COMMANDS[ns.command]
            config = None if load_config is None else from_namespace(load_config(), ns)
            output = _output(config)
            with writing(output, command) if output is not None else contextlib.nullcontext():
                with quiet_when_gone():  # a reader that leaves (`| head`) never turns the work's success into a failure
                    handler(config)
            return 0
        except KeyboardInterrupt as e:
            if debug:
                raise
            code = exit_code(e)
            print(f"{command}: {_interrupted(code - 128)}", file=sys.stderr)
            return code
        except Exception as e:  # one line, never a traceback (unless --debug)
            if debug:
                raise
            if isinstance(e, ManyProblems):  # one line for each problem
                for line in [e.summary, *e.problems]:
                    print(f"{command}: error: {one_line(PearLensError(line))[0]}", file=sys.stderr)
                return 2
            message, code = one_line(e)
            print(f"{command}: error: {message}", file=sys.stderr)
            return code


if __name__ == "__main__":
    sys.exit(main())
