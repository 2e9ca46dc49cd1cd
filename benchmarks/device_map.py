"""A model larger than one GPU: load it with ``device_map="auto"`` and run the path scan; wall time and memory.

Where CUDA is present, a randomly initialised model of Llama-3-8B's shape (transformers ``LlamaConfig``: hidden
4096, 32 layers, 32 heads, 8 KV heads, MLP 14336, vocabulary 128256, RoPE θ 500000: 8.0 B parameters, 16 GB in
bfloat16) is saved in bfloat16 to a temporary folder, loaded through
``pear_lens.load_model(folder, device_map="auto", dtype="bfloat16")`` (accelerate spreads its layers over the
GPUs present) and scored by the path scan (``score_heads(model, task, "logit_diff", "path")``) on a short task of
your own (a ``PromptTask`` of a few random-token prompts with an answer and a foil each). The weights are random,
so the scores mean nothing: what is measured is that the load and the scan work on a model spread over the GPUs,
how long each takes, and ``torch.cuda.max_memory_allocated`` on each GPU.

Without CUDA it prints one line saying it was skipped and exits 0, writing nothing.

Run: ``python benchmarks/device_map.py`` on a machine with one or more GPUs (a few minutes; 16 GB of disk for the
temporary folder). The last line is machine-readable; the output is also kept in
``figures/benchmarks/device_map.txt``. tests/test_gpu_device_map.py runs :func:`run` on a small Llama shape.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from _report import Report

from pear_lens.mediation import score_heads
from pear_lens.models import load_model, tiny_tokenizer
from pear_lens.prompt_task import PromptTask

LLAMA_3_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                  intermediate_size=14336, vocab_size=128256, rope_theta=500000.0)
"""Llama-3-8B's shape as ``transformers.LlamaConfig`` arguments (its weights are not needed: they are drawn)."""

GIB = 2**30


def sync() -> None:
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def build_device(n_bytes: int) -> str:
    """Where the random weights are drawn: the first GPU if they fit there with room to spare, else the CPU."""
    if torch.cuda.is_available() and torch.cuda.mem_get_info(0)[0] > 1.5 * n_bytes:
        return "cuda:0"
    return "cpu"


def save_random_llama(folder: Path, shape: dict[str, Any], seed: int = 0) -> int:
    """Save a Llama of ``shape`` with random bfloat16 weights (and a word-level tokenizer over its vocabulary) to
    ``folder``, loadable by ``load_model(folder, device_map="auto")``; return its parameter count.

    The model is built on the meta device (no memory, no initialisation), then given storage and drawn once:
    N(0, 0.02) for every matrix, 1 for every norm's scale (the rotary table is a buffer recomputed on load).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape, max_position_embeddings=8192, tie_word_embeddings=False)
    config.architectures = ["LlamaForCausalLM"]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    device = build_device(2 * n_params)
    model.to_empty(device=device)
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    model.save_pretrained(folder)
    tiny_tokenizer(vocab_size=shape["vocab_size"], name="random-llama").save_pretrained(folder)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return n_params


def random_task(vocab: int, prompts: int, length: int, seed: int = 0) -> PromptTask:
    """``prompts`` random-token prompts of ``length`` tokens, each with a random answer and foil."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (prompts, length + 2), generator=gen)
    return PromptTask(ids[:, :length], answers=ids[:, length].tolist(), foils=ids[:, length + 1].tolist(),
                      name=f"random tokens ({prompts} x {length})")


def memory() -> dict[str, int]:
    """``torch.cuda.max_memory_allocated`` of every GPU since the last reset, in bytes ({} without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())}


def reset_memory() -> None:
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def run(shape: dict[str, Any], folder: Path, *, prompts: int = 8, length: int = 32, device_map: Any = "auto",
        report: Callable[[str], None] = print) -> dict[str, Any]:
    """Save a random Llama of ``shape`` into ``folder``/model, load it with ``device_map`` in bfloat16 and run the
    path scan on :func:`random_task`; return the scores, the seconds of each stage and the peak memory per GPU."""
    path = Path(folder) / "model"
    t0 = time.perf_counter()
    n_params = save_random_llama(path, shape)
    save_s = time.perf_counter() - t0
    report(f"random Llama {shape}: {n_params / 1e9:.2f} B parameters, saved in bfloat16 in {save_s:.1f} s")

    reset_memory()
    t0 = time.perf_counter()
    model = load_model(str(path), device_map=device_map, dtype="bfloat16")
    sync()
    load_s = time.perf_counter() - t0
    loaded = memory()
    where = getattr(model.bridge.original_model, "hf_device_map", None) or {"": model.device}
    per_device: dict[str, int] = {}
    for device in where.values():
        per_device[str(device)] = per_device.get(str(device), 0) + 1
    report(f"load_model(device_map={device_map!r}, dtype='bfloat16'): {load_s:.1f} s (with the weight fingerprint); "
           f"weights on {model.devices}; modules per device {per_device}")

    task = random_task(shape["vocab_size"], prompts, length)
    reset_memory()
    t0 = time.perf_counter()
    scores = score_heads(model, task, "logit_diff", "path", progress=False)
    sync()
    scan_s = time.perf_counter() - t0
    scanned = memory()
    finite = bool(torch.isfinite(scores.scores).all())
    report(f"path scan of {model.n_layers} x {model.n_heads} heads on {len(task)} prompts of {length} tokens: "
           f"{scan_s:.1f} s; scores finite: {finite}")
    for device in loaded:
        report(f"{device} ({torch.cuda.get_device_name(device)}): max_memory_allocated {loaded[device] / GIB:.2f} GiB "
               f"while loading, {scanned[device] / GIB:.2f} GiB while scanning")
    return {"scores": scores, "model": model, "n_params": n_params, "save_s": save_s, "load_s": load_s,
            "scan_s": scan_s, "memory_load": loaded, "memory_scan": scanned, "finite": finite}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="random-token prompts of the task")
    ap.add_argument("--length", type=int, default=32, help="tokens per prompt")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"device_map benchmark skipped: this torch {torch.__version__} sees no CUDA GPU (nothing written)")
        return 0
    command = "python benchmarks/device_map.py"
    command += f" --prompts {args.prompts}" if args.prompts != 8 else ""
    command += f" --length {args.length}" if args.length != 32 else ""
    report = Report("device_map", command)
    report(f"{torch.cuda.device_count()} GPU(s): "
           f"{', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))}")
    with tempfile.TemporaryDirectory(prefix="pear-device-map-") as tmp:
        out = run(LLAMA_3_8B, Path(tmp), prompts=args.prompts, length=args.length, report=report)
    peaks = " ".join(f"max_memory_gib_{d.replace(':', '')}={max(out['memory_load'][d], out['memory_scan'][d]) / GIB:.2f}"
                     for d in out["memory_load"])
    report(f"device_map_load_s={out['load_s']:.1f} device_map_scan_s={out['scan_s']:.1f} "
           f"device_map_devices={len(out['model'].devices)} {peaks}")
    report.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
