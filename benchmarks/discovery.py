"""Speed and exactness of the head scans, measured side by side in one run.

For each method the fast implementation is timed on every head and the plain
reference (one full hooked forward per head) on a subset of heads spread over
the layers; speed-ups compare the *per-head* cost of the two, which is what a
full plain scan would pay (the plain cost does not depend on the layer; the
fast cost does, which is why the fast side always runs on every head).

1. path: the reference task (4 settings). Subset = the fast scan's top heads
   plus heads spread over the layers; ``max_rel_diff`` = max |fast − plain| /
   max |plain| over that subset.
2. activation (mean ablation at all positions, the default): one reference
   setting (N=20, n=50), fast on all heads, plain on a spread subset. Every
   position changes from the head's block up, so the fast scan still runs
   (n_layers − layer) blocks at every position per head, about half a plain
   forward: its speed-up is bounded near 2.5×; the benchmark measures that
   ceiling (one forward, logits at one position) beside it.
   ``activation_speedup`` is this one.
3. activation at ``end`` only: the same setting; the fast scan runs one-token
   steps on the clean key-value cache. Printed on its own line
   (``activation_end_speedup``), and its difference counts in ``max_rel_diff``.
4. attribution: the same setting; its speed-up is the measured time of the
   *full* fast exact activation scan (all positions) over the attribution time, and
   ``spearman_attr`` its rank correlation with exact activation over all heads.

Run: ``python benchmarks/discovery.py`` (about 15 minutes on 2 cores). The
last line is machine-readable; the output is also kept in
``figures/benchmarks/discovery.txt`` for the README. Another model keeps its own
file, ``discovery_MODEL.txt``; ``--path-only`` runs only the first part (for a
model where the plain loops of every method would take too long).
"""
from __future__ import annotations

import argparse
import time

import torch

from _report import Bar as _Bar, Report, spread, timed

from pear_lens.agreement import spearman
from pear_lens.mediation import activation, path
from pear_lens.mediation.base import Ablation, Positions
from pear_lens.metrics import Difference, Metric, delta
from pear_lens.models import load_model
from pear_lens.proxy_task import ProxyTask


DEFAULT_MODEL = "smollm2-135m-instruct"


def plain_subset(setting_fn, model, task, heads, **kw):
    """Plain per-setting loop restricted to ``heads``; returns π̃ [S, L, H], π [S], seconds."""
    patched, cleans = [], []
    t0 = time.perf_counter()
    for batch in task.batches(model):
        scan = setting_fn(model, batch, Metric.LOGIT_MINUS_MEAN, Ablation.MEAN, *kw.get("extra", ()), 0, _Bar(),
                          heads=heads)
        patched.append(scan.patched)
        cleans.append(scan.clean)
    return torch.stack(patched), torch.tensor(cleans), time.perf_counter() - t0


def rel_scores(patched, cleans):
    return torch.stack([delta(p.double(), c, Difference.RELATIVE).float() for p, c in zip(patched, cleans)]).mean(0)


