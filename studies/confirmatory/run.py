"""The confirmatory run of one model: the plan fixed first, fresh items, every planned condition, every output kept.

Layout of ``OUT/MODEL`` (meant to be committed; everything a statistic needs is in it):

- ``plan.json``: the :class:`~studies.confirmatory.plan.ConfirmatoryPlan`, written (and its test seed
  claimed) before any test item exists;
- ``items/TASK.jsonl.gz``: the test items, drawn once from the plan's seed and then read back;
- ``tau/ID.json``: each trained condition's τ with the key it was trained under (weights, heads, recipe,
  device), its loss and whether τ sat at the optimizer's step limit; ``tau/pear_retrained.json``: PEAR's heads
  trained again here with the published recipe, to compare with the artifact's τ (trained elsewhere);
- ``outputs/TASK/ID.json.gz``: each condition's greedy outputs in item order, keyed by the weights, the
  condition (heads and τ), the items, the settings, the batch size, the device and the dtype;
- ``record.json``: the seconds every stage took and on which device.

Every stage is skipped when its file holds the same key, so the run resumes on any machine from what is
committed, condition by condition (:func:`run_model`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.evaluation import conditions as C
from studies.confirmatory import plan as PL
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.items import Item
from pear_lens.evaluation.tasks.prompts import PromptStyle
from pear_lens.controls import ControlKind, draw_control
from pear_lens.evaluation.splits import items_digest
from pear_lens.io import as_json
from pear_lens.evaluation.runner import encode_items, generate_outputs, known_facts
from studies.confirmatory.ledger import close_study
from studies.estimate import Estimate, Stage, seconds_per_item, seconds_per_step
from pear_lens.evaluation.tasks import TASKS, TaskName, TaskSettings, generate_items
from pear_lens.evaluation.verdict import VerdictRule
from pear_lens.io import atomic_write_json
from pear_lens.stage_cache import OnMismatch, lookup, read_record, write_record
from pear_lens.heads import Head

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

PLAN_JSON, RECORD_JSON = "plan.json", "record.json"


# --------------------------------------------------------------------------- storage
# Items, τ and outputs are records of pear_lens.stage_cache (gzip-compressed JSON where the name ends in .gz,
# written whole with mtime 0); a keyed one is read back with OnMismatch.REFUSE: a committed output is
# never replaced, a different key means the study's inputs changed midway (weights, τ, items, settings, batch
# size, device or dtype), which the plan does not allow. The refusal names the fields that differ; moving the
# file aside (it is the user's to keep or drop) lets the stage run again.


def save_items(path: Path, items: Sequence[Item], meta: dict[str, Any]) -> None:
    write_record(path, {"meta": meta, "digest": items_digest(items), "items": [it.to_dict() for it in items]})


def load_items(path: Path, task: TaskName) -> tuple[list[Item], dict[str, Any]]:
    """Items saved by :func:`save_items`, parsed by the task's own loader (so they are checked as data files are)."""
    rec = read_record(path)
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / f"{task.value}.jsonl"
        jsonl.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in rec["items"]), encoding="utf-8")
        items = TASKS[task].load(jsonl)
    if items_digest(items) != rec["digest"]:
        raise PearLensError(f"{path}: the items do not match their recorded digest; restore the file from git")
    return items, rec["meta"]


def weights_device_dtype(model: "LoadedModel") -> tuple[str, str]:
    """Device type and dtype of the model's weights as loaded (measured, not copied from the plan)."""
    param = next(model.bridge.parameters())
    return param.device.type, str(param.dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- conditions


@dataclass(frozen=True)
class Arm:
    """One planned condition: its id, how its τ come about, and its label in tables."""

    id: str
    label: str
    heads: tuple[Head, ...] = ()
    train_lr: float | None = None
    """Learning rate it is trained with (None: not trained here)."""
    fixed_tau: float | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)


