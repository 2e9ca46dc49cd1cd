"""The confirmatory PEAR run (issue 16): per model, a plan fixed before fresh test items, 19 uniform and 6
layer-matched controls on the primary endpoints, fixed-damping and unclipped arms, every output kept.

    .venv/bin/python scripts/confirm.py --estimate --test-seed 20261201   # time this device, predict the minutes
    .venv/bin/python scripts/confirm.py --test-seed 20261201 --plan-only  # fix every model's plan, run nothing
    .venv/bin/python scripts/confirm.py --test-seed 20261201              # fix the plans, then run (resumes)
    .venv/bin/python scripts/confirm.py                                   # resume under the fixed plans
    .venv/bin/python scripts/confirm.py --report-only                     # recompute the tables from the outputs

The library does the work (:mod:`pear_lens.evaluation.confirm`, :mod:`pear_lens.evaluation.plan`); the
options come from :class:`pear_lens.evaluation.confirm.ConfirmConfig`.
"""
from __future__ import annotations

import argparse
import os
import sys

from pear_lens.config import add_arguments, from_namespace
from pear_lens.errors import PearLensError
from pear_lens.evaluation import confirm as CF
from pear_lens.evaluation import plan as PL


def run(config: CF.ConfirmConfig) -> int:
    from pear_lens.models import load_model

    if config.report_only:  # numbers from the saved outputs alone: no model is loaded
        print(f"wrote {report(config)}")
        return 0
    for name in config.models:
        mdir = config.out / name
        plan_path = mdir / CF.PLAN_JSON
        fixed = plan_path.exists()
        if fixed:
            plan, sha = PL.read_plan(plan_path)
            model = load_model(name, device=plan.device)
            if model.fingerprint != plan.fingerprint:
                raise PearLensError(f"{name}'s weights (fingerprint {model.fingerprint[:12]}) are not those the plan "
                                    f"in {plan_path} was fixed for ({plan.fingerprint[:12]}); reinstall the pinned "
                                    "weights (make setup)")
        else:
            if config.test_seed < 0:
                raise PearLensError(f"{name} has no plan yet: give --test-seed, a seed no earlier test used "
                                    f"(the used ones are in {config.registry})")
            model = load_model(name, device=config.device)
            plan = CF.make_plan(model, config.artifacts / name, test_seed=config.test_seed, n=config.n,
                                batch_size=config.batch_size, device=config.device,
                                exploratory_summary=config.exploratory, exploratory_record=config.exploratory_record,
                                tasks=config.tasks)
        if config.estimate:
            est = CF.estimate(model, plan)
            print(f"{name}: {est['seconds_per_step']:.1f} s per training step, s/item "
                  + ", ".join(f"{t} {s:.2f}" for t, s in est["seconds_per_item"].items())
                  + f" (timed now on {plan.device}); {est['work']['trainings']} trainings, evaluations "
                  + ", ".join(f"{t} {c}" for t, c in est["work"]["evaluations"].items()))
            for stage, minutes in est["minutes"].items():
                print(f"  {stage}: {minutes:.0f} min")
            print(f"  total: {est['total_minutes']:.0f} min ({est['total_minutes'] / 60:.1f} h)", flush=True)
            continue
        if not fixed:
            plan, sha = PL.fix_plan(plan_path, plan, config.registry,
                                    purpose=f"confirmatory run of {name}", study=config.study)
            print(f"{name}: plan fixed, SHA-256 {sha[:16]}…, test seed {plan.test_seed}", flush=True)
        if config.plan_only:
            continue
        CF.run_model(model, plan, config.artifacts / name, mdir, progress=not config.quiet,
                     max_new=config.max_new or None, log=lambda line: print(line, flush=True))
        report(config)  # every finished model is in the report, even if a later one is interrupted
    return 0


def report(config: CF.ConfirmConfig):
    from pear_lens.evaluation.confirm_report import write_report

    return write_report(config.out, config.report, run_json=config.run_json, png=not config.no_png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, CF.ConfirmConfig)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    args = parser.parse_args(argv)
    try:
        return run(from_namespace(CF.ConfirmConfig, {k: v for k, v in vars(args).items() if k != "debug"}))
    except PearLensError as e:
        if args.debug or os.environ.get("PEAR_LENS_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
