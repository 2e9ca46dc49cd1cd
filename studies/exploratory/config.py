"""The options of the exploratory PEAR protocol (``studies/evaluate_all.py``), as one typed config.

:class:`ProtocolConfig` is what the script's command line is generated from (:func:`pear_lens.config.add_arguments`)
and what :mod:`studies.exploratory.stages` and :mod:`studies.exploratory.estimate` read.
:data:`PROTOCOL_MODELS` is the one list of the real models the protocol evaluates and the README reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.controls import ControlKind
from studies.exploratory.design import DEV_TASKS, K_PERCENTS
from pear_lens.evaluation.tasks import TaskName

PROTOCOL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct")
"""The real models of the exploratory protocol, in the README's order: ``figures/results/run.json`` holds these
three and ``make results`` runs them all (Qwen with a protocol shrunk to fit a CPU, as the Makefile says)."""
TASK_ORDER = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL, TaskName.CLOSED_BOOK)
"""Every evaluation task, in the order the record lists them."""
_TASKS = [t.value for t in TASK_ORDER]


@dataclass(frozen=True)
class ProtocolConfig:
    """``studies/evaluate_all.py``: the protocol's options, where its stages are cached and what it writes."""

    models: tuple[str, ...] = option(PROTOCOL_MODELS, nargs="+", help="")
    tasks: tuple[str, ...] = option(tuple(_TASKS), nargs="+", choices=_TASKS, help="")
    n: int = option(300, help="test items per task and condition")
    test_seed: int = option(0, help="seed of the test items")
    k: str = option("dev", help="'dev': choose K on dev items (the protocol); or a number of heads")
    k_percents: tuple[int | float, ...] = option(K_PERCENTS, nargs="+", cli_type=tuple[float, ...],
                                                 help="the dev grid of K, in percent of the model's heads "
                                                      "(at least 1 head each)")
    dev_n: int = option(100, help="dev items per dev task; shrink this first")
    dev_tasks: tuple[str, ...] = option(tuple(t.value for t in DEV_TASKS), nargs="+",
                                        choices=[t.value for t in DEV_TASKS],
                                        help="tasks whose dev items choose K (the rule names them before the sweep)")
    dev_seed: int = option(1, help="seed of the dev items (must differ from --test-seed)")
    dev_steps: int = option(20, help="training steps of every dev run (top-K and random-K)")
    dev_seeds: tuple[int, ...] = option((0,), nargs="*",
                                        help="layer-matched random draws per K on the dev split (none: top-K only, "
                                             "which is all the rule reads; the draws only show the dev figure's "
                                             "control)")
    steps: int = option(60, help="training steps of PEAR and of every control (reference: 60)")
    train_seed: int = option(0, help="seed of the training sequences, the same for PEAR and every control")
    control_seeds: tuple[int, ...] = option((0, 1, 2), nargs="+",
                                            help="seeds drawing the control heads (one control of each kind per seed)")
    control_kinds: tuple[str, ...] = option(tuple(k.value for k in ControlKind), nargs="+",
                                            choices=[k.value for k in ControlKind], help="")
    budget_steps: int | None = option(None, help="also train PEAR and every control for this many steps (budget "
                                                 "sensitivity)")
    budget_models: tuple[str, ...] = option(PROTOCOL_MODELS[:1], nargs="+", help="models given the longer budget")
    budget_tasks: tuple[str, ...] = option((TaskName.KV.value, TaskName.MDQA.value), nargs="+", choices=_TASKS,
                                           help="tasks the longer-budget conditions are evaluated on")
    budget_control_seeds: tuple[int, ...] | None = option(None, nargs="+",
                                                          help="control seeds trained at the longer budget (default: "
                                                               "every --control-seeds)")
    uniform: bool = option(False, help="also evaluate every head scaled by the mean PEAR τ")
    allow_weak_copy_task: bool = option(False, help="go on when the model copies below 50% with and without BOS "
                                                    "(tiny models in tests)")
    batch_size: int = option(32, help="")
    device: str = option("cpu", help="device of every stage (cpu, cuda, cuda:1): the cached stages are "
                                     "device-independent, so a run may continue on another device")
    runs: Path = option(Path("runs/evaluate_all"), help="")
    publish: Path = option(Path("artifacts"), help="copy each model's trained artifact here (ARTIFACT_DIR/MODEL)")
    report: Path = option(Path("figures/results"), help="")
    figures: Path = option(Path("figures"), help="where the dev accuracy-vs-K figures go")
    no_png: bool = option(False, help="HTML figures only (PNG needs a Chrome for kaleido)")
    estimate: bool = option(False, help="only predict the run time of every stage")
    estimate_items: int = option(0, help="with --estimate: time this many items anew")
    report_only: bool = option(False, help="only rebuild --report (and the dev figures in --figures) from the models "
                                           "already evaluated under --runs")
    quiet: bool = option(False, help="")

    def check(self) -> None:
        """Refuse options the protocol cannot run with (a :class:`PearLensError` naming the option)."""
        if self.k != "dev" and not (self.k.isdigit() and int(self.k) > 0):
            raise PearLensError(f"--k must be a positive integer or 'dev', got {self.k!r}")
        if self.dev_seed == self.test_seed:
            raise PearLensError("--dev-seed must differ from --test-seed: K is never chosen on the test items")


PROTOCOL_OPTIONS = ("n", "k_percents", "dev_n", "dev_tasks", "dev_steps", "dev_seeds", "steps", "control_seeds",
                    "control_kinds")
"""Options that set how much evidence the protocol gathers: a run that changes them (to fit a slow machine)
says so in its record and in the README."""


def differs_from_default(config: ProtocolConfig) -> list[dict[str, Any]]:
    """The protocol options ``config`` sets to other values than the defaults, e.g. ``--steps 20 (default 60)``."""
    defaults = ProtocolConfig()
    out = []
    for dest in PROTOCOL_OPTIONS:
        value, default = getattr(config, dest), getattr(defaults, dest)
        if value != default:
            out.append({"option": "--" + dest.replace("_", "-"), "value": value, "default": default})
    return out

