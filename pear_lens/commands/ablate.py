"""``pear-lens ablate RUN_DIR``: the K sweep (held-out copy accuracy and loss against K), written into the run.

The command keeps its name and file names (``ablation.*``); it sweeps K, it does not ablate heads. The sweep
itself is :func:`pear_lens.k_sweep.k_sweep` (see its module for the protocol and the budget); this command reads the discovery run, checks its model, and writes ``ablation.csv``,
``ablation.html`` and ``ablation.png`` into the run folder (:func:`pear_lens.runs.write_k_sweep`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.io import check_writable_parent
from pear_lens.figure_files import check_static_export
from pear_lens.k_sweep import EVAL_SEED, k_sweep
from pear_lens.models.loaded import Placement
from pear_lens.results import HeadScores
from pear_lens.recipe import Recipe
from pear_lens.runs import K_SWEEP_OUTPUTS, run_model, warn_if_bos_differs, write_k_sweep


def ablate_training() -> Recipe:
    """The training of every run of the curve: the reference budget halved (30 steps at batch 10, bf16;
    the module docstring of :mod:`pear_lens.k_sweep` gives the full reference budget)."""
    return Recipe(steps=30, batch_size=10, precision="bf16")


ABLATE_BUDGET = ("the sweep trains 1 + 2 x --control-draws runs per K, so each gets half the reference budget "
                 "(30 steps at batch 10) under bf16 autocast, which is 2-3x faster on CPUs with AMX")
"""Why ``ablate``'s training defaults differ from ``train``'s (stated in its ``--help``)."""


@dataclass(kw_only=True)
class AblateConfig(Placement):
    """``pear-lens ablate``: the K sweep, the curve of copy accuracy and loss against K."""

    run_dir: Path = option(help="discovery run folder (from `pear-lens discover`)", positional=True)
    k: tuple[int, ...] = option((1, 2, 5, 10, 20, 40), help="numbers of heads to re-weight")
    control_draws: int = option(2, help="random-head sets drawn per K, each trained as the control (a count; "
                                        "discover's --seeds is a list of proxy-task seeds)")
    train: Recipe = option(default_factory=ablate_training, prefix="", defaults_reason=ABLATE_BUDGET,
                           help="training of every run, top-K and random (the same sequences for all; "
                                "evaluation is always fp32)")
    control_steps: int = option(30, help="training steps for the random controls (fewer saves time; the CSV and "
                                         "figure state it, but τ then moves less, so equal steps are the fair control)")
    n_eval: int = option(50, help="held-out proxy sequences for the evaluation (n predictions each)")
    eval_seed: int = option(EVAL_SEED, help="seed of the held-out sequences (must differ from --seed)")
    overwrite: bool = option(False, help="replace a K sweep (ablation.*) already in RUN_DIR")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bar")


def ablate(config: AblateConfig) -> pd.DataFrame:
    """Run the K sweep on a discovery run and write ``ablation.csv``, ``.html`` and ``.png`` into it."""
    from pear_lens.plots import k_sweep_curve as figure

    run_dir = Path(config.run_dir)
    scores, info = HeadScores.load_run(run_dir)
    warn_if_bos_differs(info, config.train.prepend_bos)
    check_writable_parent(run_dir, "RUN_DIR")  # the new run folder is built beside the old one
    present = [name for name in K_SWEEP_OUTPUTS if (run_dir / name).exists()]
    if present and not config.overwrite:  # before the slow part, like every command that replaces an output
        raise PearLensError(f"{run_dir} already holds a K sweep ({present[0]}); pass --overwrite to replace it")
    config.check_placement()
    if not config.no_png:
        check_static_export()
    model = run_model(info, dtype=config.dtype, **config.device_options())
    df = k_sweep(model, scores, config.k, train=config.train, control_steps=config.control_steps,
                 seeds=config.control_draws, n_eval=config.n_eval, eval_seed=config.eval_seed, progress=not config.quiet)
    write_k_sweep(run_dir, df, figure(df, title=f"{model.name}: re-weighting the top-K heads vs K random heads"),
                   png=not config.no_png, placement=model.placement())
    return df