def arms(plan: PL.ConfirmatoryPlan, n_layers: int, n_heads: int) -> list[Arm]:
    """Every condition of ``plan``, in the order the run builds them (cheap and most informative first)."""
    pear = [tuple(h) for h in plan.artifact["heads"]]
    mean_tau = round(sum(plan.artifact["tau"]) / len(plan.artifact["tau"]), 4)
    lr, ulr = plan.recipe["lr"], plan.arms.unclipped_lr
    out = [Arm("baseline", "baseline"), Arm("pear", "PEAR", tuple(pear)),
           Arm("fixed_damping", f"fixed damping (τ = {mean_tau:g} on PEAR's heads)", tuple(pear), fixed_tau=mean_tau,
               metadata={"arm": "fixed_damping"})]

    def control(kind: str, seed: int, rate: float, suffix: str) -> Arm:
        draw = draw_control(kind, n_layers, n_heads, pear, seed)
        tag = "" if not suffix else f", lr {rate:g}"
        return Arm(f"{kind}{suffix}_s{seed:02d}", f"{draw.kind.label} seed {seed}{tag}", tuple(draw.heads),
                   train_lr=rate, metadata={"control": kind, "seed": seed, "arm": "unclipped" if suffix else "reference",
                                            **draw.note})

    c, n_first = plan.controls, plan.controls.other_per_kind
    for seed in range(n_first):
        out += [control(ControlKind.UNIFORM.value, seed, lr, ""), control(ControlKind.LAYER_MATCHED.value, seed, lr, "")]
    out.append(Arm("pear_unclipped", f"PEAR, lr {ulr:g}", tuple(pear), train_lr=ulr, metadata={"arm": "unclipped"}))
    out += [control(ControlKind.UNIFORM.value, s, lr, "") for s in range(n_first, c.uniform_primary)]
    out += [control(ControlKind.LAYER_MATCHED.value, s, lr, "") for s in range(n_first, c.layer_matched_primary)]
    for seed in range(plan.arms.unclipped_controls_per_kind):
        out += [control(ControlKind.UNIFORM.value, seed, ulr, "_unclipped"),
                control(ControlKind.LAYER_MATCHED.value, seed, ulr, "_unclipped")]
    planned = {i for ids in PL.planned_conditions(plan).values() for i in ids}
    return [a for a in out if a.id in planned]


def train_arm(model: "LoadedModel", arm: Arm, plan: PL.ConfirmatoryPlan, path: Path, record: dict) -> dict[Head, float]:
    """τ of ``arm`` (trained with the plan's recipe at the arm's learning rate), read back when saved before."""
    from pear_lens.reweight import at_step_limit, step_limit, train_coefficients
    from pear_lens.recipe import Recipe

    config = Recipe(**{**plan.recipe, "lr": arm.train_lr})
    recipe = config.to_dict()
    key = {"fingerprint": model.fingerprint, "heads": [list(h) for h in arm.heads], "recipe": recipe,
           "device": weights_device_dtype(model)[0]}
    rec = lookup(path, key, OnMismatch.REFUSE)
    if rec is None:
        result = train_coefficients(model, list(arm.heads), config, progress=False)
        tau = [float(t) for t in result.tau]
        rec = {"key": as_json(key), "tau": tau, "seconds": round(result.seconds, 2), "loss_first": result.loss_curve[0],
               "loss_last": result.loss_curve[-1], "step_limit": round(step_limit(config), 6),
               "at_step_limit": at_step_limit(tau, config), **training_path(result)}
        write_record(path, rec)
    record.setdefault("seconds", {})[f"train/{arm.id}"] = rec["seconds"]
    return dict(zip(arm.heads, rec["tau"]))


def training_path(result: Any) -> dict[str, Any]:
    """The whole path of a training (loss, τ, lr per step), so whether τ and the loss had settled can be read
    off, not only whether τ sits at the step limit."""
    return {"loss_curve": [round(float(x), 6) for x in result.loss_curve],
            "tau_trajectory": [[round(float(t), 6) for t in row] for row in result.tau_trajectory.tolist()],
            "lr_curve": [float(x) for x in result.lr_curve]}


