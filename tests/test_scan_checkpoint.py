"""A scan saved batch by batch resumes where it stopped, and gives what one run straight through gives."""
from __future__ import annotations

import pytest
import torch

from pear_lens import PromptTask
from pear_lens.errors import PearLensError
from pear_lens.mediation import METHODS, score_heads
from pear_lens.mediation import base as base_mod
from tests.conftest import tiny


def _task() -> PromptTask:
    g = torch.Generator().manual_seed(3)
    lengths = (5, 5, 6, 6, 7, 7, 9, 9)  # four batches of two (mean ablation needs two prompts of each length)
    prompts = [torch.randint(5, 60, (n,), generator=g).tolist() for n in lengths]
    answers = torch.randint(5, 60, (len(lengths),), generator=g).tolist()
    foils = [(a + 7) % 60 for a in answers]
    return PromptTask(prompts, answers, foils=foils, name="mixed lengths")


class Stop(Exception):
    pass


def _stop_after(monkeypatch, n_batches: int) -> list[int]:
    """Make the scan of every batch after the first ``n_batches`` raise, as a session's end would."""
    calls = []
    real = base_mod.each_head

    def each_head(*args, **kwargs):
        calls.append(1)
        if len(calls) > n_batches:
            raise Stop()
        return real(*args, **kwargs)

    monkeypatch.setattr("pear_lens.mediation.activation.each_head", each_head)
    return calls


@pytest.mark.parametrize("options", [{"ablation": "zero", "positions": "all"}, {"ablation": "mean", "positions": "end"}])
def test_a_stopped_scan_resumes_and_equals_one_run_straight_through(tmp_path, monkeypatch, options):
    model, task = tiny("llama"), _task()
    straight = score_heads(model, task, "logit_diff", "activation", progress=False, **options)
    folder = tmp_path / "parts"
    calls = _stop_after(monkeypatch, 2)
    with pytest.raises(Stop):
        score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder, **options)
    assert len(list(folder.glob("*.safetensors"))) == 2  # the two batches done before the stop, each whole
    monkeypatch.undo()
    calls.clear()
    resumed = score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder, **options)
    n_batches = len(task.batches(model))
    assert resumed.extra["resumed_batches"] == 2 and len(list(folder.glob("*.safetensors"))) == n_batches
    assert torch.equal(resumed.scores, straight.scores)
    assert torch.equal(resumed.per_prompt, straight.per_prompt)
    assert torch.equal(resumed.clean_per_prompt, straight.clean_per_prompt)
    assert resumed.clean_metric == straight.clean_metric
    # a third run reads every batch back and scans none
    monkeypatch.setattr("pear_lens.mediation.activation.each_head", lambda *a, **k: pytest.fail("scanned again"))
    again = score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder, **options)
    assert again.extra["resumed_batches"] == n_batches and torch.equal(again.scores, straight.scores)


def test_another_metric_options_or_weights_are_not_read_from_the_checkpoint(tmp_path):
    model, task = tiny("llama"), _task()
    folder = tmp_path / "parts"
    score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder, ablation="zero")
    n = len(list(folder.glob("*.safetensors")))
    other = score_heads(model, task, "logprob", "activation", progress=False, checkpoint=folder, ablation="zero")
    assert other.extra["resumed_batches"] == 0
    other = score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder, ablation="mean")
    assert other.extra["resumed_batches"] == 0
    from pear_lens import load_model

    edited_model = load_model("tiny-llama")  # its own copy: the shared tiny model is read-only
    with torch.no_grad():  # weights edited in place after loading: the same model object, other numbers
        next(edited_model.bridge.parameters()).mul_(1.01)
    edited = score_heads(edited_model, task, "logit_diff", "activation", progress=False, checkpoint=folder,
                         ablation="zero")
    assert edited.extra["resumed_batches"] == 0
    assert len(list(folder.glob("*.safetensors"))) == 4 * n  # each kept beside the others, none replaced


def test_a_custom_metric_is_keyed_by_its_source(tmp_path):
    model, task = tiny("llama"), _task()

    def gap(logits, batch):
        return logits.gather(-1, batch.targets[:, None])[:, 0] - logits.max(-1).values

    folder = tmp_path / "parts"
    score_heads(model, task, gap, "activation", progress=False, checkpoint=folder)

    def gap(logits, batch):  # noqa: F811  same name, another metric
        return logits.gather(-1, batch.targets[:, None])[:, 0] - logits.min(-1).values

    assert score_heads(model, task, gap, "activation", progress=False, checkpoint=folder).extra["resumed_batches"] == 0


