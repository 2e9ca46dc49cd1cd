"""Zero inference overhead, measured: the original vs the folded Hugging Face model, side by side.

Latency: one forward pass (batch 1, no gradients) at several sequence lengths,
for four models in interleaved rounds on the same inputs, the order rotating
every round: the original Hugging Face model, the folded one (loaded from the
folder ``pear-lens apply`` wrote, as a user would), the hooked unfolded
re-weighting (the TransformerLens bridge with τ hooks,
:func:`pear_lens.reweight.reweighted`), and, for reference, the original
Hugging Face model with forward pre-hooks scaling the heads at the output
projection (:func:`pear_lens.convert.reweighted_hf`, unfolded re-weighting
without TransformerLens). A ratio is, per sequence length, the median over
rounds of (model time / original time) measured in the same round, then the
geometric mean over lengths; the same from the fastest runs (as ``timeit``
advises) is printed beside it. One
thread by default: on a machine shared with other jobs a single thread is
disturbed far less than two that must wait for each other (``--threads``).

Memory: each of the original and the folded folder is loaded in its own fresh
Python process (glibc's mmap threshold fixed, so that freed buffers do not
linger at random), which runs the same forwards. The resident set size after
loading (minus that before loading) is the loaded model; before each forward
the peak is reset (``/proc/self/clear_refs``), and the largest peak during a
forward (minus the RSS before loading) is that model's memory. Both folders are written by ``save_pretrained`` (the
original is saved by this script), so file format does not differ. Each
process runs ``--memory-repeats`` times, alternating, and the medians are
compared (the spread between repeats of the same program, ~30 MiB of page
and allocator noise here, is printed).

Last line: ``latency_ratio=X memory_ratio=Y params_equal=True hooked_ratio=Z``
(folded/original, folded/original, same parameter names, shapes and dtypes,
hooked bridge/original).

    python benchmarks/overhead.py [--run-dir runs/demo] [--hf-dir runs/demo/folded_hf]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from pear_lens.artifact import load_artifact
from pear_lens.convert import drop_gguf_quantizer, fold_into_hf, reweighted_hf
from pear_lens.models import load_model
from pear_lens.reweight import reweighted

from _report import kept_output

MEMORY_SCRIPT = textwrap.dedent("""
    import gc, json, sys, torch
    from transformers import AutoModelForCausalLM

    def status(key):  # kiB, from /proc/self/status
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    def reset_peak():  # VmHWM := VmRSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    folder, lengths = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
    torch.set_num_threads(int(sys.argv[3]))
    before = status("VmRSS")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    gc.collect()
    loaded = status("VmRSS")
    peaks = {}
    with torch.no_grad():
        for n in lengths:
            reset_peak()
            model(torch.randint(2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)))
            peaks[n] = status("VmHWM") - before
            gc.collect()
    print(json.dumps({"kib": max(peaks.values()), "load_kib": loaded - before}))
