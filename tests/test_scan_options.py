"""The scan as a user drives it: `discover --task FILE` and `--seeds`, the copy check of `score_heads`, and
selecting heads by the lower end of their interval."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from pear_lens import constants
from pear_lens.commands.cli import main
from pear_lens.errors import CopyTaskTooWeak, PearLensError
from pear_lens.mediation import WeakCopyTask, score_heads
from pear_lens.prompt_task import PromptTask
from pear_lens.proxy_task import ProxyTask
from pear_lens.results import HeadScores
from pear_lens.recipe import HeadSelection, select_heads

from .conftest import tiny

ROWS = [{"prompt": "w5 w6 w7", "answer": "w8", "foil": "w9", "corrupted": "w10 w11 w12"},
        {"prompt": "w5 w7 w7", "answer": "w8", "foil": "w9", "corrupted": "w10 w11 w13"},
        {"tokens": [5, 6, 20], "answer": 8, "foil": 9, "corrupted": [10, 11, 14]}]


def write_task(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_discover_scores_a_task_file_and_keeps_every_prompt(tmp_path, capsys):
    task = write_task(tmp_path / "task.jsonl", ROWS)
    out = tmp_path / "run"
    code = main(["discover", "--model", "tiny-llama", "--task", str(task), "--metric", "logit_diff",
                 "--ablation", "corrupted", "--out", str(out), "--no-png", "--quiet"])
    assert code == 0, capsys.readouterr().err
    scores, info = HeadScores.load_run(out)
    assert scores.per_prompt.shape == (3, 3, 4) and scores.difference == "absolute" and scores.metric == "logit_diff"
    assert scores.task["kind"] == "prompts" and scores.task["n_prompts"] == 3
    assert info["config"]["difference"] == "absolute" and "copy_task" not in info  # no copy check off the proxy task
    direct = score_heads(tiny("llama"), PromptTask.from_jsonl(task), "logit_diff", ablation="corrupted", progress=False)
    assert torch.equal(direct.scores, scores.scores)


def test_a_malformed_task_file_names_each_record_and_writes_nothing(tmp_path, capsys):
    task = write_task(tmp_path / "task.jsonl", [ROWS[0], {"prompt": "w5"}, {**ROWS[1], "answer": "w8 w9"},
                                                {**ROWS[2], "position": 9}])
    out = tmp_path / "run"
    code = main(["discover", "--model", "tiny-llama", "--task", str(task), "--out", str(out), "--no-png", "--quiet"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and not out.exists()
    assert err[0].endswith("1 malformed task record(s); fix each and rerun:") and "task.jsonl:2: no 'answer'" in err[1]
    assert len(err) == 2  # records that parse are checked against the tokenizer next, all at once:
    task = write_task(tmp_path / "task.jsonl", [ROWS[0], {**ROWS[1], "answer": "w8 w9"}, {**ROWS[2], "position": 9}])
    code = main(["discover", "--model", "tiny-llama", "--task", str(task), "--out", str(out), "--no-png", "--quiet"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and not out.exists() and len(err) == 3
    assert "task.jsonl:2: prompt 1: answer 'w8 w9' is 2 tokens" in err[1]
    assert "task.jsonl:3: prompt 2: position 9 is beyond the prompt of 3 tokens" in err[2]


def test_discover_over_seeds_writes_a_stability_report(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["discover", "--model", "tiny-llama", "--settings", "4x6", "--seeds", "3", "4", "5", "--report-k", "3",
                 "--out", str(out), "--no-png", "--quiet", "--allow-weak-copy-task"])
    printed = capsys.readouterr().out
    assert code == 0 and "mean top-3 overlap" in printed
    report = json.loads((out / constants.STABILITY_JSON).read_text())
    assert report["seeds"] == [3, 4, 5] and report["k"] == 3 and len(report["top_k_overlap"]) == 3
    seeds = [HeadScores.load(out)] + [HeadScores.load(out / constants.SEEDS_DIR / f"seed_{s}") for s in (4, 5)]
    assert [s.task["seed"] for s in seeds] == [3, 4, 5]
    direct = score_heads(tiny("llama"), ProxyTask(settings=((4, 6),), seed=4), seed=4, progress=False)
    assert torch.equal(direct.scores, seeds[1].scores)
    expected = seeds[0].stability(seeds[1:], 3)
    assert report["mean_top_k_overlap"] == pytest.approx(expected.mean_overlap)


@pytest.mark.parametrize("extra, words", [(["--seeds", "1"], "at least 2 different seeds"),
                                          (["--seeds", "1", "1"], "at least 2 different seeds")])
def test_seeds_that_cannot_give_a_report_are_refused(tmp_path, capsys, extra, words):
    code = main(["discover", "--model", "tiny-llama", "--out", str(tmp_path / "run"), "--no-png", *extra])
    assert code == 2 and words in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_seeds_with_a_task_file_are_refused(tmp_path, capsys):
    task = write_task(tmp_path / "task.jsonl", ROWS)
    code = main(["discover", "--model", "tiny-llama", "--task", str(task), "--seeds", "1", "2",
                 "--out", str(tmp_path / "run"), "--no-png"])
    assert code == 2 and "--task file's prompts are fixed" in capsys.readouterr().err


def test_a_run_whose_saved_scores_disagree_with_its_table_is_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "1"), (b, "2")):
        assert main(["discover", "--model", "tiny-llama", "--settings", "4x6", "--seed", seed, "--out", str(out),
                     "--no-png", "--quiet", "--allow-weak-copy-task"]) == 0
    (a / constants.RUN_SCORES_DIR).rename(tmp_path / "old")
    (b / constants.RUN_SCORES_DIR).rename(a / constants.RUN_SCORES_DIR)  # another run's scores slipped in
    with pytest.raises(PearLensError, match="hold different scores"):
        HeadScores.load(a)


def test_score_heads_checks_the_copy_task_like_discover():
    model = tiny("llama")  # random weights: it cannot copy
    task = ProxyTask(settings=((4, 6),))
    with pytest.warns(WeakCopyTask, match=r"copies only .* use ProxyTask\(prepend_bos=True\), or pass copy_check='off'"):
        score_heads(model, task, progress=False)
    with pytest.raises(CopyTaskTooWeak) as e:
        score_heads(model, task, progress=False, copy_check="refuse")
    assert "--" not in str(e.value)  # a Python caller is told Python arguments
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeakCopyTask)
        score_heads(model, task, progress=False, copy_check="off")
        score_heads(model, PromptTask([[5, 6, 7], [5, 8, 7]], [9, 9]), "logprob", progress=False)  # not the proxy


def _uncertain_scores() -> HeadScores:
    # head (0, 0): the largest mean effect but noisy; head (0, 1): smaller but the same on every prompt
    gen = torch.Generator().manual_seed(0)
    clean = torch.ones(40)
    patched = torch.ones(40, 1, 3)
    noise = torch.randn(40, generator=gen)
    patched[:, 0, 0] += 0.3 + 2.0 * (noise - noise.mean())  # mean effect exactly 0.3, interval about ±0.6
    patched[:, 0, 1] += 0.2 + 0.01 * torch.randn(40, generator=gen)
    patched[:, 0, 2] += 0.01 * torch.randn(40, generator=gen)
    delta = (patched.mean(0) - clean.mean())[None]
    return HeadScores(scores=delta[0], per_setting=delta, clean_metric=[1.0], model="m", method="path",
                      metric="logprob", difference="absolute", task={}, per_prompt=patched, clean_per_prompt=clean,
                      prompt_setting=torch.zeros(40, dtype=torch.long))


def test_heads_can_be_selected_by_the_lower_end_of_their_interval():
    scores = _uncertain_scores()
    assert scores.top_k(1) == [(0, 0)]
    assert scores.top_k(1, by="lower_bound") == [(0, 1)]
    assert select_heads(scores, HeadSelection(top_k=1, select_by="lower_bound")) == [(0, 1)]
    assert select_heads(scores, HeadSelection(top_k=1)) == [(0, 0)]  # PEAR's rule stays the default
    with pytest.raises(PearLensError, match="by must be"):
        scores.top_k(1, by="upper")
    old = HeadScores(scores=scores.scores, per_setting=scores.per_setting, clean_metric=[1.0], model="m",
                     method="path", metric="logprob", difference="absolute", task={})
    with pytest.raises(PearLensError, match="per-prompt values"):
        select_heads(old, HeadSelection(top_k=1, select_by="lower_bound"))


def test_the_heatmap_of_a_task_of_your_own_does_not_speak_of_copying():
    model = tiny("llama")
    mine = score_heads(model, PromptTask([[5, 6, 7], [5, 8, 7]], [9, 9]), "logprob", progress=False)
    proxy = score_heads(model, ProxyTask(settings=((4, 6),)), progress=False, copy_check="off")
    assert "raises the metric" in mine.heatmap().layout.title.text and "copying" not in mine.heatmap().layout.title.text
    assert "helps copying" in proxy.heatmap().layout.title.text
