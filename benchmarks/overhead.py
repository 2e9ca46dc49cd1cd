"""Zero inference overhead, measured: the original vs the folded Hugging Face model, side by side.

Latency: one forward pass (batch 1, no gradients) at several sequence lengths,
for four models in interleaved rounds on the same inputs, the order rotating
every round: the original Hugging Face model, the folded one (loaded from the
folder ``pear-lens apply`` wrote, as a user would), the hooked unfolded
re-weighting (the TransformerLens bridge with τ hooks,
:func:`pear_lens.reweight.reweighted`), and, for reference, the original
Hugging Face model with forward pre-hooks scaling the heads at the output
projection (:func:`pear_lens.convert.reweighted_hf`, unfolded re-weighting
without TransformerLens). A ratio is the
median over rounds of (model time / original time) measured in the same
round, then the geometric mean over sequence lengths.

Memory: each of the original and the folded folder is loaded in its own fresh
Python process, which runs the same forwards. The resident set size after
loading (minus that before loading) is the loaded model; the peak is then reset
(``/proc/self/clear_refs``) so that it measures inference rather than the
loader's own transient copies, and the peak during the forwards (minus the RSS
before loading) is that model's memory. Both folders are written by ``save_pretrained`` (the
original is saved by this script), so file format does not differ. Each
process runs ``--memory-repeats`` times, alternating; medians are compared.

Last line: ``latency_ratio=X memory_ratio=Y params_equal=True hooked_ratio=Z``
(folded/original, folded/original, same parameter names, shapes and dtypes,
hooked bridge/original).

    python benchmarks/overhead.py [--run-dir runs/demo] [--hf-dir runs/demo/folded_hf]
"""
from __future__ import annotations

import argparse
import json
import math
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

MEMORY_SCRIPT = textwrap.dedent("""
    import gc, json, sys, torch
    from transformers import AutoModelForCausalLM

    def status(key):  # kiB, from /proc/self/status
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

    folder, lengths = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
    torch.set_num_threads(int(sys.argv[3]))
    before = status("VmRSS")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    gc.collect()
    loaded = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    with torch.no_grad():
        for n in lengths:
            model(torch.randint(2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)))
    print(json.dumps({"kib": status("VmHWM") - before, "load_kib": loaded - before}))
""")



def peak_rss(folder: Path, lengths: list[int], threads: int) -> tuple[float, float]:
    """(peak RSS during the forwards, RSS after loading), both minus the RSS before loading, in MiB."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder), ",".join(map(str, lengths)), str(threads)],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["kib"] / 1024, r["load_kib"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run folder with the artifact")
    ap.add_argument("--hf-dir", type=Path, default=None, help="folded folder (default: RUN_DIR/folded_hf if present)")
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--memory-repeats", type=int, default=2)
    args = ap.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]

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
    ratios = {}
    for v in variants:
        per_len = []
        for n in lengths:
            per_round = [t / o for t, o in zip(times[n][v], times[n]["original"])]
            per_len.append(statistics.median(per_round))
            print(f"  {v:<14} n={n:<5} median {statistics.median(times[n][v]) * 1e3:8.1f} ms  "
                  f"ratio to original {per_len[-1]:.3f}")
        ratios[v] = math.exp(statistics.fmean(math.log(x) for x in per_len))
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
          f"folded {statistics.median(load['folded']):.1f} MiB; peak during the forwards original {m0:.1f} MiB, "
          f"folded {m1:.1f} MiB (runs: {mem})")
    print(f"pre-hook (unfolded, plain PyTorch) latency ratio: {ratios['hf_prehook']:.3f}")
    memory_ratio = m1 / m0 if m0 > 0 else float("nan")
    print(f"latency_ratio={ratios['folded']:.3f} memory_ratio={memory_ratio:.3f} params_equal={params_equal} "
          f"hooked_ratio={ratios['hooked_bridge']:.3f}")


if __name__ == "__main__":
    main()
