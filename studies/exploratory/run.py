"""The exploratory PEAR protocol of ``studies/evaluate_all.py``: every model, every stage, every task.

The stages that write a discovery run, train into it and evaluate live here (through :mod:`pear_lens.workflow`
and :mod:`pear_lens.commands.eval`, as the commands do); the rest, the resume records and the report
are in :mod:`studies.exploratory.stages`, the options in
:class:`studies.exploratory.config.ProtocolConfig`. ``studies/evaluate_all.py`` is its command line.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.exploratory import stages as R
from studies.exploratory.config import ProtocolConfig, differs_from_default
from pear_lens.evaluation.tasks import TaskName

if TYPE_CHECKING:
    from pear_lens.artifact import Artifact
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.recipe import Recipe


def discovery_stage(model: "LoadedModel", mdir: Path, prepend_bos: bool, config: ProtocolConfig,
                    seconds: dict) -> Path:
    """The discovery run for these weights on the chosen copy task (reused when it is one already)."""
    from pear_lens.proxy_task import ProxyTask
    from pear_lens.runs import has_scores, read_info
    from pear_lens.workflow import DiscoverConfig, discover

    run_dir = mdir / "discovery"
    info = read_info(run_dir) if has_scores(run_dir) else {}
    same = (info.get("model", {}).get("fingerprint") == model.fingerprint
            and bool(info.get("config", {}).get("prepend_bos", False)) == prepend_bos)
    if not same:
        discover(DiscoverConfig(out=run_dir, model=model.name, task=ProxyTask(prepend_bos=prepend_bos), overwrite=True,
                                allow_weak_copy_task=config.allow_weak_copy_task, no_png=config.no_png,
                                quiet=config.quiet, device=config.device))
        info = read_info(run_dir)
    if info.get("seconds") is not None:  # runs from before discovery timed itself say nothing
        seconds["discovery"] = info["seconds"]
    return run_dir


def pear_stage(model: "LoadedModel", run_dir: Path, k: int, recipe: "Recipe", config: ProtocolConfig,
               seconds: dict) -> "Artifact":
    """The PEAR artifact at K (trained into the discovery run unless one of the same heads and recipe is there)."""
    from pear_lens.recipe import TrainConfig
    from pear_lens.training_cache import matching_artifact
    from pear_lens.workflow import train_into_run

    train = TrainConfig(top_k=k, **recipe.to_dict())
    artifact = matching_artifact(run_dir, train, model)
    if artifact is None:  # training is seeded: an artifact of the same heads and recipe would come out the same
        artifact, _ = train_into_run(run_dir, train, model=model, overwrite=True, png=not config.no_png,
                                     quiet=config.quiet)
    seconds["train_pear"] = float(artifact.training.get("seconds", 0.0))
    if config.publish:
        R.publish(run_dir, config.publish / model.name)
    return artifact


def train_conditions(model: "LoadedModel", mdir: Path, config: ProtocolConfig, seconds: dict) -> tuple[dict, dict]:
    """Run every stage before the evaluation (copy check, discovery, K on dev items, PEAR, the controls); return
    the conditions to evaluate per role and the model's record so far."""
    from pear_lens.results import HeadScores
    from pear_lens.recipe import Recipe

    copy = R.copy_task_stage(model, mdir, config, seconds)
    run_dir = discovery_stage(model, mdir, copy["prepend_bos"], config, seconds)
    scores = HeadScores.load(run_dir)
    # the one recipe PEAR and every control share: steps, lr, schedule, batch, precision, training sequences
    recipe = Recipe(steps=config.steps, seed=config.train_seed, prepend_bos=copy["prepend_bos"])
    k, k_selection = R.dev_stage(model, scores, mdir, recipe, config, seconds, model.name)
    artifact = pear_stage(model, run_dir, k, recipe, config, seconds)
    return R.conditions_around_pear(model, mdir, run_dir, artifact, recipe, copy, k_selection, config, seconds)


def evaluate_model(name: str, config: ProtocolConfig, differs: list[dict[str, Any]]) -> None:
    """Every stage for ``name``; ``differs``: the protocol options this run changed
    (:func:`~studies.exploratory.config.differs_from_default`)."""
    from pear_lens.commands.eval import EvalConfig, run_eval
    from pear_lens.models.loaded import load_model

    model = load_model(name, device=config.device)
    mdir = config.runs / name
    seconds: dict[str, float] = {}
    conds, record = train_conditions(model, mdir, config, seconds)
    record.update({"n": config.n, "batch_size": config.batch_size, "test_seed": config.test_seed, "tasks": [],
                   "seconds": seconds, "devices": R.record_devices(mdir / R.RECORD, config.device)})
    record["protocol"]["differs_from_default"] = differs

    R.save_record(mdir, record, seconds, conds, config)  # the protocol is on record before the first evaluation
    for task in [TaskName(t) for t in dict.fromkeys(config.tasks)]:  # in the order given
        task_conds = R.task_conditions(conds, task, config)
        if R.evaluated(mdir / task.value, task_conds, config.n, config.test_seed):
            continue  # done in an earlier session (the counterfactual fact check alone would take minutes)
        result = run_eval(EvalConfig(out=mdir / task.value, task=task.value, model=name, n=config.n,
                                     batch_size=config.batch_size, seed=config.test_seed, overwrite=True,
                                     quiet=config.quiet),
                          model=model, conditions=task_conds, cache_dir=mdir / "outputs" / task.value)
        seconds[f"eval/{task.value}"] = round(sum(result.info["seconds_per_condition"].values()), 2)
        R.save_record(mdir, record, seconds, conds, config)
        print(f"{name} {task.value}: {seconds[f'eval/{task.value}'] / 60:.1f} min", flush=True)
        R.report(config.runs, config.report, no_png=config.no_png)  # an interrupted run still leaves every finished task
    R.report(config.runs, config.report, no_png=config.no_png)


def run(config: ProtocolConfig) -> int:
    """The protocol for every ``config.models`` (or only the report, or only the estimate), as the script runs it."""
    if config.report_only:
        R.redraw(config)
        print(f"wrote {config.report} and the dev figures in {config.figures}")
        return 0
    config.check()
    if config.estimate:
        from studies.exploratory.estimate import estimate

        return estimate(config)
    differs = differs_from_default(config)
    for name in config.models:
        evaluate_model(name, config, differs)
    print(f"wrote {config.report}")
    return 0
