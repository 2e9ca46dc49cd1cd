"""Types checked where data enters (issue 37, item 6): the Python API's options, the task loaders' JSONL fields and
the eval folders given to `eval-report` are refused in one line when they are not what they claim to be, instead of
acting as something else (the string "false" as True, 0.9 as position 0, one folder twice as two)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pear_lens.commands.cli import main
from pear_lens.errors import PearLensError
from pear_lens.evaluation.tasks.facts import load_counterfactual_jsonl
from pear_lens.evaluation.tasks.kv import load_kv_jsonl
from pear_lens.evaluation.tasks.mdqa import load_mdqa_jsonl
from pear_lens.recipe import TrainConfig
from tests.cli_support import refused

FAST = ["--model", "tiny-llama", "--quiet", "--batch-size", "8"]
KV = {"ordered_kv_records": [["a", "1"], ["b", "2"]], "key": "b", "value": "2", "gold_position": 1}
MDQA = {"question": "q?", "answers": ["x"], "ctxs": [{"title": "t", "text": "x", "isgold": True}]}
CF = {"question": "q?", "answers": ["Lyon"], "parametric_answers": ["Paris"], "context": ["x", "y"],
      "gold_position": 1}


# --------------------------------------------------------------------------- the Python API


CASES = [
    ({"prepend_bos": "false"}, "prepend_bos must be a boolean (True or False), got str 'false'"),
    ({"prepend_bos": "0"}, "prepend_bos must be a boolean"),
    ({"prepend_bos": 0}, "prepend_bos must be a boolean"),
    ({"steps": 2.5}, "steps must be an integer, got float 2.5"),
    ({"top_k": "3"}, "top_k must be an integer, got str '3'"),
    ({"lr": "0.01"}, "lr must be a number"),
]


def test_a_python_option_of_the_wrong_type_is_refused():
    """Run without the tests' runtime type checker (which would refuse first): what a user's script sees."""
    import subprocess
    import sys

    script = ("import json, sys\nfrom pear_lens import PearLensError, TrainConfig\n"
              "for options in json.loads(sys.argv[1]):\n"
              "    try:\n        TrainConfig(**options); print('accepted')\n"
              "    except PearLensError as e:\n        print(str(e).replace(chr(10), ' NEWLINE '))\n")
    out = subprocess.run([sys.executable, "-c", script, json.dumps([o for o, _ in CASES])], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    for (options, says), line in zip(CASES, out, strict=True):
        assert says in line and "NEWLINE" not in line, (options, line)


def test_the_proxy_task_and_every_command_config_check_their_types_in_python():
    """ProxyTask and the commands' configs (all built on Placement) refuse what their command lines would."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        from pathlib import Path
        from pear_lens import PearLensError, ProxyTask
        from pear_lens.workflow import DiscoverConfig
        from pear_lens.commands.eval import EvalConfig
        cases = [lambda: ProxyTask(prepend_bos="false"), lambda: ProxyTask(seed=1.5),
                 lambda: DiscoverConfig(out=Path("x"), report_k="10"),
                 lambda: DiscoverConfig(out=Path("x"), allow_weak_copy_task="false"),
                 lambda: EvalConfig(out=Path("y"), n="300")]
        for case in cases:
            try:
                case(); print("accepted")
            except PearLensError as e:
                print("refused:", e)
        print(ProxyTask(seed=3).seed, DiscoverConfig(out=Path("x")).report_k)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:5] == ["refused: prepend_bos must be a boolean (True or False), got str 'false'",
                       "refused: seed must be an integer, got float 1.5",
                       "refused: report_k must be an integer, got str '10'",
                       "refused: allow_weak_copy_task must be a boolean (True or False), got str 'false'",
                       "refused: n must be an integer, got str '300'"]
    assert out[5] == "3 10"


@pytest.mark.parametrize("value", ["false", 0, "0"])
def test_a_detector_flag_given_as_a_string_is_refused(value):
    from pear_lens.atlas.base import detector_options

    with pytest.raises(PearLensError, match="exclude_bos must be a boolean"):
        detector_options("previous_token", exclude_bos=value)
    assert detector_options("previous_token", exclude_bos=False).exclude_bos is False


# --------------------------------------------------------------------------- the task loaders


def _jsonl(tmp_path: Path, record: dict) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n")
    return path