def test_a_cut_or_foreign_checkpoint_file_is_refused_in_one_line(tmp_path):
    model, task = tiny("llama"), _task()
    folder = tmp_path / "parts"
    score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder)
    files = sorted(folder.glob("*.safetensors"))
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(PearLensError, match="cut or not a checkpoint") as e:
        score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder)
    assert "\n" not in str(e.value) and files[0].name in str(e.value)
    assert files[0].read_bytes() == data[: len(data) // 2]  # refused, not replaced
    files[0].write_bytes(files[1].read_bytes())  # another batch's file under this batch's name
    with pytest.raises(PearLensError, match="not the one its name says"):
        score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder)


def test_a_checkpoint_edited_after_it_was_written_is_refused(tmp_path):
    from safetensors.torch import load, save

    from pear_lens.mediation.checkpoint import _metadata

    model, task = tiny("llama"), _task()
    folder = tmp_path / "parts"
    score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder)
    path = sorted(folder.glob("*.safetensors"))[0]
    data = path.read_bytes()
    tensors = load(data)
    tensors["patched_each"] = tensors["patched_each"] + 1.0
    path.write_bytes(save(tensors, metadata=_metadata(data)))
    with pytest.raises(PearLensError, match="changed after it was written"):
        score_heads(model, task, "logit_diff", "activation", progress=False, checkpoint=folder)


def test_every_registered_method_resumes_from_its_checkpoint(tmp_path):
    model, task = tiny("llama"), _task()
    for method in METHODS:
        folder = tmp_path / method
        first = score_heads(model, task, "logit_diff", method, progress=False, checkpoint=folder)
        again = score_heads(model, task, "logit_diff", method, progress=False, checkpoint=folder)
        assert first.extra["resumed_batches"] == 0 and again.extra["resumed_batches"] == len(task.batches(model))
        assert torch.equal(first.scores, again.scores), method


def test_a_method_registered_without_the_decorator_says_it_cannot_checkpoint(tmp_path):
    from pear_lens.mediation import register

    @register("checkpointless-test", "CL", "a method of one's own, the plain signature")
    def own(model, task, metric, *, difference, seed, progress, options):
        return score_heads(model, task, metric, "activation", progress=False)

    try:
        model, task = tiny("llama"), _task()
        with pytest.raises(PearLensError, match="cannot save a checkpoint"):
            score_heads(model, task, "logit_diff", "checkpointless-test", progress=False, checkpoint=tmp_path)
        score_heads(model, task, "logit_diff", "checkpointless-test", progress=False)  # without one it runs
    finally:
        del METHODS["checkpointless-test"]


def test_discover_resumes_from_its_checkpoint_folder_and_refuses_one_inside_out(tmp_path, capsys):
    import json

    from pear_lens.commands.cli import main
    from pear_lens.results import HeadScores

    rows = [{"prompt": "w5 w6 w7", "answer": "w8", "foil": "w9"}, {"prompt": "w5 w7 w7 w6", "answer": "w8", "foil": "w9"},
            {"prompt": "w6 w6 w7", "answer": "w9", "foil": "w8"}]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    parts = tmp_path / "parts"
    args = ["discover", "--model", "tiny-llama", "--task", str(task), "--metric", "logit_diff", "--method",
            "activation", "--ablation", "zero", "--checkpoint", str(parts), "--no-png", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0, capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "b")]) == 0, capsys.readouterr().err
    first, _ = HeadScores.load_run(tmp_path / "a")
    second, _ = HeadScores.load_run(tmp_path / "b")
    assert first.extra["resumed_batches"] == 0 and second.extra["resumed_batches"] == 2  # two prompt lengths
    assert torch.equal(first.scores, second.scores)
    inside = ["--checkpoint", str(tmp_path / "c" / "parts"), "--out", str(tmp_path / "c")]
    assert main(args[:-4] + ["--no-png", "--quiet"] + inside) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is inside --out" in err[0] and not (tmp_path / "c").exists()