RETRACE_TOLERANCE = 1e-3
"""Largest |τ difference| at which a retrained path stands for the saved training: another machine or thread
count changes the last float digits, not the path (SmolLM2's pear_unclipped, retrained on another machine
than the one that saved it, ended 2.2e-5 from the saved τ on 1 thread and on 2)."""


def retrace_arm(model: "LoadedModel", arm: Arm, plan: PL.ConfirmatoryPlan, path: Path) -> bool:
    """Add the training path to a τ record saved without one (before paths were kept), by training the arm
    again with its recipe; True when it did. The saved τ stay as they are; ``retrace_gap`` records how far the
    retrained τ ended from them, and the path is kept only when that is within :data:`RETRACE_TOLERANCE`."""
    from pear_lens.reweight import train_coefficients
    from pear_lens.recipe import Recipe

    rec = read_record(path)
    if "retrace_gap" in rec or "tau_trajectory" in rec:
        return False
    result = train_coefficients(model, list(arm.heads), Recipe(**{**plan.recipe, "lr": arm.train_lr}), progress=False)
    gap = max(abs(float(a) - b) for a, b in zip(result.tau, rec["tau"]))
    extra = training_path(result) if gap <= RETRACE_TOLERANCE else {}
    write_record(path, {**rec, **extra, "retrace_gap": gap})
    return True


PEAR_RETRAINED = "pear_retrained"
"""The τ record of PEAR trained again on this run's device with the published recipe (not a condition)."""


def retrain_pear(model: "LoadedModel", plan: PL.ConfirmatoryPlan, mdir: Path, record: dict) -> bool:
    """Train PEAR's heads again here with the plan's recipe (the published one); True when it trained now.

    The controls are trained on this run's device; PEAR's τ come from the artifact, trained wherever it was
    made. The gap between the two sets of PEAR τ (:func:`studies.confirmatory.report.pear_retrained`)
    says whether that difference could matter, and the path shows whether PEAR's own τ had settled."""
    path = mdir / "tau" / f"{PEAR_RETRAINED}.json"
    fresh = not path.exists()
    arm = Arm(PEAR_RETRAINED, "PEAR, retrained here", tuple(tuple(h) for h in plan.artifact["heads"]),
              train_lr=plan.recipe["lr"])
    train_arm(model, arm, plan, path, record)  # reads a saved record back, or refuses one saved under another key
    return fresh


def build_condition(model: "LoadedModel", arm: Arm, plan: PL.ConfirmatoryPlan, artifact_dir: Path, mdir: Path,
                    record: dict) -> C.Condition:
    if arm.id == "baseline":
        return C.baseline(model)
    if arm.id == "pear":
        cond = C.from_artifact(model, artifact_dir)
        if cond.metadata.get("artifact_sha256") != plan.artifact["sha256"]:
            raise PearLensError(f"{artifact_dir} is not the artifact the plan names ({plan.artifact['sha256'][:12]}); "
                                "restore it from git: the plan tests that artifact and no other")
        return cond
    if arm.fixed_tau is not None:
        return C.folded(model, {h: arm.fixed_tau for h in arm.heads}, arm.label, C.ConditionKind.CUSTOM,
                        **arm.metadata)
    tau = train_arm(model, arm, plan, mdir / "tau" / f"{arm.id}.json", record)
    kind = C.ConditionKind.PEAR if arm.id.startswith("pear") else C.ConditionKind.RANDOM_K
    return C.folded(model, tau, arm.label, kind, steps=plan.recipe["steps"], train_seed=plan.recipe["seed"],
                    lr=arm.train_lr, **arm.metadata)


# --------------------------------------------------------------------------- items


