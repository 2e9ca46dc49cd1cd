"""Choose each task's prompt style and size on the BASELINE model, and write data/calibration.json.

For every model: closed-book style first (its known facts feed the
counterfactual task), then for KV, MDQA and counterfactual QA the prompt style
with the best baseline accuracy at the default size, then the size whose
baseline accuracy is closest to 50% inside 20-80%. Items use calibration seeds
(>= 1000), never the evaluation seeds. Every measurement, its item count and
the generation throughput go into the file, which `pear-lens eval` reads.

    .venv/bin/python -m studies.calibrate_eval                     # every real model
    .venv/bin/python -m studies.calibrate_eval --models tiny-llama --n 8 --out /tmp/cal.json
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from pear_lens.environment import environment
from pear_lens.evaluation.tasks import calibration as cal
from pear_lens.evaluation.tasks.facts import closed_book_items, load_facts
from pear_lens.evaluation.runner import known_facts
from pear_lens.evaluation.tasks.prompts import PromptStyle
from studies.exploratory.config import PROTOCOL_MODELS
from pear_lens.evaluation.runner import encode_items, generate_outputs, score_items
from pear_lens.evaluation.tasks import TASKS, TaskName, generate_items
from pear_lens.io import atomic_write_json
from pear_lens.models import load_model



CONTEXT_TASKS = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL)


def calibrate_model(name: str, n: int, batch_size: int, progress: bool, log, save, previous: dict | None,
                    only: tuple[TaskName, ...] = CONTEXT_TASKS) -> dict:
    """Calibrate closed-book and the tasks ``only`` of ``name``; ``save(entry)`` after each task; tasks in
    ``previous`` are kept as they are (with the seconds they took). The entry is ``complete`` once every task
    is calibrated."""
    began = time.perf_counter()
    model = load_model(name)
    hf, tok = model.fresh_hf(), model.tokenizer
    speed = {"items": 0, "seconds": 0.0, "prompt_tokens": 0}
    measurements: list[dict] = []  # every timed generation, for throughput per task and size

    def run(items, settings):
        prompts = encode_items(items, PromptStyle.parse(settings.prompt_style), tok, n_ctx=model.n_ctx,
                               max_new_tokens=settings.max_new_tokens)
        start = time.perf_counter()
        outputs = generate_outputs(hf, tok, prompts, settings, batch_size=batch_size, progress=progress,
                                   desc=f"{name} {settings.prompt_style} n_context={settings.n_context}")
        seconds = time.perf_counter() - start
        speed["seconds"] += seconds
        speed["items"] += len(items)
        speed["prompt_tokens"] += sum(map(len, prompts))
        correct = score_items(items, outputs)
        measurements.append({"prompt_style": settings.prompt_style, "n_context": settings.n_context,
                             "items": len(items), "seconds": seconds, "seconds_per_item": seconds / len(items),
                             "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
                             "accuracy": sum(correct) / len(correct)})
        return sum(correct) / len(correct), len(correct)

    previous = previous if previous and previous.get("fingerprint") == model.fingerprint else {}

    def checkpoint() -> None:
        entry["measurements"] = previous.get("measurements", []) + measurements
        save(entry)

    tasks: dict[str, dict] = dict(previous.get("tasks", {}))
    facts = load_facts()
    entry = {"fingerprint": model.fingerprint, "revision": model.revision, "tasks": tasks,
             "measurements": [], "known_facts": previous.get("known_facts")}
    if entry["known_facts"] is None or TaskName.CLOSED_BOOK.value not in tasks:
        probes = closed_book_items(facts)
        random.Random(cal.CALIBRATION_SEED).shuffle(probes)
        cb_default = TASKS[TaskName.CLOSED_BOOK].default
        cb, style_trials = cal.choose_style(TaskName.CLOSED_BOOK, tok, cb_default, lambda s: run(probes[:n * 3], s))
        start = time.perf_counter()
        known = known_facts(hf, tok, probes, cb, n_ctx=model.n_ctx, batch_size=batch_size, progress=progress)
        speed["seconds"] += time.perf_counter() - start
        speed["items"] += len(probes)
        acc = len(known) / len(probes)
        tasks[TaskName.CLOSED_BOOK.value] = {"chosen": cb.to_dict(), "baseline_accuracy": acc, "n": len(probes),
                                              "in_range": cal.in_range(acc), "style_trials": style_trials,
                                              "size_trials": []}
        entry["known_facts"] = sorted(known)  # the facts the baseline knows: counterfactual QA asks only these
        log(f"{name} closed-book: style {tasks['closed-book']['chosen']['prompt_style']}, accuracy {acc:.3f} "
            f"on {len(probes)} facts")
        checkpoint()
    known_list = [f for f in facts if f.fact_id in set(entry["known_facts"])]

    for task in only:
        if "chosen" in tasks.get(task.value, {}):
            continue  # measured by an earlier (interrupted) run
        if task is TaskName.COUNTERFACTUAL and not known_list:
            tasks[task.value] = {"skipped": "the baseline knows none of the facts closed-book"}
            log(f"{name} {task.value}: skipped (no fact known closed-book)")
            continue

        def measure(settings, task=task):
            items = generate_items(task, settings, n, seed=cal.CALIBRATION_SEED, known_facts=known_list)
            return run(items, settings)

        base, style_trials = cal.choose_style(task, tok, TASKS[task].default, measure)
        chosen, acc, used, size_trials = cal.choose_size(task, base, measure)
        tasks[task.value] = {"chosen": chosen.to_dict(), "baseline_accuracy": acc, "n": used,
                             "in_range": cal.in_range(acc), "style_trials": style_trials, "size_trials": size_trials}
        log(f"{name} {task.value}: style {chosen.prompt_style}, n_context {chosen.n_context}, "
            f"baseline {acc:.3f} (n={used}){'' if cal.in_range(acc) else '  OUTSIDE 20-80%'}")
        checkpoint()
    entry["measurements"] = previous.get("measurements", []) + measurements
    complete = all(t.value in tasks for t in CONTEXT_TASKS)
    return {**entry, "complete": complete, "seconds": time.perf_counter() - began + previous.get("seconds", 0.0),
            "throughput": {**speed, "items_per_second": speed["items"] / max(speed["seconds"], 1e-9),
                           "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
                           "load_average_at_end": os.getloadavg()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(PROTOCOL_MODELS))
    parser.add_argument("--n", type=int, default=30, help="items per measured setting")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=cal.calibration_path(),
                        help="calibration file to update (default: the one evaluation reads)")
    parser.add_argument("--resume", action="store_true",
                        help="keep tasks an interrupted run already wrote for the same weights; measure the rest")
    parser.add_argument("--tasks", nargs="+", choices=[t.value for t in CONTEXT_TASKS],
                        default=[t.value for t in CONTEXT_TASKS],
                        help="context tasks to calibrate (closed-book always is: the others need its known facts); "
                             "the entry stays incomplete until all are")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    only = tuple(TaskName(t) for t in args.tasks)

    for name in args.models:
        def save(entry: dict, name: str = name) -> None:
            # re-read just before writing: one process per model may update the same file
            data = cal.load_calibration(args.out)
            data.setdefault("models", {})[name] = entry
            data.update(format_version=1, created_by="studies/calibrate_eval.py", target=list(cal.TARGET),
                        n_per_setting=args.n, calibration_seed=cal.CALIBRATION_SEED, environment=environment())
            atomic_write_json(args.out, data)

        previous = cal.load_calibration(args.out).get("models", {}).get(name) if args.resume else None
        entry = calibrate_model(name, args.n, args.batch_size, not args.quiet, lambda m: print(m, flush=True),
                                lambda e: save({**e, "complete": False}), previous, only)
        save(entry)
        print(f"{name}: calibrated in {entry['seconds']:.0f} s; wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
