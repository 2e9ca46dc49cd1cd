"""The pipeline's first two stages as library calls: score every head into a discovery run folder, then train τ
into that folder and save the artifact.

The commands (``pear-lens discover``, ``train``, ``demo``) and any study built on them call these functions;
which file of the run folder each call writes is :mod:`pear_lens.runs`'s business. Folding an artifact into a Hugging Face model is
:mod:`pear_lens.verified_fold`.

A discovery run folder holds ``head_scores.csv`` (tidy, one row per head), an interactive ``heatmap.html``, a
static ``heatmap.png`` and ``discovery.json`` (settings, model, weight fingerprint, package versions,
per-setting scores, and the model's clean accuracy on the proxy task), written by
:func:`pear_lens.runs.write_run`. Before scoring, the unmodified model's copy accuracy on the proxy task is
measured: heads ranked on a task the model cannot do (Gemma-3 without BOS copies about one token in eight)
rank noise, so below :data:`~pear_lens.copy_check.MIN_COPY_ACCURACY` the run stops unless told to go on.

Training reads the run's scores, reloads its model (refusing weights that changed since discovery), trains the
top-K heads (or an explicit list) and adds to the same folder the training log (``training_log.csv``,
``training.html``/``.png``) and, last, the artifact (``coefficients.safetensors`` + ``pear.json``), through
:func:`pear_lens.runs.write_training`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear_lens import constants
from pear_lens.artifact import Artifact
from pear_lens.config import option
from pear_lens.copy_check import MIN_COPY_ACCURACY, check_copy_task, clean_copy, copy_task_record
from pear_lens.errors import PearLensError
from pear_lens.heads import head_label
from pear_lens.io import atomic_write_json, atomic_write_text, check_writable_parent, as_json
from pear_lens.figure_files import check_static_export
from pear_lens.mediation import METHODS, method_options
from pear_lens.metrics import Difference, Metric
from pear_lens.models.loaded import Placement, check_device
from pear_lens.models.registry import DEFAULT_MODEL
from pear_lens.results import HeadScores
from pear_lens.reweight import TrainResult, at_step_limit, step_limit, train_coefficients
from pear_lens.recipe import Recipe, TrainConfig, select_heads
from pear_lens.runs import (discovery_summary, has_artifact, run_model, warn_if_bos_differs,
                            write_run, write_training)
from pear_lens.prompt_task import PromptTask
from pear_lens.proxy_task import ProxyTask

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


# --------------------------------------------------------------------------- discovery


REPORT_K = 10
"""The K of the top-K heads that discovery and the atlas report: outlined on figures, compared across seeds and
detectors. (How many heads are trained is :data:`pear_lens.recipe.DEFAULT_TOP_K`.)"""


def _method_options() -> dict[str, type]:
    return {name: m.options for name, m in METHODS.items()}


@dataclass(kw_only=True)
class DiscoverConfig(Placement):
    """Settings of one discovery run (``pear-lens discover``): the proxy task, the method and its options, and
    where the model runs (:class:`~pear_lens.models.loaded.Placement`)."""

    out: Path = option(help="run folder to create")
    model: str = option(DEFAULT_MODEL, help="registry name (see `pear-lens models`), local Hugging Face folder or hub id")
    method: str = option("path", help="scoring method, one of the registry pear_lens.mediation.METHODS",
                         choices=lambda: list(METHODS))
    metric: Metric = option(Metric.LOGIT_MINUS_MEAN, help="the metric π read at the scored position (logit_diff "
                                                          "needs a --task file with foils)")
    difference: Difference | None = option(None, cli_type=Difference,
                                           help="Δπ as π̃/π−1 (relative) or π̃−π (absolute); None: relative on the "
                                                "proxy task, absolute on a --task file")
    task: ProxyTask = option(default_factory=ProxyTask, prefix="",
                             help="the copy proxy task the heads are scored on (--seed also seeds resample ablation)")
    task_file: Path | None = option(None, flag="task",
                                    help="score the heads on a task of your own instead of the proxy task: a JSONL "
                                         "file, one prompt per line with the keys prompt (or tokens), answer and "
                                         "optionally foil, corrupted and position (pear_lens.prompt_task)")
    seeds: tuple[int, ...] = option((), nargs="+",
                                    help="score the proxy task once per seed (new random sequences each) and add a "
                                         "stability report of the top --report-k heads across the seeds "
                                         "(stability.csv/.json); the run's scores are the first seed's")
    options: Any = option(None, variants=_method_options, selector="method",
                          help="the chosen method's own options (None: its defaults)")
    checkpoint: Path | None = option(None, help="a folder (outside --out) each batch's scores are saved into as they "
                                                "are made: run again with the same folder to resume a stopped scan "
                                                "where it stopped (pear_lens.mediation.checkpoint)")
    allow_weak_copy_task: bool = option(False, help=f"score the heads even when the model copies less than "
                                                    f"{MIN_COPY_ACCURACY:.0%} of the proxy task's tokens")
    report_k: int = option(REPORT_K, help="heads outlined on the heatmap, and the K of the --seeds stability "
                                          "report (`pear-lens train --top-k` is the number of heads trained)")
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier discovery run folder")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bars")


def discover(config: DiscoverConfig) -> HeadScores:
    """Load the model, score every head, write the run folder; return the scores."""
    from pear_lens.io import check_output
    from pear_lens.mediation import score_heads
    from pear_lens.models.loaded import load_model

    start = time.perf_counter()
    # everything that can be checked is checked before the slow part
    inputs = (config.model, config.task_file)  # a local model folder, the task file
    check_output(config.out, kind="run", inputs=inputs, overwrite=config.overwrite)
    options = method_options(config.method, config.options)  # an option of another method: one clear line
    config.check_placement()
    if config.task_file is not None and config.seeds:
        raise PearLensError("--seeds draws new random sequences of the proxy task; a --task file's prompts are "
                            "fixed: drop one of them")
    if len(set(config.seeds)) != len(config.seeds) or len(config.seeds) == 1:
        raise PearLensError(f"--seeds needs at least 2 different seeds for a stability report, got {list(config.seeds)}")
    if config.checkpoint is not None and config.checkpoint.resolve().is_relative_to(config.out.resolve()):
        raise PearLensError(f"--checkpoint {config.checkpoint} is inside --out {config.out}, which is replaced whole "
                            "when the run is written; give a folder outside it")
    if not config.no_png:
        check_static_export()
    task = PromptTask.from_jsonl(config.task_file) if config.task_file is not None else config.task
    difference = config.difference or Difference(task.default_difference)
    model = load_model(config.model, **config.load_options())
    copy_task = None
    if isinstance(task, ProxyTask):
        t0 = time.perf_counter()
        copy_task = copy_task_record(task, clean_copy(model, task), time.perf_counter() - t0)
        check_copy_task(model.name, copy_task, config.allow_weak_copy_task)  # before the expensive scoring
    seeds = config.seeds or (getattr(task, "seed", 0),)
    runs = [score_heads(model, dataclasses.replace(task, seed=s) if isinstance(task, ProxyTask) else task,
                        config.metric, config.method, difference=difference, seed=s, progress=not config.quiet,
                        options=options, copy_check="off", checkpoint=config.checkpoint) for s in seeds]
    scores = runs[0]
    record = config_record(dataclasses.replace(config, difference=difference, dtype=model.dtype,
                                               task=dataclasses.replace(config.task, seed=seeds[0])), options)
    write_run(config.out, table=scores.to_dataframe(), scores=scores.metadata(),
              heatmap=scores.heatmap(top_k=config.report_k), config=record,
              overwrite=config.overwrite, png=not config.no_png, model_info=model.describe(), copy_task=copy_task,
              seconds=time.perf_counter() - start, inputs=inputs, placement=model.placement(),
              extras=lambda folder: _write_scores(folder, runs, config.report_k))
    return scores


def _write_scores(folder: Path, runs: list[HeadScores], k: int) -> None:
    """The run's scores with every prompt's values and, for several seeds, each seed's and their stability."""
    runs[0].save(folder / constants.RUN_SCORES_DIR)
    if len(runs) < 2:
        return
    for run in runs[1:]:
        run.save(folder / constants.SEEDS_DIR / f"seed_{run.task['seed']}")
    stability = runs[0].stability(runs[1:], k)
    atomic_write_text(folder / constants.STABILITY_CSV, stability.to_dataframe().to_csv(index=False))
    atomic_write_json(folder / constants.STABILITY_JSON, {
        "k": k, "seeds": [run.task["seed"] for run in runs], "top_k_overlap": stability.overlap.tolist(),
        "mean_top_k_overlap": stability.mean_overlap,
        "heads_in_every_top_k": [head_label(h) for h in stability.stable_heads(1.0)]})


