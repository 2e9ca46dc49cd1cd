"""One evaluation (``pear-lens eval``): load a model, make or read items, run the conditions, write an eval folder.

An eval folder holds ``items.csv`` (one row per condition and item),
``summary.csv`` (accuracy, 95% bootstrap CI and the paired test against the
baseline), ``items.jsonl`` (the exact items, in their loader's format, to rerun
them) and ``eval.json`` (settings, conditions, model, versions, timings); with
``--likelihood`` also ``likelihood.csv`` (teacher-forced log p(gold) and the
gold-vs-competitors contrast per condition and item) and ``likelihood_summary.csv``
(paired differences from the baseline with cluster-bootstrap intervals).
Everything is validated before the first model runs, and the folder appears
whole or not at all. A study calls :func:`run_eval` with conditions of its own.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from pear_lens import constants
from pear_lens.config import option
from pear_lens.errors import PearLensError
from pear_lens.evaluation import conditions as cond_mod
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.facts import ClosedBookItem, CounterfactualItem, Fact, closed_book_items, \
    fact_clusters, load_facts
from pear_lens.evaluation.tasks.items import Item, check_gold_position, write_jsonl
from pear_lens.evaluation.tasks.prompts import PromptStyle
from pear_lens.evaluation.runner import EvalResult, LikelihoodResult, encode_items, evaluate, evaluate_likelihood, \
    known_facts
from pear_lens.evaluation.tasks import TASKS, TaskName, TaskSettings, generate_items
from pear_lens import manifest
from pear_lens.io import atomic_write_json, check_output, as_json, staged_dir
from pear_lens.models.loaded import Placement
from pear_lens.models.registry import DEFAULT_MODEL

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel


@dataclass(kw_only=True)
class EvalConfig(Placement):
    """Settings of one evaluation (``pear-lens eval``)."""

    out: Path = option(help="eval folder to create")
    task: str = option("kv", help="task", choices=[t.value for t in TaskName])
    model: str | None = option(None, help="registry name (see `pear-lens models`), local Hugging Face folder or hub "
                                          f"id; None: the base model of --artifact, else {DEFAULT_MODEL}")
    artifact: Path | None = option(None, help="trained run folder: evaluate PEAR beside the baseline")
    data: Path | None = option(None, help="JSONL items in the Lost-in-the-Middle format instead of generated ones")
    n: int = option(300, help="number of items (generated, or the first N of --data)")
    positions: tuple[int, ...] = option((), help="0-based gold positions to place items at (none = every position)")
    n_context: int | None = option(None, help="KV pairs / MDQA documents / counterfactual sentences (None = calibrated)")
    prompt_style: str | None = option(None, help="prompt style (None = calibrated on the baseline)",
                                      choices=[s.value for s in PromptStyle])
    max_new_tokens: int | None = option(None, help="answer length limit in tokens (None = per task)")
    key_format: str | None = option(None, help="KV keys: hexL, digitsD, alphaL or uuid (None = calibrated)")
    value_format: str | None = option(None, help="KV values: hexL, digitsD, alphaL or uuid (None = calibrated)")
    uniform: float | None = option(None, help="also evaluate every head scaled by this one scalar")
    prune: bool = option(False, help="also evaluate the artifact's heads pruned (τ = 0, Jin et al. 2024); needs "
                                     "--artifact")
    cad: float | None = option(None, help="also evaluate context-aware decoding (Shi et al. 2023) at this α (0.5 "
                                          "in the paper; 1 on knowledge conflicts)")
    likelihood: bool = option(False, help="also score every condition teacher-forced: log p(gold answer) and its "
                                          "contrast with the competing answers, per item (likelihood.csv)")
    no_empty: bool = option(False, help="sensitivity arm: forbid the end of the answer until it holds text, so an "
                                        "accuracy change cannot come from empty answers alone")
    batch_size: int = option(16, help="prompts per generation batch")
    seed: int = option(0, help="seed of generated items and bootstrap resampling")
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier eval folder")
    quiet: bool = option(False, help="no progress bars")


def resolve_settings(config: EvalConfig, model_name: str, tokenizer) -> TaskSettings:
    """Calibrated (or default) settings, with any explicit option on top."""
    task = TaskName.parse(config.task)
    settings = settings_for(model_name, task, tokenizer)
    overrides = {k: getattr(config, k) for k in ("n_context", "prompt_style", "max_new_tokens", "key_format",
                                                  "value_format") if getattr(config, k) is not None}
    return replace(settings, **overrides)


def counterfactual_items(model: "LoadedModel", config: EvalConfig, settings: TaskSettings,
                         loaded: list[Item] | None, seed: int) -> tuple[list[Item], dict[str, Any]]:
    """Counterfactual items restricted to facts the baseline knows closed-book (checked here, on the baseline)."""
    cb = settings_for(model.name, TaskName.CLOSED_BOOK, model.tokenizer)
    hf = model.fresh_hf()
    kw = dict(n_ctx=model.n_ctx, batch_size=config.batch_size, progress=not config.quiet)
    if loaded is None:
        facts = load_facts()
        by_id: dict[str, Fact] = {f.fact_id: f for f in facts}
        known = known_facts(hf, model.tokenizer, closed_book_items(facts), cb, **kw)
        items = generate_items(TaskName.COUNTERFACTUAL, settings, config.n, positions=config.positions or None,
                               seed=seed, known_facts=[by_id[i] for i in by_id if i in known])
        stats = {"facts": len(facts), "known_facts": len(known)}
    else:
        probes = {it.question: ClosedBookItem(it.question, it.question, it.parametric_answers)
                  for it in loaded if isinstance(it, CounterfactualItem)}
        known = known_facts(hf, model.tokenizer, list(probes.values()), cb, **kw)
        items = [it for it in loaded if it.question in known][: config.n]
        stats = {"facts": len(probes), "known_facts": len(known)}
    if not items:
        raise PearLensError(f"{model.name} answers none of the questions correctly closed-book, so no item "
                            "tests following a counterfactual context")
    stats.update(closed_book_prompt_style=cb.prompt_style, items_kept=len(items))
    return items, stats


def build_items(model: "LoadedModel", config: EvalConfig, settings: TaskSettings) -> tuple[list[Item], dict[str, Any]]:
    task = TaskName.parse(config.task)
    loaded = None
    if config.data is not None:
        loaded = TASKS[task].load(config.data)
        if config.positions:
            for it in loaded:
                if it.gold_position is None:
                    continue
                for p in config.positions:
                    check_gold_position(p, it.n_context, f"{config.data} item {it.item_id}")
            loaded = [it for it in loaded if it.gold_position in set(config.positions)]
            if not loaded:
                raise PearLensError(f"no item of {config.data} has its gold evidence at positions {config.positions}")
    if task is TaskName.COUNTERFACTUAL:
        return counterfactual_items(model, config, settings, loaded, config.seed)
    if loaded is not None:
        return loaded[: config.n], {"source": str(config.data)}
    return generate_items(task, settings, config.n, positions=config.positions or None, seed=config.seed), {}


def requested_conditions(model: "LoadedModel", config: EvalConfig) -> list[cond_mod.Condition]:
    conds = [cond_mod.baseline(model)]
    if config.artifact is not None:
        conds.append(cond_mod.from_artifact(model, config.artifact))
    if config.uniform is not None:
        conds.append(cond_mod.all_heads(model, config.uniform))
    if config.prune:
        conds.append(cond_mod.pruned(model, sorted(conds[1].coefficients), "PEAR heads pruned"))
    if config.cad is not None:
        conds.append(cond_mod.context_aware(model, config.cad))
    return conds


def run_eval(config: EvalConfig, *, model: "LoadedModel | None" = None,
             conditions: Sequence[cond_mod.Condition] | None = None, cache_dir: Path | None = None) -> EvalResult:
    """Evaluate and write ``config.out``; pass ``model``/``conditions`` to reuse a loaded model or add controls.

    ``cache_dir``: keep each condition's outputs there and reuse them while model weights, condition, items
    and settings are unchanged (see :func:`pear_lens.evaluation.runner.evaluate`).
    """
    from pear_lens.models.loaded import load_model

    name, recorded = model_of(config)
    inputs = (config.artifact, config.data, name)  # the model may be a local folder
    check_output(config.out, kind="eval", inputs=inputs, overwrite=config.overwrite)  # refuse before the slow part
    check_options(config)
    start = time.perf_counter()
    if model is None:
        config.check_placement()
        model = load_model(name, **config.load_options(recorded))
    settings = resolve_settings(config, model.name, model.tokenizer)
    conds = list(conditions) if conditions is not None else requested_conditions(model, config)
    items, item_info = build_items(model, config, settings)
    # fail on an over-long prompt before any generation (encode_items raises naming the item)
    encode_items(items, PromptStyle.parse(settings.prompt_style), model.tokenizer, n_ctx=model.n_ctx,
                 max_new_tokens=settings.max_new_tokens)
    result = evaluate(model.name, TaskName.parse(config.task).value, items, conds, model.tokenizer, settings,
                      n_ctx=model.n_ctx, batch_size=config.batch_size, progress=not config.quiet, seed=config.seed,
                      cache_dir=cache_dir, cache_key={"fingerprint": model.fingerprint}, no_empty=config.no_empty)
    likelihood = None
    if config.likelihood:
        clusters = fact_clusters(items) if TaskName.parse(config.task) in (TaskName.COUNTERFACTUAL,
                                                                           TaskName.CLOSED_BOOK) else None
        likelihood = evaluate_likelihood(model.name, TaskName.parse(config.task).value, items, conds, model.tokenizer,
                                         settings, n_ctx=model.n_ctx, batch_size=config.batch_size,
                                         progress=not config.quiet, seed=config.seed, clusters=clusters,
                                         cache_dir=cache_dir, cache_key={"fingerprint": model.fingerprint})
        result.info["likelihood"] = {"seconds_per_condition": likelihood.info["seconds_per_condition"],
                                     "n_clusters": likelihood.info["n_clusters"]}
    result.info.update(items=item_info, model=model.describe(), config=as_json(asdict(replace(config, model=name))),
                       seconds_total=time.perf_counter() - start, ran_on=model.placement())
    write_eval_dir(result, items, config.out, overwrite=config.overwrite, inputs=inputs, likelihood=likelihood)
    return result


def model_of(config: EvalConfig) -> tuple[str, str | None]:
    """The model to evaluate and the dtype its record names: ``--model`` if given, else the base model (and its
    dtype) of ``--artifact``'s training, else the default model."""
    from pear_lens.runs import has_artifact, read_pear_json

    if config.artifact is None or not has_artifact(config.artifact):
        return config.model or DEFAULT_MODEL, None  # a missing artifact is refused with its own message later
    try:
        base = read_pear_json(config.artifact)["base_model"]
        return config.model or str(base["name"]), base.get("dtype")
    except (KeyError, TypeError, ValueError, OSError):
        if config.model is None:
            raise PearLensError(f"{config.artifact}'s pear.json names no base model; give --model") from None
        return config.model, None


