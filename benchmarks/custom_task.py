"""Speed and exactness of the path scan on a task of your own (IOI on SmolLM2), beside TransformerLens's loop.

The task is examples/ioi_task.py's (100 prompts by default, two token lengths, so two batches). Measured side
by side in one run:

1. the fast path scan, ``score_heads(model, task, "logit_diff", "path")`` (mean ablation), on all heads;
2. TransformerLens's per-head loop, ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos`` on the
   same bridge (one full forward of every prompt per head; the clean prompts run with each head's output taken
   from the corrupted prompts, as a TransformerLens user scores heads on this task), timed on a subset of heads
   spread over the layers and extrapolated to every head (its cost per head does not depend on the layer);
   ``custom_path_speedup`` = that extrapolation / the fast scan's time. The two compute different quantities
   (path patching freezes attention and patches at the scored position; this loop patches every position and
   lets attention move), so this is a speed comparison only;
3. pear_lens's own plain path loop (``implementation="plain"``: one full hooked forward per head, q, k and v
   frozen), on the same subset plus the fast scan's strongest heads: the exactness check, ``max_rel_diff`` =
   max |fast − plain| / max |plain| there, and the per-head speed-up of fast over plain.

Run: ``python benchmarks/custom_task.py`` (a few minutes on 2 cores). The last line is machine-readable; the
output is also kept in ``figures/benchmarks/custom_task.txt``.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from _report import ROOT, Bar as _Bar, Report, spread, timed

from pear_lens.mediation import path, score_heads
from pear_lens.mediation.base import Ablation
from pear_lens.metrics import Metric
from pear_lens.models import load_model

MODEL = "smollm2-135m-instruct"


def load_example(name: str):
    """``examples/NAME.py`` imported as a module (the examples are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_path(model, batches, heads) -> tuple[torch.Tensor, float]:
    """Absolute Δ (patched − clean, means over all prompts) of ``heads`` by the plain path loop, and seconds."""
    t0 = time.perf_counter()
    n = sum(b.batch_size for b in batches)
    patched, clean = torch.zeros(model.n_layers, model.n_heads, dtype=torch.float64), 0.0
    for batch in batches:
        scan = path.setting_plain(model, batch, Metric.LOGIT_DIFF, Ablation.MEAN, 0, _Bar(), heads=heads)
        patched += scan.patched.double() * batch.batch_size / n
        clean += scan.clean * batch.batch_size / n
    return (patched - clean).float(), time.perf_counter() - t0


def transformer_lens_loop(model, batches, heads) -> float:
    """Seconds of TransformerLens's per-head loop on ``heads`` over every batch (clean prompts run, each head's
    ``hook_z`` patched in from the corrupted prompts' cache)."""
    import pandas as pd
    from transformer_lens.patching import get_act_patch_attn_head_out_all_pos

    bridge = model.bridge
    index = pd.DataFrame(heads, columns=["layer", "head"])
    t0 = time.perf_counter()
    for batch in batches:
        answers, foils = batch.targets, batch.foils

        def logit_diff(logits: torch.Tensor) -> torch.Tensor:
            last = logits[:, -1]
            return (last.gather(1, answers[:, None]) - last.gather(1, foils[:, None])).mean()

        with torch.no_grad():
            _, cache = bridge.run_with_cache(batch.corrupted, names_filter=lambda name: name.endswith("attn.hook_z"))
            get_act_patch_attn_head_out_all_pos(bridge, batch.tokens, cache, logit_diff, index_axis_names=None,
                                                index_df=index)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=100, help="IOI prompts (examples/ioi_task.py, seed 0)")
    ap.add_argument("--loop-heads", type=int, default=6, help="heads timed with the per-head loops")
    args = ap.parse_args(argv)
    command = "python benchmarks/custom_task.py"
    command += f" --prompts {args.prompts}" if args.prompts != 100 else ""
    command += f" --loop-heads {args.loop_heads}" if args.loop_heads != 6 else ""
    report = Report("custom_task", command)

    ioi = load_example("ioi_task")
    model = load_model(MODEL)
    L, H = model.n_layers, model.n_heads
    task = ioi.ioi_task(args.prompts)
    batches = task.batches(model)
    report(f"model {model.name}: {L} layers x {H} heads = {L * H}; torch threads {torch.get_num_threads()}")
    report(f"task: {len(task)} IOI prompts (examples/ioi_task.py) in {len(batches)} batches "
           f"({', '.join(b.label for b in batches)}); metric logit_diff (answer − foil), absolute difference")
    with torch.no_grad():
        model.bridge(batches[0].tokens[:2])  # warm-up: first-call allocations are nobody's cost

    # 1. the fast path scan on every head
    fast, t_fast = timed(lambda: score_heads(model, task, "logit_diff", "path", progress=False))
    report(f"fast path scan (mean ablation): {t_fast:.1f} s for {L * H} heads ({1e3 * t_fast / (L * H):.0f} ms/head); "
           f"clean logit diff {fast.clean_per_prompt.mean():.2f}; strongest heads "
           f"{[(l, h) for l, h in fast.top_k(L * H)[::-1][:3]]} (most negative Δ)")

    # 2. TransformerLens's loop: one full forward of every prompt per head
    subset = spread(L, H, args.loop_heads)
    t_tl = transformer_lens_loop(model, batches, subset)
    t_tl_all = t_tl / len(subset) * L * H
    speedup = t_tl_all / t_fast
    report(f"TransformerLens get_act_patch_attn_head_out_all_pos: {t_tl:.1f} s for {len(subset)} heads {subset} "
           f"({t_tl / len(subset):.2f} s/head) -> {t_tl_all:.0f} s for {L * H} heads, extrapolated; "
           f"fast path scan {speedup:.1f}x faster")

    # 3. pear_lens's plain path loop: the exactness check
    strongest = [divmod(int(i), H) for i in fast.scores.abs().flatten().argsort(descending=True)[:2]]
    p_subset = sorted(set(subset) | set(strongest))
    plain, t_plain = plain_path(model, batches, p_subset)
    idx = tuple(torch.tensor(p_subset).T)
    diff = float((fast.scores[idx] - plain[idx]).abs().max() / plain[idx].abs().max())
    plain_speedup = (t_plain / len(p_subset)) / (t_fast / (L * H))
    report(f"plain path loop: {t_plain:.1f} s for {len(p_subset)} heads ({t_plain / len(p_subset):.2f} s/head) "
           f"-> fast {plain_speedup:.1f}x faster per head; max |fast-plain|/max|plain| = {diff:.2e} over {p_subset}")
    report(f"custom_path_speedup={speedup:.1f} custom_path_vs_plain={plain_speedup:.1f} max_rel_diff={diff:.2e}")
    report.save()


if __name__ == "__main__":
    main()