def task_items(model: "LoadedModel", task: TaskName, plan: PL.ConfirmatoryPlan, mdir: Path,
               progress: bool, registry: Path | None = None, study: str = "") -> list[Item]:
    """The plan's test items of ``task``: drawn once (after the plan is on disk), then always read back.

    Before the first item of a ``study`` is drawn the study is closed in ``registry``: no model can join it
    (and share its seed) once any of its items exist."""
    from pear_lens.evaluation.tasks.facts import closed_book_items, load_facts

    path = mdir / "items" / f"{task.value}.jsonl.gz"
    if path.exists():
        return load_items(path, task)[0]
    if not (mdir / PLAN_JSON).exists():  # the order of events is the point: never draw items without a plan
        raise PearLensError(f"no plan in {mdir}; the plan is fixed before any test item is drawn")
    if registry is not None and study:
        close_study(registry, study)
    settings = settings_for(model.name, task, model.tokenizer)
    meta: dict[str, Any] = {"seed": plan.test_seed, "settings": settings.to_dict()}
    known = None
    if task is TaskName.COUNTERFACTUAL:  # only facts the baseline answers closed-book test reading the context
        facts = load_facts()
        cb = settings_for(model.name, TaskName.CLOSED_BOOK, model.tokenizer)
        ids = known_facts(model.fresh_hf(), model.tokenizer, closed_book_items(facts), cb, n_ctx=model.n_ctx,
                          batch_size=plan.batch_size, progress=progress)
        known = [f for f in facts if f.fact_id in ids]
        meta.update(facts=len(facts), known_facts=len(known))
    items = generate_items(task, settings, plan.n, seed=plan.test_seed, known_facts=known)
    save_items(path, items, meta)
    return items


# --------------------------------------------------------------------------- the run


def item_settings(model: "LoadedModel", task: TaskName, mdir: Path) -> TaskSettings:
    """The settings ``task``'s items were drawn with (saved beside them), so a later recalibration cannot
    change how a running study asks its questions; the calibrated ones before any item exists."""
    path = mdir / "items" / f"{task.value}.jsonl.gz"
    if path.exists():
        return TaskSettings(**read_record(path)["meta"]["settings"])
    return settings_for(model.name, task, model.tokenizer)


def output_key(model: "LoadedModel", cond: C.Condition, items: Sequence[Item], task: TaskName,
               plan: PL.ConfirmatoryPlan, settings: TaskSettings) -> dict[str, Any]:
    device, dtype = weights_device_dtype(model)
    # the condition by what it computes (heads and τ), not by its label: renaming a row keeps its outputs
    return {"fingerprint": model.fingerprint, "task": task.value, "heads": cond.describe()["heads"],
            "items": items_digest(items), "settings": settings.to_dict(), "batch_size": plan.batch_size,
            "device": device, "dtype": dtype}


def evaluate_arm(model: "LoadedModel", cond: C.Condition, arm: Arm, task: TaskName, items: Sequence[Item],
                 settings: TaskSettings, plan: PL.ConfirmatoryPlan, mdir: Path, record: dict, progress: bool) -> bool:
    """Generate and save ``cond``'s outputs on ``items`` (asked with ``settings``, those they were drawn with:
    :func:`item_settings`) unless saved under the same key; True when it ran now."""
    path = mdir / "outputs" / task.value / f"{arm.id}.json.gz"
    key = output_key(model, cond, items, task, plan, settings)
    if lookup(path, key, OnMismatch.REFUSE) is not None:
        return False
    prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer, n_ctx=model.n_ctx,
                           max_new_tokens=settings.max_new_tokens)
    start = time.perf_counter()
    outputs = generate_outputs(cond.build(), model.tokenizer, prompts, settings, batch_size=plan.batch_size,
                               progress=progress, desc=f"{task.value} · {cond.label}")
    seconds = round(time.perf_counter() - start, 2)
    write_record(path, {"key": as_json(key), "label": cond.label, "item_ids": [it.item_id for it in items],
                         "outputs": outputs, "seconds": seconds})
    record.setdefault("seconds", {})[f"eval/{task.value}/{arm.id}"] = seconds
    return True