def config_record(config: DiscoverConfig, options: Any) -> dict[str, Any]:
    """``discovery.json``'s ``config``: one flat mapping of every setting (task and method options inline)."""
    record: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "task":
            record.update({k: v for k, v in value.to_dict().items() if k != "vocab_filter"})
        elif f.name == "seeds":
            record[f.name] = list(value)
        elif f.name == "options":
            record.update({o.name: as_json(getattr(options, o.name)) for o in dataclasses.fields(options)})
        else:
            record[f.name] = as_json(value)
    return record


# --------------------------------------------------------------------------- training into the run


def step_limit_record(result: TrainResult) -> dict[str, Any]:
    """pear.json's record of the step limit (:func:`pear_lens.reweight.step_limit`): the bound and which τ sit at it."""
    recipe = Recipe.from_dict(result.config)
    at = at_step_limit(result.tau.tolist(), recipe)
    return {"tau_step_limit": round(step_limit(recipe), 6), "tau_at_step_limit": at}


def step_limit_message(result: TrainResult) -> str | None:
    """One line when any τ sits at the step limit (its value was set by the budget, not the loss), else None."""
    rec = step_limit_record(result)
    held = [f"L{l}.H{h} ({float(t):.3f})" for (l, h), t, a in zip(result.heads, result.tau, rec["tau_at_step_limit"]) if a]
    if not held:
        return None
    return (f"note: τ of {', '.join(held)} sit at the optimizer's step limit (|τ - 1| ≥ 90 % of "
            f"{rec['tau_step_limit']:.3f}, the summed learning rate of {result.config['steps']} steps): they were "
            "still moving when training stopped; more steps or a larger --lr would move them further")