def check_options(config: EvalConfig) -> None:
    """Refuse options that would be ignored (and yet recorded in eval.json as if they had applied)."""
    from pear_lens.artifact import check_tau

    if config.n < 1:
        raise PearLensError(f"--n must be at least 1, got {config.n}")
    task = TaskName.parse(config.task)
    generation_only = [name for name in ("n_context", "key_format", "value_format") if getattr(config, name) is not None]
    if config.data is not None and generation_only:
        flag = "--" + generation_only[0].replace("_", "-")
        raise PearLensError(f"{flag} sets how items are generated, but --data {config.data} gives the items; "
                            f"drop {flag} (the file fixes it)")
    for name in ("key_format", "value_format"):
        if getattr(config, name) is not None and task is not TaskName.KV:
            raise PearLensError(f"--{name.replace('_', '-')} applies to --task kv only; drop it for --task {task.value}")
    if config.n_context is not None and task is TaskName.CLOSED_BOOK:
        raise PearLensError("--n-context does not apply to --task closed-book (its prompts have no context); drop it")
    if config.n_context is not None and config.n_context < 1:
        raise PearLensError(f"--n-context must be at least 1, got {config.n_context}")
    if config.uniform is not None:
        check_tau([config.uniform], "--uniform")
    if config.prune and config.artifact is None:
        raise PearLensError("--prune prunes the artifact's heads; give the trained run with --artifact")
    if config.cad is not None and not config.cad >= 0:
        raise PearLensError(f"--cad takes CAD's α ≥ 0 (0.5 in the paper), got {config.cad}")
    if config.cad is not None and task is TaskName.CLOSED_BOOK:
        raise PearLensError("--cad contrasts the model with and without the context; --task closed-book has none")
    if config.batch_size < 1:
        raise PearLensError(f"--batch-size must be at least 1, got {config.batch_size}")



