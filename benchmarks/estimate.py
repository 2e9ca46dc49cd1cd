"""The cost model against the clock: for each real model, predict a head scan, a training and an evaluation on this
machine (:func:`pear_lens.cost.estimate_cost`), then run exactly that work and time it.

Each stage is predicted right before it runs (its probes and its work see the same load on a shared machine),
for exactly the work measured:

1. scan: the clean copy check and path patching's scan (:func:`pear_lens.copy_accuracy.clean_copy`,
   :func:`pear_lens.score_heads`) on a reduced proxy task (``--settings``);
2. train: :func:`pear_lens.train_coefficients` on the scan's top ``--top-k`` heads with a short recipe;
3. eval: the baseline's greedy decoding and likelihood endpoints on ``--n`` generated items of ``--task``
   (:func:`pear_lens.evaluation.runner.evaluate` and ``evaluate_likelihood``, each building the condition's model),
   then the same for context-aware decoding (``EvalWork(cad=True)``: every pass again on the context-free
   prompts), each part compared on its own.

Per model and stage it prints the predicted and measured seconds and their ratio (predicted / measured; each part's
too), and the last line is ``estimate_vs_measured=X``: the worst ``max(pred/meas, meas/pred)`` over every model and
stage (the target is 1.5 or less). The model loads are timed too but not compared (they are not in the stages).

    python benchmarks/estimate.py   # about 15 minutes on 2 busy cores; kept in figures/benchmarks/estimate.txt
"""
from __future__ import annotations

import argparse
import os
import time

from _report import Report, timed

from pear_lens import ProxyTask, Recipe, load_model, score_heads, train_coefficients
from pear_lens.copy_accuracy import clean_copy
from pear_lens.cost import EvalWork, estimate_cost
from pear_lens.evaluation.conditions import baseline, context_aware
from pear_lens.evaluation.runner import evaluate, evaluate_likelihood
from pear_lens.evaluation.tasks import TaskName, generate_items
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.text_formats import parse_pairs

MODELS = ("smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct")
SMALLER = {"qwen2.5-coder-0.5b-instruct": 2}
"""Models whose work is divided (settings' batches, items) to keep the whole run short."""


def load(name: str, report: Report):
    model, seconds = timed(lambda: load_model(name))
    report(f"{name}: loaded in {seconds:.1f} s")
    return model


def stage_line(report: Report, model: str, stage: str, predicted: float, measured: float,
               parts: dict[str, tuple[float, float]]) -> float:
    ratio = predicted / measured
    detail = "; ".join(f"{part} {p:.1f}/{m:.1f} s" for part, (p, m) in parts.items())
    report(f"  {stage}: predicted {predicted:.1f} s, measured {measured:.1f} s, ratio {ratio:.2f}"
           + (f" ({detail})" if detail else ""))
    return max(ratio, 1 / ratio)


def run_model(name: str, args: argparse.Namespace, report: Report) -> list[float]:
    divide = SMALLER.get(name, 1)
    model = load(name, report)
    settings = tuple((max(2, b // divide), n) for b, n in parse_pairs(args.settings))
    task = ProxyTask(settings=settings)
    recipe = Recipe(steps=args.steps, batch_size=args.batch, micro_batch=args.micro_batch, n=args.half)
    work = EvalWork(task=args.task, n=max(2, args.n // divide), batch_size=max(1, args.eval_batch // divide),
                    conditions=1, likelihood=True, cad=TaskName.parse(args.task) is not TaskName.CLOSED_BOOK)
    worst = []

    est = estimate_cost(model, task=task, stages=("scan",), budget=args.budget)
    copy, t_copy = timed(lambda: clean_copy(model, task))
    scores, t_scan = timed(lambda: score_heads(model, task, method="path", copy_check="off", progress=False))
    s = est.stage("scan")
    report(f"  scan work: {s.what} (probes {est.probe_seconds:.1f} s)")
    worst.append(stage_line(report, name, "scan", s.seconds, t_copy + t_scan,
                            {"copy check": (s.parts["copy check"], t_copy), "scan": (s.parts["scan"], t_scan)}))

    heads = scores.top_k(min(args.top_k, scores.scores.numel()))
    est = estimate_cost(model, recipe=recipe, heads=heads, stages=("train",), budget=args.budget)
    _, t_train = timed(lambda: train_coefficients(model, heads, recipe, progress=False))
    s = est.stage("train")
    report(f"  train work: {s.what} (probes {est.probe_seconds:.1f} s)")
    worst.append(stage_line(report, name, "train", s.seconds, t_train, {}))

    est = estimate_cost(model, evaluation=work, stages=("eval",), budget=args.budget)
    task_name = TaskName.parse(work.task)
    settings_ = settings_for(model.name, task_name, model.tokenizer)
    items = generate_items(task_name, settings_, work.n, seed=work.seed)
    kw = dict(n_ctx=model.n_ctx, batch_size=work.batch_size, progress=False, seed=work.seed)
    _, t_gen = timed(lambda: evaluate(model.name, work.task, items, [baseline(model)], model.tokenizer, settings_,
                                      **kw))
    _, t_lik = timed(lambda: evaluate_likelihood(model.name, work.task, items, [baseline(model)], model.tokenizer,
                                                 settings_, **kw))
    measured = {"generate": t_gen, "likelihood": t_lik}
    if work.cad:
        cad = [context_aware(model)]
        measured["generate (CAD)"] = timed(lambda: evaluate(model.name, work.task, items, cad, model.tokenizer,
                                                            settings_, **kw))[1]
        measured["likelihood (CAD)"] = timed(lambda: evaluate_likelihood(model.name, work.task, items, cad,
                                                                         model.tokenizer, settings_, **kw))[1]
    s = est.stage("eval")
    report(f"  eval work: {s.what} (probes {est.probe_seconds:.1f} s)")
    build = s.parts["build"] / (2 * (work.conditions + work.cad))  # each condition built for decoding and likelihood
    worst.append(stage_line(report, name, "eval", s.seconds, sum(measured.values()),
                            {f"{part} and its build": (s.parts[part] + build, t) for part, t in measured.items()}))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated registry names")
    ap.add_argument("--settings", default="10x20,20x10", help="the scan's proxy settings (BATCHxN; halved for Qwen)")
    ap.add_argument("--steps", type=int, default=3, help="training steps")
    ap.add_argument("--batch", type=int, default=4, help="training batch")
    ap.add_argument("--micro-batch", type=int, default=2, help="training micro-batch")
    ap.add_argument("--half", type=int, default=50, help="training sequences' half-length n")
    ap.add_argument("--top-k", type=int, default=10, help="heads trained: the scan's top K")
    ap.add_argument("--task", default="kv", help="evaluation task")
    ap.add_argument("--n", type=int, default=32, help="evaluation items (halved for Qwen)")
    ap.add_argument("--eval-batch", type=int, default=16, help="evaluation batch (halved for Qwen)")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="seconds each probe series may take (estimate_cost's default)")
    args = ap.parse_args()
    defaults = {a.dest: a.default for a in ap._actions}
    given = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v != defaults.get(k))
    report = Report("estimate", f"python benchmarks/estimate.py{' ' + given if given else ''}")
    report(f"load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    t0 = time.perf_counter()
    worst = []
    for name in args.models.split(","):
        worst += run_model(name, args, report)
    report(f"load average at end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}; "
           f"{(time.perf_counter() - t0) / 60:.1f} min in all")
    report(f"estimate_vs_measured={max(worst):.2f}")
    report.save()


if __name__ == "__main__":
    main()