""")




def peak_rss(folder: Path, lengths: list[int], threads: int) -> tuple[float, float]:
    """(peak RSS during the forwards, RSS after loading), both minus the RSS before loading, in MiB."""
    # a fixed mmap threshold: glibc's adaptive one makes freed logits buffers linger at random
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder), ",".join(map(str, lengths)), str(threads)],
                         capture_output=True, text=True, check=True, env=env)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["kib"] / 1024, r["load_kib"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run folder with the artifact")
    ap.add_argument("--hf-dir", type=Path, default=None, help="folded folder (default: RUN_DIR/folded_hf if present)")
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for every model (and the memory runs)")
    ap.add_argument("--memory-repeats", type=int, default=5)
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    torch.set_num_threads(args.threads)

    artifact = load_artifact(args.run_dir)
    model = load_model(artifact.base_model["name"])
    artifact.check_fingerprint(model.fingerprint)
    from transformers import AutoModelForCausalLM

    original = model.fresh_hf()
    tmp = Path(tempfile.mkdtemp(prefix="pear_overhead_"))
    drop_gguf_quantizer(original).save_pretrained(tmp / "original")
    hf_dir = args.hf_dir or args.run_dir / "folded_hf"
    if not (hf_dir / "config.json").exists():
        hf_dir = tmp / "folded"
        fold_into_hf(model.fresh_hf(), artifact).save_pretrained(hf_dir)
        print(f"no folded folder given; folded the artifact into {hf_dir}")
    folded = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    pre_hooked = model.fresh_hf()

    sd0, sd1 = original.state_dict(), folded.state_dict()
    params_equal = (sum(p.numel() for p in original.parameters()) == sum(p.numel() for p in folded.parameters())
                    and {k: (v.shape, v.dtype) for k, v in sd0.items()} == {k: (v.shape, v.dtype) for k, v in sd1.items()})
    print(f"model {model.name}; {len(artifact.heads)} heads folded from {args.run_dir}; folded folder {hf_dir}; "
          f"{torch.get_num_threads()} threads")

    variants = {
        "original": lambda x: original(x).logits,
        "folded": lambda x: folded(x).logits,
        "hooked_bridge": None,
        "hf_prehook": None,
    }
    times = {n: {v: [] for v in variants} for n in lengths}
    gen = torch.Generator().manual_seed(0)
    inputs = {n: torch.randint(2, model.d_vocab, (1, n), generator=gen) for n in lengths}
    with torch.no_grad(), reweighted(model, artifact.heads, artifact.tau) as bridge, \
            reweighted_hf(pre_hooked, artifact.coefficients()):
        variants["hooked_bridge"] = lambda x: bridge(x)
        variants["hf_prehook"] = lambda x: pre_hooked(x).logits
        ref = {n: variants["hooked_bridge"](inputs[n]) for n in lengths}  # warm-up + a correctness check
        worst = max(float((variants[v](inputs[n]) - ref[n]).abs().max())
                    for n in lengths for v in ("folded", "hf_prehook"))
        names = list(variants)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            for n in lengths:
                for v in order:
                    t0 = time.perf_counter()
                    variants[v](inputs[n])
                    times[n][v].append(time.perf_counter() - t0)
    def geomean(values: list[float]) -> float:
        return math.exp(statistics.fmean(math.log(x) for x in values))

    ratios, min_ratios = {}, {}
    for v in variants:
        best, med = [], []
        for n in lengths:
            best.append(min(times[n][v]) / min(times[n]["original"]))
            med.append(statistics.median(t / o for t, o in zip(times[n][v], times[n]["original"])))
            print(f"  {v:<14} n={n:<5} min {min(times[n][v]) * 1e3:8.1f} ms  median "
                  f"{statistics.median(times[n][v]) * 1e3:8.1f} ms  ratio to original: median per round "
                  f"{med[-1]:.3f}, of minima {best[-1]:.3f}")
        ratios[v], min_ratios[v] = geomean(med), geomean(best)
    print(f"largest |logit difference| of folded and pre-hook vs the hooked bridge: {worst:.2g} "
          "(SDPA vs the bridge's eager attention accounts for ~1e-4)")

    mem: dict[str, list[float]] = {"original": [], "folded": []}
    load: dict[str, list[float]] = {"original": [], "folded": []}
    for _ in range(args.memory_repeats):
        for name, folder in (("original", tmp / "original"), ("folded", hf_dir)):
            total, loaded = peak_rss(folder, lengths, torch.get_num_threads())
            mem[name].append(total)
            load[name].append(loaded)
    m0, m1 = statistics.median(mem["original"]), statistics.median(mem["folded"])
    weights = {name: sum(t.numel() * t.element_size() for t in sd.values()) / 2**20
               for name, sd in (("original", sd0), ("folded", sd1))}
    print(f"parameter+buffer bytes: original {weights['original']:.1f} MiB, folded {weights['folded']:.1f} MiB")
    print(f"RSS growth in a fresh process: loaded original {statistics.median(load['original']):.1f} MiB, "
          f"folded {statistics.median(load['folded']):.1f} MiB; peak during the forwards (median of "
          f"{args.memory_repeats}) original {m0:.1f} MiB, folded {m1:.1f} MiB (all runs: "
          + ", ".join(f"{k} {[round(x, 1) for x in v]}" for k, v in mem.items()) + ")")
    print(f"latency ratios of the fastest runs (geometric mean over lengths): folded {min_ratios['folded']:.3f}, "
          f"hooked bridge {min_ratios['hooked_bridge']:.3f}, pre-hook {min_ratios['hf_prehook']:.3f}")
    print(f"pre-hook (unfolded, plain PyTorch) latency ratio: {ratios['hf_prehook']:.3f}")
    memory_ratio = m1 / m0 if m0 > 0 else float("nan")
    print(f"latency_ratio={ratios['folded']:.3f} memory_ratio={memory_ratio:.3f} params_equal={params_equal} "
          f"hooked_ratio={ratios['hooked_bridge']:.3f}")


if __name__ == "__main__":
    with kept_output("overhead", "python " + " ".join(["benchmarks/overhead.py", *sys.argv[1:]])):
        main()