@pytest.mark.parametrize("loader, record, says", [
    (load_kv_jsonl, {**KV, "gold_position": 0.9}, "gold_position must be an integer, got float 0.9"),
    (load_kv_jsonl, {**KV, "gold_position": True}, "gold_position must be an integer, got bool true"),
    (load_kv_jsonl, {**KV, "value": 2}, 'value must be a string or a list of strings, got int 2 (write it in quotes: "2")'),
    (load_kv_jsonl, {**KV, "ordered_kv_records": [["a", 1], ["b", "2"]]}, "a value of ordered_kv_records must be a string"),
    (load_kv_jsonl, {**KV, "key": 7}, "key must be a string, got int 7"),
    (load_mdqa_jsonl, {**MDQA, "answers": 42}, "answers must be a string or a list of strings, got int 42"),
    (load_mdqa_jsonl, {**MDQA, "answers": ["x", 42]}, "answers[1] must be a string, got int 42"),
    (load_mdqa_jsonl, {**MDQA, "question": 3}, "question must be a string, got int 3"),
    (load_mdqa_jsonl, {**MDQA, "ctxs": [{"title": "t", "text": "x", "isgold": "false"}, {"title": "u", "text": "y",
                                                                                        "isgold": True}]},
     "ctxs[0].isgold must be true or false, got str 'false'"),
    (load_mdqa_jsonl, {**MDQA, "gold_position": 0.9}, "gold_position must be an integer, got float 0.9"),
    (load_counterfactual_jsonl, {**CF, "gold_position": 0.9}, "gold_position must be an integer, got float 0.9"),
    (load_counterfactual_jsonl, {**CF, "parametric_answers": 1789}, "parametric_answers must be a string or a list"),
])
def test_a_field_of_the_wrong_type_is_named_with_its_line(tmp_path, loader, record, says):
    path = _jsonl(tmp_path, record)
    with pytest.raises(PearLensError) as e:
        loader(path)
    assert f"{path}:1: malformed item ({says}" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_kv_gold_position_of_0_9_is_refused_by_eval(tmp_path, capsys):
    data = _jsonl(tmp_path, {**KV, "gold_position": 0.9})
    refused(capsys, ["eval", "--task", "kv", "--data", data, "--out", tmp_path / "e", *FAST],
            says="gold_position must be an integer, got float 0.9")
    assert not (tmp_path / "e").exists()


# --------------------------------------------------------------------------- eval-report's inputs


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("types") / "kv"
    assert main(["eval", "--task", "kv", "--n", "2", "--n-context", "2", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.parametrize("spelling", ["same", "another path to it"])
def test_eval_report_refuses_a_folder_given_twice(eval_dir, tmp_path, capsys, spelling):
    again = eval_dir if spelling == "same" else eval_dir.parent / "." / eval_dir.name
    refused(capsys, ["eval-report", eval_dir, again, "--out", tmp_path / "report", "--no-png"],
            says="is given twice")
    assert not (tmp_path / "report").exists()


def test_eval_report_names_a_summary_without_its_task_column_as_malformed(eval_dir, tmp_path, capsys):
    broken = Path(shutil.copytree(eval_dir, tmp_path / "kv"))
    (broken / "manifest.json").unlink()  # a folder written before manifests: the columns are checked still
    summary = pd.read_csv(broken / "summary.csv", dtype={"gold_position": str})
    summary.drop(columns=["task"]).to_csv(broken / "summary.csv", index=False)
    err = refused(capsys, ["eval-report", broken, "--out", tmp_path / "report", "--no-png"],
                  says="summary.csv is malformed: it lacks the column task")
    assert "bug" not in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("damage", ["cut", "edited"])
def test_eval_report_refuses_an_eval_folder_that_is_not_as_written(eval_dir, tmp_path, capsys, damage):
    from pear_lens import manifest

    broken = Path(shutil.copytree(eval_dir, tmp_path / "kv"))
    assert set(manifest.read(broken)["value"]) >= {"summary.csv", "eval.json", "items.csv"}
    data = (broken / "summary.csv").read_bytes()
    (broken / "summary.csv").write_bytes(data[:-3] if damage == "cut" else data.replace(b"kv", b"mdqa", 1))
    refused(capsys, ["eval-report", broken, "--out", tmp_path / "report", "--no-png"],
            says="summary.csv" + (" has " if damage == "cut" else " is not the file written"))
    assert not (tmp_path / "report").exists()
