"""The confirmatory PEAR run (issue 16): per model, a plan fixed before fresh test items, 19 uniform and 6
layer-matched controls on the primary endpoints, fixed-damping and unclipped arms, every output kept; last,
PEAR retrained on this device (where the controls were trained) against the artifact's τ.

    .venv/bin/python -m studies.confirm --estimate --test-seed 20261201   # time this device, predict the minutes
    .venv/bin/python -m studies.confirm --test-seed 20261201 --plan-only  # fix every model's plan, run nothing
    .venv/bin/python -m studies.confirm --test-seed 20261201              # fix the plans, then run (resumes)
    .venv/bin/python -m studies.confirm                                   # resume under the fixed plans
    .venv/bin/python -m studies.confirm --report-only                     # recompute the tables from the outputs
    .venv/bin/python -m studies.confirm --executor slurm --workers 40 --partition gpu --gpus-per-worker 1
                                                                          # each condition a job on a cluster

The study's modules do the work (:mod:`studies.confirmatory.run`, :mod:`studies.confirmatory.plan`); the
options come from :class:`studies.confirmatory.run.ConfirmConfig`.
"""
from __future__ import annotations

import argparse
import sys

from pear_lens.config import add_arguments, from_namespace
from pear_lens.errors import PearLensError, debug_enabled
from pear_lens.jobs import ExecutorOptions
from studies.confirmatory import run as CF
from studies.confirmatory import plan as PL


def run(config: CF.ConfirmConfig, executor: ExecutorOptions | None = None) -> int:
    from pear_lens.models import load_model

    if config.report_only:  # numbers from the saved outputs alone: no model is loaded
        print(f"wrote {report(config)}")
        return 0
    # every model's plan is fixed before any model runs: a study's plans are all on record before any of its
    # items exists (the registry closes the study when the first item is drawn)
    loaded = {}
    for name in config.models:
        plan_path = config.out / name / CF.PLAN_JSON
        if plan_path.exists() and not config.estimate:
            continue
        if not plan_path.exists() and config.test_seed < 0:
            raise PearLensError(f"{name} has no plan yet: give --test-seed, a seed no earlier test used "
                                f"(the used ones are in {config.registry})")
        fixed = PL.read_plan(plan_path)[0] if plan_path.exists() else None
        model = loaded[name] = load_model(name, device=fixed.device if fixed else config.device)
        plan = (fixed or
                CF.make_plan(model, config.artifacts / name, test_seed=config.test_seed, n=config.n,
                             batch_size=config.batch_size, device=config.device,
                             exploratory_summary=config.exploratory, exploratory_record=config.exploratory_record,
                             tasks=config.tasks))
        if config.estimate:
            CF.estimate(model, plan).show()  # studies.estimate prints it as every study's estimate
            continue
        plan, sha = PL.fix_plan(plan_path, plan, config.registry, purpose=f"confirmatory run of {name}",
                                study=config.study)
        print(f"{name}: plan fixed, SHA-256 {sha[:16]}…, test seed {plan.test_seed}", flush=True)
    if config.plan_only or config.estimate:
        return 0
    for name in config.models:
        mdir = config.out / name
        plan, _ = PL.read_plan(mdir / CF.PLAN_JSON)
        model = loaded.pop(name, None) or load_model(name, device=plan.device)
        if model.fingerprint != plan.fingerprint:
            raise PearLensError(f"{name}'s weights (fingerprint {model.fingerprint[:12]}) are not those the plan "
                                f"in {mdir / CF.PLAN_JSON} was fixed for ({plan.fingerprint[:12]}); reinstall the "
                                "pinned weights (make setup)")
        CF.run_model(model, plan, config.artifacts / name, mdir, progress=not config.quiet,
                     max_new=config.max_new or None, log=lambda line: print(line, flush=True),
                     registry=config.registry, study=config.study, executor=executor)
        del model
        report(config)  # every finished model is in the report, even if a later one is interrupted
    return 0


def report(config: CF.ConfirmConfig):
    from studies.confirmatory.document import write_report

    return write_report(config.out, config.report, run_json=config.run_json, png=not config.no_png,
                        registry=config.registry)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, CF.ConfirmConfig)
    add_arguments(parser, ExecutorOptions, group=parser.add_argument_group("executor (pear_lens.jobs: each condition is a job)"))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    args = parser.parse_args(argv)
    try:
        ex = set(ExecutorOptions.__dataclass_fields__)
        return run(from_namespace(CF.ConfirmConfig, {k: v for k, v in vars(args).items() if k != "debug" and k not in ex}),
                   from_namespace(ExecutorOptions, {k: v for k, v in vars(args).items() if k in ex}))
    except PearLensError as e:
        if debug_enabled(args.debug):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
