"""Cost of the likelihood endpoints beside today's greedy evaluation, on the same MDQA items of SmolLM2.

Measured side by side in one run, on the same items, model and batch size, alternating the methods over
``--rounds`` rounds (the fastest round of each is kept, so a busy moment does not count against one method):

1. greedy generation, as ``pear-lens eval`` decodes (the calibrated MDQA settings: prompt style and answer length);
2. the likelihood endpoints: every candidate answer (the gold document's answer and the other documents')
   scored teacher-forced, the context encoded once per item and shared by its candidates;
   ``likelihood_vs_generation`` = (2) / (1);
3. the same candidates with the context encoded again for every candidate (one full pass per candidate):
   ``separate_vs_generation`` = (3) / (1), and ``max_abs_diff_shared_separate``: the largest difference of a
   log-probability between (2) and (3) (fp32 on the real model; the float64 test holds them within 1e-5);
4. context-aware decoding's likelihood endpoints (two prompt passes per item): ``cad_vs_likelihood`` = (4) / (2).

Run: ``python benchmarks/likelihood.py`` (a few minutes on 2 cores). The last line is machine-readable; the
output is also kept in ``figures/benchmarks/likelihood.txt``.
"""
from __future__ import annotations

import argparse

import numpy as np

from _report import Report, timed

from pear_lens.evaluation.likelihood import continuation_logprobs, encode_candidates, score_candidates
from pear_lens.evaluation.runner import encode_items, generate_outputs
from pear_lens.evaluation.tasks import TaskName, generate_items
from pear_lens.evaluation.tasks.calibration import settings_for
from pear_lens.evaluation.tasks.prompts import PromptStyle
from pear_lens.models import load_model

MODEL = "smollm2-135m-instruct"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="MDQA items (default 40)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of every method (default 2)")
    args = ap.parse_args()
    report = Report("likelihood", f"python benchmarks/likelihood.py --n {args.n} --batch-size {args.batch_size} "
                                  f"--rounds {args.rounds}")
    model = load_model(MODEL)
    tok, hf = model.tokenizer, model.fresh_hf()
    settings = settings_for(MODEL, TaskName.MDQA, tok)
    style = PromptStyle.parse(settings.prompt_style)
    items = generate_items(TaskName.MDQA, settings, args.n, seed=0)
    prompts = encode_items(items, style, tok, n_ctx=model.n_ctx, max_new_tokens=settings.max_new_tokens)
    cands, cand_ids = encode_candidates(items, style, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    sep_prompts = [p for p, cs in zip(prompts, cand_ids) for _ in cs]
    sep_conts = [[c] for cs in cand_ids for c in cs]
    bs = args.batch_size
    methods = {
        "generation": lambda: generate_outputs(hf, tok, prompts, settings, batch_size=bs, progress=False, desc=""),
        "likelihood": lambda: score_candidates(hf, tok, items, prompts, style, batch_size=bs, progress=False),
        "separate": lambda: continuation_logprobs(hf, sep_prompts, sep_conts, batch_size=bs, pad_token_id=pad,
                                                  progress=False),
        "cad": lambda: score_candidates(hf, tok, items, prompts, style, batch_size=bs, cad_alpha=0.5,
                                        progress=False),
    }
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    outputs = {}
    for _ in range(args.rounds):
        for name, fn in methods.items():
            outputs[name], s = timed(fn)
            seconds[name].append(s)
    best = {name: min(s) for name, s in seconds.items()}
    n_cands = [len(c.all) for c in cands]
    shared = [v for r in continuation_logprobs(hf, prompts, cand_ids, batch_size=bs, pad_token_id=pad,
                                               progress=False) for v in r]
    separate = [r[0] for r in outputs["separate"]]
    diff = float(np.max(np.abs(np.asarray(shared) - np.asarray(separate))))
    report(f"model {MODEL}, MDQA: {args.n} items ({settings.n_context} documents, prompt style {style.value}, "
           f"{np.mean([len(p) for p in prompts]):.0f} prompt tokens on average), {np.mean(n_cands):.1f} candidate "
           f"answers per item ({sum(n_cands)} in all), batch size {bs}, fastest of {args.rounds} alternating rounds")
    for name, label in [("generation", "greedy generation (max_new_tokens %d)" % settings.max_new_tokens),
                        ("likelihood", "likelihood endpoints, shared context pass"),
                        ("separate", "every candidate with its own full pass"),
                        ("cad", "CAD likelihood endpoints (α 0.5)")]:
        report(f"  {label:45s} {best[name]:7.2f} s  (rounds: {', '.join(f'{s:.2f}' for s in seconds[name])})")
    report(f"likelihood_vs_generation={best['likelihood'] / best['generation']:.2f} "
           f"separate_vs_generation={best['separate'] / best['generation']:.2f} "
           f"cad_vs_likelihood={best['cad'] / best['likelihood']:.2f} "
           f"max_abs_diff_shared_separate={diff:.2e} "
           f"seconds_per_item_likelihood={best['likelihood'] / args.n:.3f}")
    report.save()


if __name__ == "__main__":
    main()