# --------------------------------------------------------------------------- the run as jobs (pear_lens.jobs)
# Each planned condition is one job (its τ, when trained, and its outputs on every task it is planned for), and
# PEAR retrained here is one more; any executor runs them. record.json, the seconds of every stage, is not written
# by the jobs (one file shared by every job would be written by all of them): the launcher builds it afterwards
# from the seconds each τ and output record holds, in the order of the plan.

_MODELS: dict[tuple[str, str], "LoadedModel"] = {}
"""Models loaded in this process, by (name, device): the local executor's jobs share the launcher's model."""


def _job_model(name: str, device: str) -> "LoadedModel":
    if (name, device) not in _MODELS:
        from pear_lens.models import load_model

        _MODELS[name, device] = load_model(name, device=device)
    return _MODELS[name, device]


def arm_outputs(plan: PL.ConfirmatoryPlan, arm: Arm) -> tuple[str, ...]:
    """What an arm's job writes, relative to the model's folder: its τ (when trained) and its outputs."""
    planned = PL.planned_conditions(plan)
    tau = (f"tau/{arm.id}.json",) if arm.train_lr is not None else ()
    return tau + tuple(f"outputs/{t}/{arm.id}.json.gz" for t in plan.tasks() if arm.id in planned[t])


def arm_job(root: Path, model: str, device: str, arm_id: str, artifact_dir: str, progress: bool = False) -> None:
    """Job: train the arm when it is trained (τ read back when saved), then generate its outputs on every task the
    plan names for it (read back when saved under the same key)."""
    mdir = Path(root)
    plan, _ = PL.read_plan(mdir / PLAN_JSON)
    lm = _job_model(model, device)
    arm = next(a for a in arms(plan, lm.n_layers, lm.n_heads) if a.id == arm_id)
    cond = build_condition(lm, arm, plan, Path(artifact_dir), mdir, {})
    for task in (t for t in plan.tasks() if arm.id in PL.planned_conditions(plan)[t]):
        items = task_items(lm, TaskName(task), plan, mdir, progress)
        evaluate_arm(lm, cond, arm, TaskName(task), items, item_settings(lm, TaskName(task), mdir), plan, mdir, {},
                     progress)


def pear_retrained_job(root: Path, model: str, device: str) -> None:
    """Job: PEAR's heads trained again on this device with the plan's recipe (:func:`retrain_pear`)."""
    plan, _ = PL.read_plan(Path(root) / PLAN_JSON)
    retrain_pear(_job_model(model, device), plan, Path(root), {})


def study_jobs(plan: PL.ConfirmatoryPlan, n_layers: int, n_heads: int, artifact_dir: Path, fingerprint: str,
               progress: bool = False) -> list:
    """Every planned condition as a job, in the plan's order, then PEAR retrained here."""
    from pear_lens.jobs import Job

    args = {"model": plan.model, "device": plan.device}
    inputs = (PLAN_JSON, *(f"items/{t}.jsonl.gz" for t in plan.tasks()))
    key = {"fingerprint": fingerprint}
    jobs = [Job(arm.id, "studies.confirmatory.run:arm_job",
                {**args, "arm_id": arm.id, "artifact_dir": str(artifact_dir), "progress": progress},
                outputs=arm_outputs(plan, arm), inputs=inputs, key=key)
            for arm in arms(plan, n_layers, n_heads)]
    jobs.append(Job(PEAR_RETRAINED, "studies.confirmatory.run:pear_retrained_job", args,
                    outputs=(f"tau/{PEAR_RETRAINED}.json",), inputs=(PLAN_JSON,), key=key))
    return jobs


