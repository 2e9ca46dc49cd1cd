"""Cost of the head atlas against one path-patching scan, measured side by side in one run.

On one model (default SmolLM2) and its reference proxy task, the fast path-patching scan (the
default discovery method) is timed, then :func:`pear_lens.atlas.head_atlas` with every registered
detector on the scan's own scores (the recording of both prompt sets, the greedy answers of the
needle prompts from a separate Hugging Face copy, and every detector). The model is loaded once,
before either clock starts. ``atlas_vs_path`` = atlas seconds / path-scan seconds (the issue's
target: at most 3).

Run: ``python benchmarks/atlas.py`` (a few minutes on 2 cores). The last line is machine-readable;
the output is kept in ``figures/benchmarks/atlas.txt`` for the README.
"""
from __future__ import annotations

import argparse
import time

from _report import Report

from pear_lens.atlas import head_atlas
from pear_lens.mediation import score_heads
from pear_lens.metrics import Metric
from pear_lens.models import load_model
from pear_lens.proxy_task import ProxyTask

DEFAULT_MODEL = "smollm2-135m-instruct"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prepend-bos", action="store_true", help="score on the proxy task with BOS")
    args = parser.parse_args(argv)
    name = "atlas" if args.model == DEFAULT_MODEL else f"atlas_{args.model}"
    command = "python benchmarks/atlas.py" + ("" if args.model == DEFAULT_MODEL else f" --model {args.model}") + (
        " --prepend-bos" if args.prepend_bos else "")
    report = Report(name, command)
    model = load_model(args.model)
    task = ProxyTask(prepend_bos=args.prepend_bos)
    report(f"model {model.name}: {model.n_layers} layers x {model.n_heads} heads = {model.n_layers * model.n_heads}; "
           f"proxy task settings {list(task.settings)}, BOS {task.prepend_bos}")
    t0 = time.perf_counter()
    scores = score_heads(model, task, Metric.LOGIT_MINUS_MEAN, "path")
    path_s = time.perf_counter() - t0
    report(f"path patching (fast scan): {path_s:.1f} s")
    t0 = time.perf_counter()
    atlas = head_atlas(model, scores)
    atlas_s = time.perf_counter() - t0
    rec = atlas.extra["seconds_recording"]
    parts = [f"recording proxy {rec.get('proxy', 0):.1f} s", f"needle generation {atlas.extra.get('seconds_generation', 0):.1f} s",
             f"recording needle {rec.get('needle', 0):.1f} s"]
    parts += [f"{n} {d['seconds']:.1f} s" for n, d in atlas.detectors.items()]
    report(f"atlas, {len(atlas.names)} detectors: {atlas_s:.1f} s ({'; '.join(parts)})")
    report(f"atlas_vs_path={atlas_s / path_s:.2f}")
    report.save()


if __name__ == "__main__":
    main()