def against_plain(fast, t_fast, setting_fn, model, task, heads, extra=()):
    """Time the plain loop on ``heads``; return its seconds, max |fast − plain| / max |plain| there, and the
    per-head speed-up of the fast scan (which ran on every head in ``t_fast``)."""
    patched, cleans, t_plain = plain_subset(setting_fn, model, task, heads, extra=extra)
    plain = rel_scores(patched, cleans)
    idx = tuple(torch.tensor(heads).T)
    diff = (fast.scores[idx] - plain[idx]).abs().max() / plain[idx].abs().max()
    return t_plain, diff, (t_plain / len(heads)) / (t_fast / fast.scores.numel())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL,
                    help="model to measure; its output is kept in figures/benchmarks/discovery[_MODEL].txt")
    ap.add_argument("--plain-heads", type=int, default=8, help="heads timed with the plain loops")
    ap.add_argument("--path-only", action="store_true",
                    help="only the reference method, path patching (for a model where every method's plain loop "
                         "would take too long)")
    args = ap.parse_args(argv)
    command = "python benchmarks/discovery.py" + (f" --model {args.model}" if args.model != DEFAULT_MODEL else "")
    command += " --path-only" if args.path_only else ""
    command += f" --plain-heads {args.plain_heads}" if args.plain_heads != 8 else ""
    name = "discovery" if args.model == DEFAULT_MODEL else f"discovery_{args.model}"
    report = Report(name, command)

    model = load_model(args.model)
    L, H = model.n_layers, model.n_heads
    report(f"model {model.name}: {L} layers x {H} heads = {L * H}; torch threads {torch.get_num_threads()}")

    # 1. path patching, reference task
    task = ProxyTask()
    fast, t_fast = timed(lambda: path.path_patching(model, task, progress=False))
    subset = sorted(set(fast.top_k(3)) | set(spread(L, H, args.plain_heads - 3)))
    t_plain, diff, path_speedup = against_plain(fast, t_fast, path.setting_plain, model, task, subset)
    report(f"path: fast {t_fast:.1f} s for {L * H} heads ({1e3 * t_fast / (L * H):.0f} ms/head); "
          f"plain {t_plain:.1f} s for {len(subset)} heads ({t_plain / len(subset):.1f} s/head) "
          f"-> {path_speedup:.1f}x; max |fast-plain|/max|plain| = {diff:.2e} over {subset}")

    if args.path_only:
        report(f"path_speedup={path_speedup:.1f} max_rel_diff={float(diff):.2e}")
        report.save()
        return

    # 2. activation patching, one reference setting
    task1 = ProxyTask(settings=(task.settings[0],))
    act, t_act = timed(lambda: activation.activation_patching(model, task1, progress=False))
    a_subset = spread(L, H, args.plain_heads)
    t_act_plain, a_diff, act_speedup = against_plain(act, t_act, activation.setting_plain, model, task1, a_subset,
                                                     extra=(Positions.ALL,))
    report(f"activation (N={task1.settings[0][0]}, n={task1.settings[0][1]}, mean, all positions): fast {t_act:.1f} s "
          f"for {L * H} heads; plain {t_act_plain:.1f} s for {len(a_subset)} heads -> {act_speedup:.2f}x; "
          f"max |fast-plain|/max|plain| = {a_diff:.2e}")
    # the ceiling of any exact all-positions scan: a head at layer l changes every position from block l up,
    # so it must rerun (L - l) of the L blocks on the whole sequence; nothing below can be skipped
    (batch,) = task1.batches(model)
    with torch.no_grad():
        _, t_body = timed(lambda: [model.bridge(batch.tokens[:, : batch.end + 1], logits_to_keep=1) for _ in range(2)])
    share = sum(L - layer for layer in range(L)) / (L * L)
    ceiling = (t_act_plain / len(a_subset)) / (share * t_body / 2)
    report(f"activation, all positions: each head reruns on average {share:.1%} of the blocks on every position; "
           f"one forward with logits at one position takes {t_body / 2:.1f} s here, so no exact scan can beat "
           f"the plain loop by more than about {ceiling:.2f}x (this one reaches {act_speedup / ceiling:.0%} of that)")

    # 3. activation patching at `end` only: cached one-token steps
    end, t_end = timed(lambda: activation.activation_patching(model, task1, progress=False,
                                                           options=activation.ActivationOptions(positions=Positions.END)))
    e_subset = sorted(set(end.top_k(2)) | set(spread(L, H, args.plain_heads - 2)))
    t_end_plain, e_diff, end_speedup = against_plain(end, t_end, activation.setting_plain, model, task1, e_subset,
                                                     extra=(Positions.END,))
    report(f"activation (N={task1.settings[0][0]}, n={task1.settings[0][1]}, mean, `end` only): fast {t_end:.1f} s "
           f"for {L * H} heads; plain {t_end_plain:.1f} s for {len(e_subset)} heads -> {end_speedup:.1f}x; "
           f"max |fast-plain|/max|plain| = {e_diff:.2e} over {e_subset}")
    report(f"activation_end_speedup={end_speedup:.1f}")

    # 4. attribution against the exact activation scan it approximates
    from pear_lens.mediation import attribution

    attr, t_attr = timed(lambda: attribution.attribution_patching(model, task1, progress=False))
    rho = spearman(attr.scores, act.scores)
    attr_speedup = t_act / t_attr
    report(f"attribution: {t_attr:.1f} s vs exact fast activation {t_act:.1f} s -> {attr_speedup:.1f}x; "
          f"Spearman with exact = {rho:.3f}")

    max_rel = max(float(diff), float(a_diff), float(e_diff))
    report(f"path_speedup={path_speedup:.1f} activation_speedup={act_speedup:.2f} "
          f"attribution_speedup={attr_speedup:.1f} max_rel_diff={max_rel:.2e} spearman_attr={rho:.3f}")
    report.save()


if __name__ == "__main__":
    main()