def build_record(plan: PL.ConfirmatoryPlan, mdir: Path, n_layers: int, n_heads: int,
                 devices: Sequence[str]) -> dict[str, Any]:
    """``record.json`` from the saved records: the devices, then the seconds of every training and evaluation
    saved so far, in the order the plan runs them (each arm's training, then its tasks), PEAR retrained last."""
    planned, seconds = PL.planned_conditions(plan), {}
    for arm in arms(plan, n_layers, n_heads):
        tau = mdir / "tau" / f"{arm.id}.json"
        if arm.train_lr is not None and tau.exists():
            seconds[f"train/{arm.id}"] = read_record(tau)["seconds"]
        for task in (t for t in plan.tasks() if arm.id in planned[t]):
            out = mdir / "outputs" / task / f"{arm.id}.json.gz"
            if out.exists():
                seconds[f"eval/{task}/{arm.id}"] = read_record(out)["seconds"]
    if (mdir / "tau" / f"{PEAR_RETRAINED}.json").exists():
        seconds[f"train/{PEAR_RETRAINED}"] = read_record(mdir / "tau" / f"{PEAR_RETRAINED}.json")["seconds"]
    return {"devices": list(devices), "seconds": seconds}


def run_model(model: "LoadedModel", plan: PL.ConfirmatoryPlan, artifact_dir: Path, mdir: Path, *,
              progress: bool = False, log: Callable[[str], None] = print, max_new: int | None = None,
              registry: Path | None = None, study: str = "", executor: Any = None) -> dict:
    """Every planned condition on every planned task, as jobs (:func:`study_jobs`) on ``executor`` (a
    :class:`pear_lens.jobs.ExecutorOptions`; default: in this process), resuming from what ``mdir`` holds.

    The items are drawn here first (never by a job). ``max_new``: run at most this many conditions not yet
    done (None: all). ``registry``, ``study``: the seed registry and the plan's study, closed before its first
    item is drawn. Returns the record (``mdir/record.json``, rebuilt from the saved records).
    """
    from pear_lens.jobs import Study, run_study
    from pear_lens.jobs.status import study_status
    from pear_lens.models.loaded import device_description

    record_path = mdir / RECORD_JSON
    before = json.loads(record_path.read_text()) if record_path.exists() else {}
    devices = list(dict.fromkeys([*before.get("devices", []), device_description(plan.device)]))
    for t in plan.tasks():
        task_items(model, TaskName(t), plan, mdir, progress, registry, study)
    _MODELS[plan.model, plan.device] = model
    jobs = study_jobs(plan, model.n_layers, model.n_heads, artifact_dir, model.fingerprint, progress)
    if max_new is not None:
        status = {r.job: r.state for r in study_status(Study(mdir, jobs)).rows}
        jobs = [j for j in jobs if status[j.name] == "done"] + \
               [j for j in jobs if status[j.name] != "done"][:max_new]
    for arm in arms(plan, model.n_layers, model.n_heads):  # a τ record saved before paths were kept: add its
        path = mdir / "tau" / f"{arm.id}.json"  # path, before the job's receipt records the file's hash
        if "unclipped" in arm.id and path.exists() and not (mdir / "jobs" / f"{arm.id}.json").exists() \
                and retrace_arm(model, arm, plan, path):
            log(f"{plan.model} {arm.id}: training path added")
    result = run_study(Study(mdir, jobs), executor)
    log(str(result))
    record = build_record(plan, mdir, model.n_layers, model.n_heads, devices)
    atomic_write_json(record_path, record)
    return record


def iter_outputs(mdir: Path, task: str) -> Iterator[tuple[str, dict]]:
    """(condition id, saved record) of every condition evaluated on ``task`` under ``mdir``."""
    for path in sorted((mdir / "outputs" / task).glob("*.json.gz")):
        yield path.name[: -len(".json.gz")], read_record(path)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


# --------------------------------------------------------------------------- plan and estimate


def exploratory_deltas(summary_csv: Path, model: str) -> dict[str, float]:
    """PEAR's Δ accuracy vs baseline per task in the exploratory summary (``figures/results/summary.csv``)."""
    import pandas as pd

    if not Path(summary_csv).exists():
        raise PearLensError(f"{summary_csv} does not exist; the endpoint rule reads the exploratory run's summary")
    df = pd.read_csv(summary_csv)
    rows = df[(df["model"] == model) & (df["condition"] == "PEAR") & (df["gold_position"].astype(str) == "all")]
    return {str(r.task): float(r.delta_vs_baseline) for r in rows.itertuples()}


