"""``pear-lens demo`` (``make demo``): the whole pipeline on one model, then a before/after check.

discover → train → apply, each writing into one run folder, then the original
and the folded Hugging Face models, loaded separately, are compared on
held-out copy-task sequences and on a few key-value retrieval prompts
(greedy). The check is a smoke test that the folded folder is a working,
changed model — twenty prompts are not an evaluation.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pear_lens.config import option
from pear_lens.io import atomic_write_json
from pear_lens.models import DEFAULT_MODEL

KV_PROMPT = ('Extract the value corresponding to the specified key in the JSON object below.\n\n'
             'JSON data:\n{data}\n\nKey: "{key}"\nCorresponding value: "')
"""The KV-retrieval prompt of PEAR_SPEC §6, ending with the answer's opening quote, no chat template."""
DEMO_CHECK_JSON = "demo_check.json"


@dataclass
class DemoConfig:
    """``pear-lens demo``: discover → train → apply → before/after check."""

    out: Path = option(Path("runs/demo"), help="run folder (replaced if it exists)")
    model: str = option(DEFAULT_MODEL, help="registry name, local Hugging Face folder or hub id")
    top_k: int = option(10, help="heads to re-weight")
    steps: int = option(60, help="training steps (the reference recipe uses 60)")
    precision: str = option("bf16", choices=["fp32", "bf16"],
                            help="training precision; bf16 (autocast, as the reference) keeps the demo short on CPU")
    n_eval: int = option(40, help="held-out copy-task sequences for the before/after check")
    kv_prompts: int = option(20, help="key-value retrieval prompts for the before/after check")
    kv_pairs: int = option(4, help="key-value pairs per prompt (3-digit numbers; 4 pairs: about 50%% correct for "
                                   "the original SmolLM2, chosen on the original model alone)")
    no_png: bool = option(False, help="skip static PNG figures")
    quiet: bool = option(False, help="no progress bars")


def kv_retrieval_prompts(n_prompts: int, n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """``(prompt, value)`` pairs: a JSON object of ``n_pairs`` 3-digit keys and values, one key asked."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_prompts):
        numbers = rng.sample(range(100, 1000), 2 * n_pairs)
        pairs = {str(k): str(v) for k, v in zip(numbers[:n_pairs], numbers[n_pairs:])}
        key = rng.choice(list(pairs))
        out.append((KV_PROMPT.format(data=json.dumps(pairs), key=key), pairs[key]))
    return out


@torch.no_grad()
def greedy(hf_model: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 6) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids.to(hf_model.device)
    out = hf_model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def before_after(original: Any, folded: Any, tokenizer: Any, batches: list, config: DemoConfig) -> dict[str, Any]:
    """Copy-task and KV-retrieval results of the original and the folded model."""
    from pear_lens.reweight import evaluate_copy_hf

    copy = {name: evaluate_copy_hf(m, batches) for name, m in (("original", original), ("folded", folded))}
    kv = []
    for prompt, value in kv_retrieval_prompts(config.kv_prompts, config.kv_pairs):
        answers = {name: greedy(m, tokenizer, prompt) for name, m in (("original", original), ("folded", folded))}
        kv.append({"value": value, **answers, **{f"{k}_correct": a.strip().startswith(value) for k, a in answers.items()}})
    return {
        "copy_task": {name: {"accuracy": c.accuracy, "loss": c.loss, "n_sequences": c.n_sequences}
                      for name, c in copy.items()},
        "kv_retrieval": {
            "prompt_style": "PEAR_SPEC §6 prompt, no chat template, ends with the answer's opening quote; greedy",
            "pairs_per_prompt": config.kv_pairs,
            "accuracy": {name: sum(r[f"{name}_correct"] for r in kv) / len(kv) for name in ("original", "folded")},
            "prompts": kv,
        },
    }


def demo(config: DemoConfig) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from pear_lens.ablation import EVAL_SEED, eval_batches
    from pear_lens.apply import ApplyConfig, apply
    from pear_lens.discover import DiscoverConfig, discover
    from pear_lens.models import load_model
    from pear_lens.train import TrainRunConfig, train_run

    run, hf_dir = Path(config.out), Path(config.out) / "folded_hf"
    t0 = time.perf_counter()
    clock: dict[str, float] = {}

    def lap(stage: str) -> None:
        clock[stage] = round(time.perf_counter() - t0 - sum(clock.values()), 1)
        print(f"[{stage}] done in {clock[stage]:.0f} s", flush=True)

    print(f"1/4 discover: scoring every head of {config.model}", flush=True)
    discover(DiscoverConfig(out=run, model=config.model, overwrite=True, no_png=config.no_png, quiet=config.quiet))
    lap("discover")
    model = load_model(config.model)
    print(f"2/4 train: τ for the top {config.top_k} heads, {config.steps} steps, {config.precision}", flush=True)
    artifact, result = train_run(TrainRunConfig(run_dir=run, top_k=config.top_k, steps=config.steps,
                                                precision=config.precision, overwrite=True, no_png=config.no_png,
                                                quiet=config.quiet), model)
    lap("train")
    print(f"3/4 apply: folding τ into a Hugging Face copy -> {hf_dir}", flush=True)
    note = apply(ApplyConfig(run_dir=run, out=hf_dir, overwrite=True), model)
    lap("apply")

    print("4/4 check: original vs folded Hugging Face model, loaded separately", flush=True)
    batches = eval_batches(model, config.n_eval, n=50, seed=EVAL_SEED, batch=10)
    original, tokenizer = model.fresh_hf(), model.tokenizer
    del model  # the bridge is no longer needed
    folded = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    check = before_after(original, folded, tokenizer, batches, config)
    lap("check")
    check.update({"heads": artifact.to_dataframe().to_dict("records"),
                  "verification": note["verification"],
                  "training_loss": [result.loss_curve[0], result.loss_curve[-1]], "seconds": clock})
    atomic_write_json(run / DEMO_CHECK_JSON, check)
    _report(run, hf_dir, check)
    return check


def _report(run: Path, hf_dir: Path, check: dict[str, Any]) -> None:
    ct, kv = check["copy_task"], check["kv_retrieval"]
    print("\nbefore/after (original -> folded):")
    print(f"  copy task, {ct['original']['n_sequences']} held-out sequences: accuracy "
          f"{ct['original']['accuracy']:.3f} -> {ct['folded']['accuracy']:.3f}, loss "
          f"{ct['original']['loss']:.4f} -> {ct['folded']['loss']:.4f}")
    print(f"  KV retrieval, {len(kv['prompts'])} prompts of {kv['pairs_per_prompt']} pairs: "
          f"{kv['accuracy']['original']:.0%} -> {kv['accuracy']['folded']:.0%} correct")
    for r in kv["prompts"][:3]:
        print(f"    value {r['value']}: original {r['original']!r}, folded {r['folded']!r}")
    v = check["verification"]
    print(f"  largest logit difference of the folded model: {v['vs_hooked_bridge']:.2g} to the hooked bridge, "
          f"{v['vs_unfolded_hf']:.2g} to the unfolded model; stage times (s): {check['seconds']}")
    print(f"\nrun folder:      {run}  (head_scores.csv, heatmap.html/png, discovery.json, pear.json, "
          f"coefficients.safetensors, training_log.csv, training.html/png, {DEMO_CHECK_JSON})")
    print(f"folded HF model: {hf_dir}  (AutoModelForCausalLM.from_pretrained({str(hf_dir)!r}))")
