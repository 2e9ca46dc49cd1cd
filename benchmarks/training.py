"""One τ-training step of pear_lens against plain training steps, side by side.

All variants run the same batch (``--batch`` sequences of the reference proxy
task, n = 50, split into micro-batches of ``--micro-batch``) with the same τ
hooks on the same heads, in interleaved rounds, and compute the same loss
(cross-entropy on the copy half). What differs:

- ``pear_lens``: :func:`pear_lens.reweight.copy_loss` — model parameters
  frozen (so autograd keeps no graph below the lowest chosen layer), the last
  token (only ever a target) dropped, logits computed for the copy half only.
- ``plain`` (the headline): a standard training step as ordinary fine-tuning
  code writes it — full forward of the bridge with the τ hooks, full logits,
  the copy half sliced out for the loss, ``loss.backward()`` with the model's
  parameters left trainable (so their gradients are computed too).
- ``plain_frozen``: the same full forward and full logits, but with the model's
  parameters frozen. Autograd then records nothing below the first τ either, so
  this variant already gets the layer skip's saving for free (no graph, no
  stored activations below it); what is left to pear_lens is the logits cut
  (half the positions through the unembedding and the softmax). Expect a small
  ratio here; it is printed so that nobody mistakes the headline for a saving
  over frozen-parameter code.

Heads: the top ``--top-k`` of a discovery run (``--run-dir``, default
``runs/demo`` from ``make demo``) or ``--heads``. The saving grows with the
lowest chosen layer, which is printed. A speedup is the median over rounds of
(variant time / pear_lens time) within the round. The last line is
``train_step_speedup=X`` for the ``plain`` variant.

``--precision bf16`` runs every variant under ``torch.autocast`` in bfloat16.

    python benchmarks/training.py [--run-dir runs/demo] [--rounds 3] [--precision fp32]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pear_lens.text_formats import parse_heads
from pear_lens.models import load_model
from pear_lens.proxy_task import TaskBatch, sample_batch
from pear_lens.results import HeadScores
from pear_lens.reweight import check_heads, copy_inputs, copy_loss, frozen, scaling_hooks
from pear_lens.recipe import DEFAULT_TOP_K, TrainConfig
from pear_lens.runs import has_scores

from _report import kept_output


def plain_loss(model, batch: TaskBatch, heads, tau) -> torch.Tensor:
    logits = model.bridge.run_with_hooks(batch.tokens, fwd_hooks=scaling_hooks(heads, tau, model.n_heads))
    _, targets, _ = copy_inputs(batch)
    return F.cross_entropy(logits[:, batch.copy_slice].flatten(0, 1).float(), targets.flatten())


def step(model, batch: TaskBatch, heads, micro: int, variant: str, bf16: bool) -> tuple[float, float]:
    """One optimizer step's forward+backward over the whole batch; returns (seconds, loss)."""
    tau = torch.nn.Parameter(torch.ones(len(heads)))
    params = list(model.bridge.parameters())
    trainable = variant == "plain"
    for p in params:
        p.requires_grad_(trainable)
        p.grad = None
    fn = copy_loss if variant == "pear_lens" else plain_loss
    t0 = time.perf_counter()
    total = 0.0
    for rows in torch.split(batch.tokens, micro):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fn(model, TaskBatch(rows, batch.n, batch.offset), heads, tau)
        loss = loss * (len(rows) / batch.batch_size)
        loss.backward()
        total += float(loss.detach())
    seconds = time.perf_counter() - t0
    for p in params:
        p.grad = None
        p.requires_grad_(False)
    return seconds, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    ap.add_argument("--heads", type=parse_heads, default=None, help="LAYER.HEAD,... instead of a run's top-k")
    ap.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    ap.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--micro-batch", type=int, default=TrainConfig.micro_batch)
    ap.add_argument("--n", type=int, default=TrainConfig.n)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="for every variant alike")
    args = ap.parse_args()

    model = load_model(args.model)
    if args.heads:
        heads = check_heads(args.heads, model.n_layers, model.n_heads)
    elif has_scores(args.run_dir):
        heads = HeadScores.load(args.run_dir).top_k(args.top_k)
    else:
        raise SystemExit(f"no discovery run at {args.run_dir}: run `make demo` first or pass --heads L.H,...")
    ids = TrainConfig().task().candidate_ids(model)
    batch = sample_batch(ids, args.batch, args.n, torch.Generator().manual_seed(0))
    print(f"model {model.name}, {len(heads)} heads, lowest layer {min(l for l, _ in heads)} of {model.n_layers}; "
          f"batch {args.batch} × {batch.seq_len} tokens in micro-batches of {args.micro_batch}; "
          f"{torch.get_num_threads()} threads; {args.precision}")

    variants = ("pear_lens", "plain", "plain_frozen")
    bf16 = args.precision == "bf16"
    with frozen(model.bridge):
        step(model, batch, heads, args.micro_batch, "pear_lens", bf16)  # warm-up (allocator, lazy init)
        times: dict[str, list[float]] = {v: [] for v in variants}
        losses: dict[str, float] = {}
        for r in range(args.rounds):
            order = variants if r % 2 == 0 else variants[::-1]  # alternate the order against drift
            for v in order:
                seconds, losses[v] = step(model, batch, heads, args.micro_batch, v, bf16)
                times[v].append(seconds)
            print(f"round {r + 1}: " + "  ".join(f"{v} {times[v][-1]:.2f} s" for v in variants))
        for p in model.bridge.parameters():
            p.requires_grad_(False)
    med = {v: statistics.median(times[v]) for v in variants}
    same = max(abs(losses[v] - losses["pear_lens"]) for v in variants)
    print(f"median step: " + ", ".join(f"{v} {med[v]:.2f} s" for v in variants)
          + f"; loss {losses['pear_lens']:.5f} (max difference between variants {same:.1e})")
    speedup = {v: statistics.median(t / p for t, p in zip(times[v], times["pear_lens"])) for v in variants}
    print(f"train_step_speedup_vs_plain_frozen={speedup['plain_frozen']:.2f}")
    print(f"train_step_speedup={speedup['plain']:.2f}")


if __name__ == "__main__":
    with kept_output("training", "python " + " ".join(["benchmarks/training.py", *sys.argv[1:]])):
        main()