def make_plan(model: "LoadedModel", artifact_dir: Path, *, test_seed: int, n: int, batch_size: int, device: str,
              exploratory_summary: Path, exploratory_record: Path,
              tasks: Sequence[str] = ("kv", "mdqa", "counterfactual", "closed-book")) -> PL.ConfirmatoryPlan:
    """The plan for ``model`` from the published artifact and the exploratory run (nothing is tuned here)."""
    from pear_lens.artifact import load_artifact
    from pear_lens.recipe import Recipe
    from pear_lens.runs import artifact_sha256

    art = load_artifact(artifact_dir, model=model)
    deltas = exploratory_deltas(exploratory_summary, model.name)
    k_rule = "K as the exploratory protocol chose it on dev items; not re-tuned"
    if Path(exploratory_record).exists():
        rec = json.loads(Path(exploratory_record).read_text()).get("models", {}).get(model.name, {})
        k_rule = rec.get("k_chosen", k_rule) + "; not re-tuned"
    recipe = Recipe.from_dict(art.training).to_dict()
    endpoints = tuple(PL.choose_endpoints(deltas, tasks))
    # enough uniform controls that 'beyond random heads' is reachable: Holm over the primary endpoints must be
    # able to bring the smallest rank p below alpha (19 controls and two primary endpoints cannot: 2/20 = 0.1)
    n_primary = sum(e.role == PL.PRIMARY for e in endpoints)
    controls = PL.ControlPlan(uniform_primary=PL.controls_for_rank_test(n_primary, VerdictRule().alpha))
    return PL.ConfirmatoryPlan(
        model=model.name, fingerprint=model.fingerprint, test_seed=test_seed, n=n,
        endpoints=endpoints, controls=controls,
        artifact={"path": str(artifact_dir), "sha256": artifact_sha256(artifact_dir),
                  "heads": [list(h) for h in art.heads], "tau": [round(float(t), 6) for t in art.tau],
                  "k": len(art.heads), "k_rule": k_rule},
        recipe=recipe,
        exploratory={"source": f"{exploratory_summary} (test seed 0)", "pear_delta": {k: round(v, 4) for k, v in deltas.items()}},
        batch_size=batch_size, device=device)


def count_work(plan: PL.ConfirmatoryPlan, n_layers: int, n_heads: int) -> dict[str, Any]:
    """Trainings and (condition, task) evaluations the plan asks for."""
    planned = PL.planned_conditions(plan)
    all_arms = arms(plan, n_layers, n_heads)
    return {"trainings": sum(a.train_lr is not None for a in all_arms),
            "evaluations": {t: len(ids) for t, ids in planned.items()}}


def estimate_stages(plan: PL.ConfirmatoryPlan, n_layers: int, n_heads: int, priced: Sequence[str]) -> list[Stage]:
    """The plan's work, stage by stage: every training at the plan's steps, every (condition, task) evaluation
    on the plan's ``n`` items, and the closed-book check of every fact that counterfactual items need (priced
    at closed-book's pace where ``priced`` has it, else counterfactual's)."""
    from pear_lens.evaluation.tasks.facts import closed_book_items, load_facts

    work = count_work(plan, n_layers, n_heads)
    out = [Stage("training", steps=work["trainings"] * plan.recipe["steps"])]
    out += [Stage(f"eval/{task}", items={task: work["evaluations"][task] * plan.n}) for task in plan.tasks()]
    if TaskName.COUNTERFACTUAL.value in plan.tasks():
        at = TaskName.CLOSED_BOOK.value if TaskName.CLOSED_BOOK.value in priced else TaskName.COUNTERFACTUAL.value
        out.append(Stage("closed-book check of every fact", items={at: len(closed_book_items(load_facts()))}))
    return out