def write_eval_dir(result: EvalResult, items: Sequence[Item], out: Path, *, overwrite: bool,
                   inputs: Sequence[Any] = (), likelihood: "LikelihoodResult | None" = None) -> Path:
    from pear_lens.environment import environment

    with staged_dir(out, overwrite=overwrite, kind="eval", inputs=inputs) as stage:
        result.items.to_csv(stage / constants.EVAL_ITEMS_CSV, index=False)
        result.summary.to_csv(stage / constants.EVAL_SUMMARY_CSV, index=False)
        write_jsonl(items, stage / constants.EVAL_ITEMS_JSONL)
        if likelihood is not None:
            likelihood.items.to_csv(stage / constants.EVAL_LIKELIHOOD_CSV, index=False)
            likelihood.summary.to_csv(stage / constants.EVAL_LIKELIHOOD_SUMMARY_CSV, index=False)
        atomic_write_json(stage / constants.EVAL_JSON, {
            "format_version": constants.FORMAT_VERSION, "kind": "pear_lens evaluation",
            **result.info, "environment": environment()})
        described = result.info.get("model") or {}
        if described.get("name") and described.get("fingerprint"):  # read back whole by eval-report
            manifest.seal(stage, EVAL_FILES, model=described["name"], fingerprint=described["fingerprint"])
    return out


EVAL_FILES = (constants.EVAL_ITEMS_CSV, constants.EVAL_SUMMARY_CSV, constants.EVAL_ITEMS_JSONL,
              constants.EVAL_LIKELIHOOD_CSV, constants.EVAL_LIKELIHOOD_SUMMARY_CSV, constants.EVAL_JSON)
"""The files of an eval folder its manifest lists (those present)."""
