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
Python process, which runs the same forwards; the process's peak resident set
size (``ru_maxrss``) after loading and running minus its resident size just
before loading is that model's memory. Both folders are written by ``save_pretrained`` (the
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
    import json, resource, sys, torch
    from transformers import AutoModelForCausalLM
    folder, lengths = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
    torch.set_num_threads(int(sys.argv[3]))
    with open("/proc/self/statm") as f:  # resident pages now (the import peak is not the model's)
        before = int(f.read().split()[1]) * resource.getpagesize() // 1024
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for n in lengths:
            model(torch.randint(2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(n)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"kib": after - before}))
""")


def peak_rss(folder: Path, lengths: list[int], threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(folder), ",".join(map(str, lengths)), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["kib"] / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="run folder with the artifact")
    ap.add_argument("--hf-dir", type=Path, default=None, help="folded folder (default: RUN_DIR/folded_hf if present)")
    ap.add_argument("--lengths", default="128,512,1024")
    ap.add_argument("--rounds", type=int, default=7)
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
    print(f"largest |logit difference| folded and pre-hook vs hooked bridge: {worst:.2g}")

    mem = {"original": [], "folded": []}
    for _ in range(args.memory_repeats):
        for name, folder in (("original", tmp / "original"), ("folded", hf_dir)):
            mem[name].append(peak_rss(folder, lengths, torch.get_num_threads()))
    m0, m1 = statistics.median(mem["original"]), statistics.median(mem["folded"])
    print(f"peak RSS growth in a fresh process (load + forwards): original {m0:.1f} MiB, folded {m1:.1f} MiB "
          f"(runs: {mem})")
    print(f"pre-hook (unfolded, plain PyTorch) latency ratio: {ratios['hf_prehook']:.3f}")
    memory_ratio = m1 / m0 if m0 > 0 else float("nan")
    print(f"latency_ratio={ratios['folded']:.3f} memory_ratio={memory_ratio:.3f} params_equal={params_equal} "
          f"hooked_ratio={ratios['hooked_bridge']:.3f}")


if __name__ == "__main__":
    main()