def estimate(model: "LoadedModel", plan: PL.ConfirmatoryPlan, *, items_per_task: int = 32,
             steps: int = 2) -> Estimate:
    """Predict the run's minutes on the device it will run on: ``steps`` training steps of a control and
    ``items_per_task`` items of every task are timed now, on ``model``, and multiplied out."""
    from pear_lens.evaluation.tasks.facts import load_facts
    from pear_lens.recipe import Recipe

    control = next(a for a in arms(plan, model.n_layers, model.n_heads) if a.train_lr is not None)
    per_step = seconds_per_step(model, control.heads, Recipe(**plan.recipe), steps=steps)
    facts = load_facts()  # timing only: every fact stands in for the ones the baseline knows
    per_item = {task: seconds_per_item(model, TaskName(task), items_per_task, batch_size=plan.batch_size,
                                       known_facts=facts) for task in plan.tasks()}
    work = count_work(plan, model.n_layers, model.n_heads)
    said = (f"{work['trainings']} trainings, evaluations "
            + ", ".join(f"{t} {c}" for t, c in work["evaluations"].items()))
    return Estimate(plan.model, per_step, f"timed now on {plan.device}: {steps} steps", per_item,
                    estimate_stages(plan, model.n_layers, model.n_heads, list(per_item)), work=said)


# --------------------------------------------------------------------------- configuration


CONFIRM_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
"""The models the confirmatory plan covers (Qwen's exploratory run left no PEAR effect to confirm)."""


@dataclass
class ConfirmConfig:
    """``studies/confirm.py``: where the plans, items and outputs live and how the run is executed."""

    models: tuple[str, ...] = option(CONFIRM_MODELS, help="models to run, in order")
    study: str = option("issue 16 confirmatory run", help="the study the plans belong to: its models may share "
                                                          "--test-seed (all plans are fixed before any item is seen)")
    test_seed: int = option(-1, help="seed of the fresh test items, one no earlier test used (required when a model "
                                     "has no plan yet; a fixed plan keeps its own)")
    n: int = option(300, help="test items per task (a new plan only)")
    batch_size: int = option(32, help="generation batch (a new plan only; part of every output's key)")
    device: str = option("cpu", help="device of a new plan; a fixed plan runs on its own device")
    out: Path = option(Path("figures/results/confirm"), help="plans, items, τ and outputs, one folder per model")
    artifacts: Path = option(Path("artifacts"), help="the published PEAR artifacts under test (ARTIFACTS/MODEL)")
    registry: Path = option(Path("figures/results/test_seeds.json"), help="the record of every seed used for test items")
    exploratory: Path = option(Path("figures/results/summary.csv"), help="the exploratory summary the endpoint rule reads")
    exploratory_record: Path = option(Path("figures/results/run.json"), help="the exploratory record (how K was chosen)")
    tasks: tuple[str, ...] = option(("kv", "mdqa", "counterfactual", "closed-book"),
                                    help="tasks of a new plan (closed-book always; a model that cannot do one leaves it out)")
    max_new: int = option(0, help="stop each model after this many conditions not yet done (0: everything)")
    plan_only: bool = option(False, help="fix the plans of the models that have none (claiming the test seed) and stop: "
                                         "every plan of a study is on record before any of its results is seen")
    estimate: bool = option(False, help="only time the device and predict the minutes of every stage")
    report_only: bool = option(False, help="only recompute the report from the saved items and outputs")
    report: Path = option(Path("figures/results"), help="where README.md, the CSVs and figures/ of the report go")
    run_json: Path = option(Path("figures/results/run.json"), help="the record the report adds each model's numbers to "
                                                                  "(under 'confirmatory'; other keys are kept)")
    no_png: bool = option(False, help="HTML figures only (PNG needs Chromium for kaleido)")
    quiet: bool = option(False, help="no progress bars")
