"""What a folder's tables and records hold, checked whole when read back: ``manifest.json``.

A run folder's CSVs and JSONs carry no checksum of their own (they stay plain files anyone can read), so the
folder lists them in ``manifest.json``, a :mod:`pear_lens.stage_cache` record: its ``key`` is the model and
weight fingerprint the folder belongs to, its ``value`` each file's SHA-256, size and (for a CSV) row count.
Every writer of a listed file updates its entry (:func:`seal`), and every reader checks the file first
(:func:`check`): a file cut, edited or copied from another run, or a manifest of another model, is refused in
one line naming the file and the fix. A folder written before manifests existed has none and is read as before;
a file the manifest does not list (added by an older pear_lens) is too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

from pear_lens.constants import MANIFEST_JSON
from pear_lens.errors import PearLensError
from pear_lens.stage_cache import read_record, write_record
KIND = "pear_lens manifest"


def _entry(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    entry: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    if path.suffix == ".csv":
        entry["rows"] = max(data.count(b"\n") - 1, 0)  # data rows: lines after the header
    return entry


def read(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s manifest (``{"kind", "key": {"model", "fingerprint"}, "value": {name: entry}}``), None when
    it has none (a folder written before manifests existed)."""
    path = Path(folder) / MANIFEST_JSON
    if not path.exists():
        return None
    record = read_record(path)
    if (not isinstance(record, dict) or record.get("kind") != KIND or not isinstance(record.get("key"), dict)
            or not isinstance(record.get("value"), dict)):
        raise PearLensError(f"{path} is not the manifest pear_lens writes (edited or foreign); the folder's files "
                            "cannot be checked: rerun the command that wrote the folder")
    return record


def seal(folder: str | Path, names: Iterable[str], *, model: str, fingerprint: str) -> None:
    """Record ``names`` (files of ``folder``, just written) in its manifest, under ``model`` and its weights'
    ``fingerprint``; the entries of other files are kept. A manifest of another model is refused."""
    folder = Path(folder)
    key = {"model": str(model), "fingerprint": str(fingerprint)}
    record = read(folder) or {"kind": KIND, "key": key, "value": {}}
    if record["key"] != key:
        raise _foreign(folder / MANIFEST_JSON, record["key"], key)
    for name in names:
        if (folder / name).is_file():
            record["value"][name] = _entry(folder / name)
    record["value"] = dict(sorted(record["value"].items()))
    write_record(folder / MANIFEST_JSON, record)


def check(folder: str | Path, name: str, *, fix: str, model: str | None = None,
          fingerprint: str | None = None) -> None:
    """Refuse ``folder/name`` unless it is whole and as written: its row count and SHA-256 as the manifest records
    them, the manifest of ``model`` and ``fingerprint`` when given. ``fix`` ends the one-line message."""
    folder = Path(folder)
    record = read(folder)
    if record is None:
        return  # written before manifests: read as before
    manifest = folder / MANIFEST_JSON
    if model is not None and fingerprint is not None:
        key = {"model": str(model), "fingerprint": str(fingerprint)}
        if record["key"] != key:
            raise _foreign(manifest, record["key"], key, fix)
    recorded = record["value"].get(name)
    if recorded is None:
        return  # added by a pear_lens that kept no manifest
    path = folder / name
    if not path.is_file():
        raise PearLensError(f"{path} is missing ({MANIFEST_JSON} lists it); {fix}")
    found = _entry(path)
    if "rows" in recorded and found.get("rows") != recorded["rows"]:
        raise PearLensError(f"{path} has {found.get('rows')} rows where {MANIFEST_JSON} records {recorded['rows']} "
                            f"(cut or edited); {fix}")
    if found["sha256"] != recorded.get("sha256"):
        raise PearLensError(f"{path} is not the file written for {record['key']['model']} (its SHA-256 differs from "
                            f"the one {MANIFEST_JSON} records: cut, edited or copied from another run); {fix}")


def _foreign(manifest: Path, saved: dict[str, Any], key: dict[str, Any],
             fix: str = "write it into a new folder") -> PearLensError:
    return PearLensError(f"{manifest} belongs to {saved.get('model')} (weights {saved.get('fingerprint')}), not to "
                         f"{key['model']} (weights {key['fingerprint']}): the folder mixes two models' files; {fix}")
