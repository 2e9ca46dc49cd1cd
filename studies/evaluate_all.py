"""The README's results: the fair PEAR experiment on every evaluation task, for each real model.

For each model, every stage cached under ``--runs/MODEL`` and reused while its inputs are the same
(weights, heads, recipe, item seeds, n), so an interrupted run continues where it stopped:

1. **Copy task**: the unmodified model's copy accuracy on the proxy task without BOS (the reference) and
   with it; the reference is kept when it reaches 50 %, else BOS (``pear_lens.commands.discover.MIN_COPY_ACCURACY``).
2. **Discovery** on that task (``pear_lens.commands.discover``).
3. **K on dev items** (``studies.exploratory.design``): the rule (``selection_rule``) is written down
   first; then for each K of a grid in percent of the model's heads, τ is learned for the top-K heads and
   for layer-matched random heads at a small budget (``--dev-steps``, equal for both) and scored on dev
   items of KV and MDQA (another seed than the test items, checked to share none). Dev accuracy against K
   goes to ``--figures/dev_k_MODEL.html/.png``.
4. **PEAR** at the chosen K with the full recipe (``--steps``, the reference 60), the artifact published.
5. **Controls** equal to PEAR in everything but the heads (same steps, lr, schedule, batch, precision and
   training sequences): for each ``--control-seeds`` seed a uniform and a layer-matched random draw.
6. Optionally (``--budget-steps``, for ``--budget-models``) PEAR and every control again at a longer
   budget, evaluated on ``--budget-tasks``.
7. **Evaluation** of baseline, PEAR and the controls on identical test items of every task, condition by
   condition (each condition's outputs are cached too).

Writes ``--report`` (``summary.md`` for the README, ``summary.html``, ``figures/``) and ``run.json``
(protocol, copy task, K selection with its dev accuracies, heads, τ, the measured seconds of every stage),
rewritten after every task.

    .venv/bin/python -m studies.evaluate_all --estimate         # predicted minutes per stage
    .venv/bin/python -m studies.evaluate_all                    # everything (resumes where it stopped)
    .venv/bin/python -m studies.evaluate_all --models smollm2-135m-instruct --budget-steps 180
"""
from __future__ import annotations

import argparse
import sys

from pear_lens.config import add_arguments, from_namespace
from pear_lens.errors import PearLensError
from studies.exploratory.config import ProtocolConfig


def main(argv: list[str] | None = None) -> int:
    """The command line of :func:`studies.exploratory.run.run`; the options come from
    :class:`studies.exploratory.config.ProtocolConfig`."""
    from studies.exploratory.run import run

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, ProtocolConfig, defaults_in_help=False)
    config = from_namespace(ProtocolConfig, parser.parse_args(argv))
    if not config.report_only:
        try:
            config.check()
        except PearLensError as e:
            parser.error(str(e))
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
