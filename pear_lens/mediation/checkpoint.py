"""A scan that survives being stopped: each batch's result saved as it is made, read back on the next run.

A scan of a long task (a RAG task's hundred prompts of a hundred lengths, on a CPU) can take hours; a job
stopped near its end should not start again from nothing. With ``score_heads(..., checkpoint=FOLDER)`` each
batch's :class:`~pear_lens.mediation.base.SettingScan` is written to ``FOLDER/<key>.safetensors`` the moment it
is done (written whole: a temporary file moved into place). The key is the SHA-256 of everything the batch's
numbers depend on: the weights as they are when the scan starts, the method, its options and seed, the metric
(a callable metric by its name and source) and the batch's tokens, answers, foils and corrupted prompts. A
later run with the same key reads the batch back instead of scanning it; anything else in the folder is left
alone.

Read back, a file is checked whole: its recorded key must be its name's, and the digest of its tensors
(:func:`pear_lens.fingerprint.fingerprint_state`) the one it recorded; a cut or foreign file is refused with
one line naming it (move it aside and rerun). A scan resumed from a checkpoint gives the same
:class:`~pear_lens.results.HeadScores` as one run straight through (tested), its ``extra["resumed_batches"]``
saying how many batches were read back.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

from pear_lens.errors import PearLensError
from pear_lens.fingerprint import fingerprint_state
from pear_lens.io import atomic_write_bytes
from pear_lens.metrics import Metric, MetricFn, metric_name

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.prompt_task import ScoredBatch

FORMAT = "pear_lens.scan_checkpoint/1"
"""What a checkpoint file says it is; a change to what a batch's numbers mean changes it."""

_TENSORS = ("patched", "patched_each", "clean_each")


def metric_key(metric: Metric | MetricFn) -> str:
    """A metric as a checkpoint keys it: a built-in by name, a callable by its name and the SHA-256 of its
    source (a callable whose source cannot be read, by its name alone)."""
    name = metric_name(metric)
    if isinstance(metric, Metric):
        return name
    try:
        source = inspect.getsource(metric if inspect.isroutine(metric) else type(metric))
    except (OSError, TypeError):
        return name
    return f"{name}@{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def _feed(h: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    else:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())


def scan_key(model: "LoadedModel", method: str, options: dict[str, Any], metric: Metric | MetricFn) -> str:
    """SHA-256 (hex) of what every batch of one scan depends on: the weights as they are now (digested here,
    so weights edited in place after loading get another key), the method, its options and the metric."""
    h = hashlib.sha256()
    _feed(h, {"format": FORMAT, "model": model.name, "weights": fingerprint_state(model.bridge.state_dict()),
              "method": method, "options": options, "metric": metric_key(metric), "n_layers": model.n_layers,
              "n_heads": model.n_heads})
    return h.hexdigest()


def batch_key(scan: str, batch: "ScoredBatch") -> str:
    """SHA-256 (hex) of one batch of the scan keyed ``scan`` (:func:`scan_key`): its every field."""
    h = hashlib.sha256(scan.encode())
    fields = [f.name for f in dataclasses.fields(batch)] if dataclasses.is_dataclass(batch) else ["tokens"]
    for name in fields:
        h.update(name.encode())
        _feed(h, getattr(batch, name))
    return h.hexdigest()


class SavedBatch(NamedTuple):
    """One batch's scan as saved (the fields of :class:`pear_lens.mediation.base.SettingScan`) and its time."""

    patched: Tensor
    clean: float
    patched_each: Tensor
    clean_each: Tensor
    seconds: float


class ScanCheckpoint:
    """The folder a scan saves each batch into and resumes from (see the module)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise PearLensError(f"checkpoint {self.folder} is a file, not a folder; give a folder (it is made "
                                "if missing)")

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def load(self, key: str) -> SavedBatch | None:
        """The batch's scan and the seconds it took, or None when it has not been saved."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = self.path(key)
        if not path.is_file():
            return None
        fix = "move it aside and rerun (its batch is scanned again)"
        data = path.read_bytes()
        try:
            tensors = load(data)
            meta = json.loads(_metadata(data).get("pear_lens", "{}"))
        except (SafetensorError, ValueError, KeyError) as e:
            raise PearLensError(f"scan checkpoint {path} is cut or not a checkpoint ({e}); {fix}") from None
        if meta.get("format") != FORMAT or meta.get("key") != key or set(tensors) != set(_TENSORS):
            raise PearLensError(f"scan checkpoint {path} is not the one its name says (another format or key); {fix}")
        if meta.get("tensors") != fingerprint_state(tensors):
            raise PearLensError(f"scan checkpoint {path} was changed after it was written (its tensors no longer "
                                f"hash as recorded); {fix}")
        return SavedBatch(tensors["patched"], float(meta["clean"]), tensors["patched_each"], tensors["clean_each"],
                          float(meta["seconds"]))

    def save(self, key: str, patched: Tensor, clean: float, patched_each: Tensor, clean_each: Tensor,
             seconds: float) -> Path:
        """Write one batch's scan whole."""
        from safetensors.torch import save

        tensors = {"patched": patched.detach().cpu().contiguous(),
                   "patched_each": patched_each.detach().cpu().contiguous(),
                   "clean_each": clean_each.detach().cpu().contiguous()}
        meta = {"format": FORMAT, "key": key, "clean": float(clean), "seconds": float(seconds),
                "tensors": fingerprint_state(tensors)}
        return atomic_write_bytes(self.path(key), save(tensors, metadata={"pear_lens": json.dumps(meta)}))


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's bytes."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    return header.get("__metadata__") or {}
