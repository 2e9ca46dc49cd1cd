"""The JSONL task format (``pear-lens discover --task FILE``): its fields, and what is wrong with a record.

One JSON object per line with the keys of :data:`JSONL_FIELDS`; :func:`read_jsonl` reads the lines,
:func:`record_problem` names what is wrong with one record, and :class:`MalformedTask` carries one line per
problem (the command line prints each), so a user fixes the whole file in one pass.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pear_lens.errors import ManyProblems

JSONL_FIELDS = {
    "prompt": "the prompt as text (tokenized with the model's tokenizer, its own special tokens added), or",
    "tokens": "the prompt as a list of token ids (give one of prompt/tokens)",
    "answer": "the token scored at the position: text that is exactly one token (mind the leading space), or an id",
    "foil": "optional: the competing token (text or id), needed by the logit_diff metric",
    "corrupted": "optional: a corrupted prompt with the same number of tokens (text or a list of ids), patched "
                 "from with ablation 'corrupted'",
    "position": "optional: the scored token's index in the prompt (negative counts from the end; default -1, "
                "the last token, whose next token is the answer)",
}
"""The JSONL task format: one JSON object per line with these keys (``pear-lens discover --task FILE``)."""


def describe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_jsonl(path: Path) -> tuple[list[Any], list[str], list[str]]:
    """The records of a JSONL file, each one's ``file:line`` label, and a line naming each line that is not JSON
    (blank lines skipped)."""
    records, where, problems = [], [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{path.name}:{number}: not JSON ({e.msg} at column {e.colno})")
                continue
            records.append(rec)
            where.append(f"{path.name}:{number}")
    return records, where, problems


def record_problem(rec: Any) -> str | None:
    """What is wrong with one task record, or None."""
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, got {type(rec).__name__}"
    unknown = sorted(set(rec) - set(JSONL_FIELDS))
    if unknown:
        return f"unknown key {unknown[0]!r}; the keys are {', '.join(JSONL_FIELDS)}"
    if ("prompt" in rec) == ("tokens" in rec):
        return "give exactly one of 'prompt' (text) or 'tokens' (token ids)"
    if "prompt" in rec and (not isinstance(rec["prompt"], str) or not rec["prompt"]):
        return f"'prompt' must be non-empty text, got {describe_value(rec['prompt'])}"
    if "tokens" in rec and not token_ids(rec["tokens"]):
        return f"'tokens' must be a non-empty list of token ids, got {describe_value(rec['tokens'])}"
    if "answer" not in rec or rec["answer"] in (None, ""):
        return "no 'answer' (each record needs the token scored at its position)"
    for key in ("answer", "foil"):
        v = rec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int))):
            return f"'{key}' must be text or a token id, got {describe_value(v)}"
    if "corrupted" in rec and not (isinstance(rec["corrupted"], str) and rec["corrupted"]) \
            and not token_ids(rec["corrupted"]):
        return f"'corrupted' must be text or a list of token ids, got {describe_value(rec['corrupted'])}"
    if "position" in rec and (isinstance(rec["position"], bool) or not isinstance(rec["position"], int)):
        return f"'position' must be a whole number, got {describe_value(rec['position'])}"
    return None


def token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(t, int) and not isinstance(t, bool)
                                                             for t in value)


class MalformedTask(ManyProblems):
    """Records of a task file that cannot be read: one line each (the command line prints every line)."""

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} malformed task record(s); fix each and rerun:", problems)
