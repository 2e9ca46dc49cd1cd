"""A task of your own: prompts, the position scored in each, and what is scored there.

Every scoring method reads a task as batches of equal-length prompts, each with one scored position ``end``, the
answer token there and, optionally, a foil token and a corrupted prompt of the same length. PEAR's copy proxy
task (:class:`pear_lens.proxy_task.ProxyTask`) is one such task; :class:`PromptTask` is any other: prompts given
as strings or token ids from Python, or a JSONL file (:meth:`PromptTask.from_jsonl`).

A prompt is cut after its scored position (later tokens cannot change it under causal attention), and prompts
of the same cut length form one batch: mean ablation replaces a head's output by its mean over the prompts of
that length. Δ of the task compares the mean patched metric with the mean clean metric over all its prompts.

>>> task = PromptTask(["The capital of France is", "The capital of Italy is"], answers=[" Paris", " Rome"],
...                   foils=[" Rome", " Paris"])
>>> len(task)
2
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from pear_lens.errors import ManyProblems, PearLensError
from pear_lens.task_records import JSONL_FIELDS, MalformedTask, describe_value, read_jsonl, record_problem

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel

Prompt = Union[str, Sequence[int], Tensor]
Token = Union[str, int]

class ScoredBatch(Protocol):
    """What a scoring method reads of a batch (a proxy batch or a batch of your prompts)."""

    tokens: Tensor
    setting: int

    @property
    def batch_size(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def targets(self) -> Tensor: ...
    @property
    def label(self) -> str: ...


class ScoredTask(Protocol):
    """What a scoring method reads of a task."""

    def batches(self, model: "LoadedModel") -> list[Any]: ...
    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class PromptBatch:
    """Prompts of one length, cut after the scored position (the last token)."""

    tokens: Int[Tensor, "batch seq"]
    targets: Int[Tensor, " batch"]
    """The answer token of each prompt."""
    foils: Int[Tensor, " batch"] | None
    corrupted: Int[Tensor, "batch seq"] | None
    prompt_index: Int[Tensor, " batch"]
    """Where each prompt stands in the task."""
    setting: int = 0
    """A task of your own is one setting, scanned in as many batches as it has prompt lengths."""

    @property
    def batch_size(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def end(self) -> int:
        """The scored position: the last token of the cut prompts."""
        return int(self.tokens.shape[1]) - 1

    @property
    def label(self) -> str:
        return f"{self.batch_size} prompts of {self.tokens.shape[1]} tokens"


class PromptTask:
    """Prompts of your own with, per prompt, the answer scored at a position (and optionally a foil and a
    corrupted prompt of the same length).

    ``prompts``: strings (tokenized with the model's tokenizer, ``add_special_tokens`` as given), lists of token
    ids, or a ``[n_prompts, seq]`` tensor. ``answers`` and ``foils``: one token each, as text that the tokenizer
    makes exactly one token (a leading space matters) or as an id. ``corrupted``: prompts of the same token
    length, for ``ablation='corrupted'``. ``positions``: the scored token of each prompt (default -1: the last);
    the answer is the token that should follow it.

    ``max_batch``: at most this many prompts in one batch (the prompts of one length are split, in order). A scan
    with a ``checkpoint`` saves each batch as it is made, so a long scan of many prompts of one length resumes
    within that length; scores are the same, since a setting's means pool its batches by prompt count. The
    ablations that draw on the batch (``mean``, ``resample``) would then draw on part of a length's prompts, so
    they refuse a task with ``max_batch``.
    """

    def __init__(self, prompts: Sequence[Prompt] | Tensor, answers: Sequence[Token | None] | Tensor,
                 foils: Sequence[Token] | Tensor | None = None, corrupted: Sequence[Prompt] | Tensor | None = None,
                 positions: Sequence[Any] | int | None = None, *, name: str = "custom",
                 add_special_tokens: bool = True, max_batch: int | None = None):
        self.prompts = self._rows(prompts, "prompts")
        n = len(self.prompts)
        if n == 0:
            raise PearLensError("the task has no prompts; give at least one")
        self.answers = self._tokens(answers, "answers", n)
        self.foils = None if foils is None else self._tokens(foils, "foils", n)
        self.corrupted = None if corrupted is None else self._rows(corrupted, "corrupted")
        if self.corrupted is not None and len(self.corrupted) != n:
            raise PearLensError(f"corrupted has {len(self.corrupted)} prompts for {n} prompts; give one corrupted "
                                "prompt per prompt")
        if positions is None or isinstance(positions, int):
            self.positions = [-1 if positions is None else int(positions)] * n
        else:
            self.positions = list(positions)
            if len(self.positions) != n:
                raise PearLensError(f"positions has {len(self.positions)} entries for {n} prompts; give one each")
            for i, p in enumerate(self.positions):
                if isinstance(p, bool) or not isinstance(p, int):
                    raise PearLensError(f"prompt {i}: position {describe_value(p)} is not a whole number")
        self.name = str(name)
        self.add_special_tokens = bool(add_special_tokens)
        if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
            raise PearLensError(f"max_batch must be a whole number of at least 1 (or None for one batch per "
                                f"length), got {describe_value(max_batch)}")
        self.max_batch = max_batch
        self.labels: list[str] | None = None
        """Where each prompt came from (``file.jsonl:LINE``), for messages; None for prompts from Python."""

    # ------------------------------------------------------------------ input checks
    @staticmethod
    def _rows(rows: Any, what: str) -> list:
        if isinstance(rows, Tensor):
            if rows.ndim != 2:
                raise PearLensError(f"{what} as a tensor must be [n_prompts, seq], got shape {tuple(rows.shape)}")
            return [r.tolist() for r in rows]
        if isinstance(rows, str):
            raise PearLensError(f"{what} must be a list of prompts, got one string; wrap it in a list")
        out = []
        for i, r in enumerate(rows):
            if isinstance(r, Tensor):
                r = r.tolist()
            if isinstance(r, str):
                if not r:
                    raise PearLensError(f"{what}[{i}] is an empty string")
            elif isinstance(r, (list, tuple)):
                if not r or not all(isinstance(t, int) and not isinstance(t, bool) for t in r):
                    raise PearLensError(f"{what}[{i}] must be text or a non-empty list of token ids, got "
                                        f"{describe_value(r)}")
                r = list(r)
            else:
                raise PearLensError(f"{what}[{i}] must be text or a list of token ids, got {type(r).__name__}")
            out.append(r)
        return out

    @staticmethod
    def _tokens(values: Any, what: str, n: int) -> list:
        if isinstance(values, Tensor):
            values = values.tolist()
        if isinstance(values, (str, int)):
            raise PearLensError(f"{what} must hold one token per prompt (a list of {n}), got a single value")
        values = list(values)
        if len(values) != n:
            raise PearLensError(f"{what} has {len(values)} entries for {n} prompts; give one per prompt")
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and not v):
                raise PearLensError(f"prompt {i} has no {what[:-1]}; give one token (text or id) for every prompt")
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise PearLensError(f"prompt {i}: {what[:-1]} {describe_value(v)} must be text or a token id")
        return values

    def __len__(self) -> int:
        return len(self.prompts)

    # ------------------------------------------------------------------ tokens
    def _encode(self, tok, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return list(tok(prompt, add_special_tokens=self.add_special_tokens)["input_ids"])
        return list(prompt)

    @staticmethod
    def _token_id(tok, value: Token, what: str, i: int, vocab: int) -> int:
        if isinstance(value, int):
            if not 0 <= value < vocab:
                raise PearLensError(f"prompt {i}: {what} id {value} is outside the model's vocabulary of {vocab}")
            return value
        ids = tok(value, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = tok.convert_ids_to_tokens(ids)
            raise PearLensError(f"prompt {i}: {what} {value!r} is {len(ids)} tokens for this tokenizer {pieces}; "
                                f"the scan reads one token: give a one-token {what} (or its first token's id)")
        return int(ids[0])

    def encoded(self, model: "LoadedModel") -> list[dict[str, Any]]:
        """Every prompt as token ids, cut after its scored position, with its answer, foil and corrupted ids.

        Every prompt is checked; each one that cannot be scored is named on a line of its own."""
        out, problems = [], []
        for i in range(len(self.prompts)):
            try:
                out.append(self._encode_one(model, i))
            except PearLensError as e:
                problems.append(str(e) if self.labels is None else f"{self.labels[i]}: {e}")
        if len(problems) == 1:
            raise PearLensError(problems[0])
        if problems:
            raise ManyProblems(f"{len(problems)} prompts cannot be scored; fix each and rerun:", problems)
        return out

    def _encode_one(self, model: "LoadedModel", i: int) -> dict[str, Any]:
        tok, vocab = model.tokenizer, model.d_vocab
        ids = self._encode(tok, self.prompts[i])
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise PearLensError(f"prompt {i}: token id {bad[0]} is outside the model's vocabulary of {vocab}")
        pos = self.positions[i]
        if not -len(ids) <= pos < len(ids):
            raise PearLensError(f"prompt {i}: position {pos} is beyond the prompt of {len(ids)} tokens; give a "
                                f"position from {-len(ids)} to {len(ids) - 1}")
        cut = pos % len(ids) + 1
        if cut > model.n_ctx:
            raise PearLensError(f"prompt {i}: {cut} tokens are longer than {model.name}'s context of {model.n_ctx}")
        item = {"tokens": ids[:cut], "answer": self._token_id(tok, self.answers[i], "answer", i, vocab)}
        if self.foils is not None:
            item["foil"] = self._token_id(tok, self.foils[i], "foil", i, vocab)
        if self.corrupted is not None:
            corrupt = self._encode(tok, self.corrupted[i])
            if len(corrupt) != len(ids):
                raise PearLensError(f"prompt {i}: the corrupted prompt is {len(corrupt)} tokens and the prompt "
                                    f"{len(ids)}; a corrupted prompt must have the same number of tokens")
            item["corrupted"] = corrupt[:cut]
        return item

    def batches(self, model: "LoadedModel") -> list[PromptBatch]:
        """One batch per scored length (split into batches of at most ``max_batch`` when given), prompts in the
        task's order within each (every prompt checked first)."""
        items = self.encoded(model)
        device = model.cfg.device
        lengths: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            lengths.setdefault(len(item["tokens"]), []).append(i)
        step = self.max_batch or len(items)
        out = []
        for rows in (part[j:j + step] for part in lengths.values() for j in range(0, len(part), step)):
            def stack(key: str, rows: list[int] = rows) -> Tensor:
                return torch.tensor([items[i][key] for i in rows], dtype=torch.long, device=device)
            out.append(PromptBatch(
                tokens=stack("tokens"), targets=stack("answer"),
                foils=stack("foil") if self.foils is not None else None,
                corrupted=stack("corrupted") if self.corrupted is not None else None,
                prompt_index=torch.tensor(rows, dtype=torch.long)))
        return out

    @property
    def default_difference(self) -> str:
        """How a change in the metric is reported unless told: absolute (a logit difference can be 0 or
        negative, so a ratio would mean nothing)."""
        return "absolute"

    # ------------------------------------------------------------------ records
    def digest(self) -> str:
        """SHA-256 of the task's items: the same prompts, answers, foils and positions give the same digest."""
        payload = json.dumps(self._items(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _items(self) -> list[dict[str, Any]]:
        out = []
        for i, prompt in enumerate(self.prompts):
            item: dict[str, Any] = {"prompt" if isinstance(prompt, str) else "tokens": prompt,
                                    "answer": self.answers[i]}
            if self.foils is not None:
                item["foil"] = self.foils[i]
            if self.corrupted is not None:
                item["corrupted"] = self.corrupted[i]
            if self.positions[i] != -1:
                item["position"] = self.positions[i]
            out.append(item)
        return out

    def to_dict(self) -> dict[str, Any]:
        """What a result records of the task: its name, size, digest and items (enough to rebuild it)."""
        return {"kind": "prompts", "name": self.name, "n_prompts": len(self), "digest": self.digest(),
                "add_special_tokens": self.add_special_tokens,
                **({"max_batch": self.max_batch} if self.max_batch is not None else {}), "items": self._items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PromptTask":
        task = cls.from_records(d["items"], name=d.get("name", "custom"),
                                add_special_tokens=d.get("add_special_tokens", True))
        task.max_batch = d.get("max_batch")
        return task

    @classmethod
    def from_records(cls, records: Sequence[Any], *, name: str = "custom",
                     add_special_tokens: bool = True, where: Sequence[str] | None = None) -> "PromptTask":
        """A task from JSONL-style records (:data:`JSONL_FIELDS`); every malformed record is named, one line
        each, in one :class:`PearLensError` (``where``: how to name each record, e.g. ``file.jsonl:3``)."""
        where = list(where) if where is not None else [f"record {i}" for i in range(len(records))]
        problems: list[str] = []
        cols: dict[str, list] = {"prompts": [], "answers": [], "foils": [], "corrupted": [], "positions": []}
        for label, rec in zip(where, records):
            problem = record_problem(rec)
            if problem:
                problems.append(f"{label}: {problem}")
                continue
            cols["prompts"].append(rec["prompt"] if "prompt" in rec else rec["tokens"])
            cols["answers"].append(rec["answer"])
            cols["foils"].append(rec.get("foil"))
            cols["corrupted"].append(rec.get("corrupted"))
            cols["positions"].append(rec.get("position", -1))
        for key in ("foils", "corrupted"):
            given = [v is not None for v in cols[key]]
            if any(given) and not all(given):
                missing = [w for w, g in zip(where, given) if not g]
                problems.append(f"{missing[0]}: no '{key[:-1] if key == 'foils' else key}' while other records "
                                f"have one (give it for every record or for none; {len(missing)} record(s) lack it)")
        if problems:
            raise MalformedTask(problems)
        if not cols["prompts"]:
            raise PearLensError("the task file holds no records; write one JSON object per line")
        task = cls(cols["prompts"], cols["answers"],
                   foils=cols["foils"] if cols["foils"][0] is not None else None,
                   corrupted=cols["corrupted"] if cols["corrupted"][0] is not None else None,
                   positions=cols["positions"], name=name, add_special_tokens=add_special_tokens)
        task.labels = list(where)
        return task

    @classmethod
    def from_jsonl(cls, path: str | Path, *, add_special_tokens: bool = True) -> "PromptTask":
        """Read a task file: one JSON object per line (:data:`JSONL_FIELDS`), blank lines skipped."""
        path = Path(path)
        if not path.exists():
            raise PearLensError(f"task file {path} does not exist; check the path")
        if path.is_dir():
            raise PearLensError(f"task file {path} is a folder; give a .jsonl file")
        records, where, problems = read_jsonl(path)
        try:
            task = cls.from_records(records, name=path.stem, add_special_tokens=add_special_tokens, where=where)
        except MalformedTask as e:
            raise MalformedTask(problems + e.problems) from None
        if problems:
            raise MalformedTask(problems)
        return task