def build_artifact(result: TrainResult, config: TrainConfig, base_model: dict[str, Any], scores: HeadScores | None,
                   discovery: dict[str, Any]) -> Artifact:
    """The artifact of a training run with ``config`` (its head selection and recipe are pear.json's
    ``training``); Δπ and rank come from ``scores`` when given."""
    ranks = scores.ranks() if scores is not None else None
    return Artifact(
        heads=result.heads, tau=result.tau, base_model=base_model,
        scores=[float(scores.scores[l, h]) if scores is not None else None for l, h in result.heads],
        ranks=[int(ranks[l, h]) if ranks is not None else None for l, h in result.heads],
        training={**config.to_dict(), "seconds": round(result.seconds, 2), "loss_first": result.loss_curve[0],
                  "loss_last": result.loss_curve[-1], **step_limit_record(result)},
        discovery=discovery,
    )


def train_into_run(run_dir: Path, train_cfg: TrainConfig, *, model: "LoadedModel | None" = None,
                   overwrite: bool = False, png: bool = True, quiet: bool = False, device: str | None = None,
                   dtype: str | None = None, device_map: "str | dict[str, Any] | None" = None,
                   ) -> tuple[Artifact, TrainResult]:
    """Train the coefficients of a discovery run and write the artifact into it.

    ``model``: the run's model if already loaded (it is checked against the run's fingerprint); else it is
    loaded on ``device`` (default CPU), or over the devices of ``device_map``, in ``dtype`` (default: the dtype
    the discovery loaded it in, :func:`pear_lens.runs.run_model`). Where it ran is recorded in the run's
    ``stages.json``.
    """
    run_dir = Path(run_dir)
    scores, info = HeadScores.load_run(run_dir)
    if has_artifact(run_dir) and not overwrite:
        raise PearLensError(f"{run_dir} already holds an artifact ({constants.PEAR_JSON}); pass overwrite=True "
                            "(--overwrite) to replace it")
    warn_if_bos_differs(info, train_cfg.prepend_bos)
    heads = select_heads(scores, train_cfg)  # fail on bad heads before loading the model
    check_writable_parent(run_dir, "RUN_DIR")  # the new run folder is built beside the old one
    if png:
        check_static_export()
    if model is None and device_map is None:
        check_device(device)
    model = run_model(info, model, device=device, dtype=dtype, device_map=device_map)
    result = train_coefficients(model, heads, train_cfg.recipe, progress=not quiet)
    message = step_limit_message(result)
    if message and not quiet:
        print(message, file=sys.stderr)
    artifact = build_artifact(result, train_cfg, model.describe(), scores, discovery_summary(info))
    write_training(run_dir, artifact, result.to_dataframe(), result.figure(), png=png, placement=model.placement())
    return artifact, result
