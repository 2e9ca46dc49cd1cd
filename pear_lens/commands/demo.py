"""``pear-lens demo`` (``make demo``): the whole pipeline on one model, then a before/after check.

discover → train → apply, each writing into one run folder, then the original
and the folded Hugging Face models, loaded separately, are compared on
held-out copy-task sequences and on key-value retrieval items of the evaluation
package (task size and prompt style from the calibration, greedy, 95% CI). The
check is a smoke test that the folded folder is a working, changed model; the
evaluation proper is ``pear-lens eval`` (random-head controls, n ≥ 300).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pear_lens.config import option
from pear_lens.io import atomic_write_json, write_marker
from pear_lens.models.loaded import Placement
from pear_lens.models.registry import DEFAULT_MODEL
from pear_lens.recipe import TrainConfig

DEMO_CHECK_JSON = "demo_check.json"


DEMO_PRECISION = "bf16 autocast, as the reference trained, keeps the demo short on a CPU"
"""Why the demo's training precision differs from ``train``'s (stated in its ``--help``)."""


@dataclass(kw_only=True)
class DemoConfig(Placement):
    """``pear-lens demo``: discover → train → apply → before/after check, every stage on ``--device`` in
    ``--dtype``."""

    out: Path = option(Path("runs/demo"), help="run folder to create; it has a default (unlike discover's --out) so "
                                               "that `pear-lens demo` runs with no option")
    model: str = option(DEFAULT_MODEL, help="registry name, local Hugging Face folder or hub id")
    train: TrainConfig = option(default_factory=lambda: TrainConfig(precision="bf16"), prefix="",
                                defaults_reason=DEMO_PRECISION, help="training of τ")
    n_eval: int = option(40, help="held-out copy-task sequences for the before/after check")
    kv_items: int = option(60, help="key-value retrieval items for the before/after check (calibrated size and style)")
    allow_weak_copy_task: bool = option(False, help="discover heads even when the model copies the proxy task "
                                                    "poorly (see `pear-lens discover --help`)")
    overwrite: bool = option(False, help="replace the folder --out names if it is an earlier demo folder")
    no_png: bool = option(False, help="skip the static figures (PNG, PDF, SVG; they need a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bars")


def before_after(model: Any, hf_dir: Path, batches: list, config: DemoConfig) -> dict[str, Any]:
    """Copy-task and KV-retrieval results of the original and the folded model (loaded from ``hf_dir``)."""
    from transformers import AutoModelForCausalLM

    from pear_lens.evaluation import conditions as C
    from pear_lens.evaluation.tasks.calibration import settings_for
    from pear_lens.evaluation.runner import evaluate
    from pear_lens.evaluation.tasks import TaskName, generate_items
    from pear_lens.models.loaded import DTYPES
    from pear_lens.reweight import evaluate_copy_hf

    def load_folded() -> Any:
        if model.device_map is not None:  # spread like the model it was folded from
            return AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=DTYPES[model.dtype],
                                                        device_map=model.device_map).eval()
        return AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=DTYPES[model.dtype]).to(model.device).eval()

    conds = [C.baseline(model), C.Condition("folded", C.ConditionKind.PEAR, load_folded)]
    built = {c.label: c.build() for c in conds}  # each model loaded once, for both checks (neither changes it)
    copy = {label: evaluate_copy_hf(hf, batches) for label, hf in built.items()}
    conds = [dataclasses.replace(c, build=lambda hf=built[c.label]: hf) for c in conds]
    settings = settings_for(model.name, TaskName.KV, model.tokenizer)
    items = generate_items(TaskName.KV, settings, config.kv_items, seed=0)
    kv = evaluate(model.name, TaskName.KV.value, items, conds, model.tokenizer, settings, n_ctx=model.n_ctx,
                  progress=not config.quiet)
    overall = kv.summary[kv.summary["gold_position"].astype(str) == "all"].set_index("condition")
    return {
        "copy_task": {name: {"accuracy": c.accuracy, "loss": c.loss, "n_sequences": c.n_sequences}
                      for name, c in copy.items()},
        "kv_retrieval": {
            "settings": settings.to_dict(), "n_items": len(items),
            "accuracy": {name: {k: float(overall.loc[name, k]) for k in ("accuracy", "ci_low", "ci_high")}
                         for name in overall.index},
            "examples": kv.items.head(6)[["condition", "answers", "output", "correct"]].to_dict("records"),
        },
    }


def demo(config: DemoConfig) -> dict[str, Any]:
    from pear_lens.k_sweep import EVAL_SEED, eval_batches
    from pear_lens.verified_fold import fold_verified, save_folded
    from pear_lens.io import check_output, staged_dir
    from pear_lens.figure_files import check_static_export
    from pear_lens.models.loaded import load_model
    from pear_lens.runs import record_stage, set_recorded_out
    from pear_lens.workflow import DiscoverConfig, discover, train_into_run

    out = Path(config.out)
    # the same rule as every command: never replace a folder pear_lens did not write (here: an earlier demo)
    check_output(out, kind="demo", inputs=(config.model,), overwrite=config.overwrite)
    config.check_placement()
    dtype = config.resolved_dtype()
    if not config.no_png:
        check_static_export()
    t0 = time.perf_counter()
    clock: dict[str, float] = {}

    def lap(stage: str) -> None:
        clock[stage] = round(time.perf_counter() - t0 - sum(clock.values()), 1)
        print(f"[{stage}] done in {clock[stage]:.0f} s", flush=True)

    # every stage writes into a staged folder beside OUT, swapped in only when the check is done
    with staged_dir(out, overwrite=config.overwrite, kind="demo", inputs=(config.model,)) as run:
        hf_dir = run / "folded_hf"
        print(f"1/4 discover: scoring every head of {config.model}", flush=True)
        discover(DiscoverConfig(out=run, model=config.model, overwrite=True, no_png=config.no_png,
                                quiet=config.quiet, allow_weak_copy_task=config.allow_weak_copy_task,
                                dtype=dtype, **config.device_options()))
        set_recorded_out(run, out)  # where the folder ends up, not the staging name
        lap("discover")
        model = load_model(config.model, **config.load_options())
        train = config.train
        what = f"the top {train.k}" if not train.heads else f"{len(train.heads)}"
        print(f"2/4 train: τ for {what} heads, {train.steps} steps, {train.precision}", flush=True)
        artifact, result = train_into_run(run, train, model=model, overwrite=True, png=not config.no_png,
                                          quiet=config.quiet)
        lap("train")
        print(f"3/4 apply: folding τ into a Hugging Face copy -> {out / 'folded_hf'}", flush=True)
        hf, note, _ = fold_verified(run, None, model)  # the dtype's tolerance
        note["artifact"] = str(out.resolve())
        save_folded(hf_dir, hf, model.tokenizer, note)
        write_marker(hf_dir, "folded")
        record_stage(run, "apply", model.placement())
        lap("apply")

        print("4/4 check: original vs folded Hugging Face model, loaded separately", flush=True)
        batches = eval_batches(model, config.n_eval, n=50, seed=EVAL_SEED, batch=10)
        check = before_after(model, hf_dir, batches, config)
        record_stage(run, "check", model.placement())
        lap("check")
        check.update({"heads": artifact.to_dataframe().to_dict("records"),
                      "verification": note["verification"],
                      "training_loss": [result.loss_curve[0], result.loss_curve[-1]], "seconds": clock})
        atomic_write_json(run / DEMO_CHECK_JSON, check)
    _report(out, out / "folded_hf", check)
    return check


def _report(run: Path, hf_dir: Path, check: dict[str, Any]) -> None:
    ct, kv = check["copy_task"], check["kv_retrieval"]
    print("\nbefore/after (baseline -> folded):")
    print(f"  copy task, {ct['baseline']['n_sequences']} held-out sequences: accuracy "
          f"{ct['baseline']['accuracy']:.3f} -> {ct['folded']['accuracy']:.3f}, loss "
          f"{ct['baseline']['loss']:.4f} -> {ct['folded']['loss']:.4f}")
    acc = {k: f"{v['accuracy']:.0%} [{v['ci_low']:.0%}, {v['ci_high']:.0%}]" for k, v in kv["accuracy"].items()}
    print(f"  KV retrieval, {kv['n_items']} items of {kv['settings']['n_context']} pairs "
          f"({kv['settings']['prompt_style']} prompt): {acc['baseline']} -> {acc['folded']} correct (95% CI)")
    v = check["verification"]
    print(f"  largest logit difference of the folded model: {v['vs_hooked_bridge']:.2g} to the hooked bridge, "
          f"{v['vs_unfolded_hf']:.2g} to the unfolded model; stage times (s): {check['seconds']}")
    print(f"\nrun folder:      {run}  (head_scores.csv, heatmap.html/png, discovery.json, pear.json, "
          f"coefficients.safetensors, training_log.csv, training.html/png, {DEMO_CHECK_JSON})")
    print(f"folded HF model: {hf_dir}  (AutoModelForCausalLM.from_pretrained({str(hf_dir)!r}))")
