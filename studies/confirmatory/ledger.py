"""A registry of the seeds whose test items have been looked at.

Test items are only a fair test the first time their results are seen: after
that, any change to the method is tuned on them. The registry is a JSON list
of ``{seed, first_used, purpose, record}``; :func:`claim_test_seed` adds a seed
before its items are evaluated and refuses one already there, so a
confirmatory run cannot quietly reuse items that shaped the method.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pear_lens.errors import PearLensError
from pear_lens.io import atomic_write_json


@dataclass(frozen=True)
class SeedUse:
    """One registry entry: a test seed and the first time its items were evaluated."""

    seed: int
    first_used: str
    """UTC time of the claim, ISO 8601 to the second."""
    purpose: str
    """Why the items were drawn (e.g. "issue 16 confirmatory run, SmolLM2")."""
    record: str = ""
    """Where the results of that use are written (e.g. a run.json path); may be empty."""
    study: str = ""
    """The pre-registered study the items belong to: one study may draw the same seed for each of its models
    (their plans are fixed together, before any of its items is seen); any other use is refused."""
    closed: str = ""
    """UTC time the study drew its first items (:func:`close_study`); from then on no model can join it."""


def used_seeds(registry_path: str | os.PathLike) -> list[SeedUse]:
    """Every claimed seed, oldest first; a registry that does not exist yet has none.

    A malformed file is an error rather than an empty list: losing the record of used seeds would allow
    exactly the reuse it exists to prevent.
    """
    path = Path(registry_path)
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, list):
            raise TypeError("the registry must be a JSON list")
        uses = [SeedUse(seed=_check_seed(e["seed"]), first_used=str(e["first_used"]), purpose=str(e["purpose"]),
                        record=str(e.get("record", "")), study=str(e.get("study", "")),
                        closed=str(e.get("closed", ""))) for e in raw]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise PearLensError(f"seed registry {path} is unreadable ({type(e).__name__}: {e}); restore it from git "
                            "rather than deleting it") from None
    return uses


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise PearLensError(f"a test seed must be a non-negative integer, got {seed!r}")
    return seed


def claim_test_seed(registry_path: str | os.PathLike, seed: int, purpose: str, *, record: str = "",
                    study: str = "") -> SeedUse:
    """Record ``seed`` as used for ``purpose`` (written atomically), or refuse it if it was used before.

    A non-empty ``study`` lets the models of one pre-registered study share a seed: a seed whose every earlier
    use belongs to the same ``study`` is claimed again (a new entry, e.g. for the study's next model), but only
    while the study is open (no item of it drawn yet, :func:`close_study`). Claiming again what the same
    ``record`` of an open study already claimed returns that entry (a plan interrupted between its claim and
    its file is simply fixed again).

    Call it before generating the test items. On refusal the registry is left byte for byte as it was and the
    error names the smallest free seed. One writer at a time: the read and the write are not locked.
    """
    seed = _check_seed(seed)
    if not purpose.strip():
        raise PearLensError("claim_test_seed needs a purpose (what the items are for), got an empty one")
    uses = used_seeds(registry_path)
    for use in uses:
        if use.seed != seed:
            continue
        same_study = bool(study) and use.study == study
        if same_study and not use.closed:
            continue
        taken = {u.seed for u in uses}
        free = next(s for s in range(len(taken) + 1) if s not in taken)
        where = f", results in {use.record}" if use.record else ""
        why = f" (study {study!r} drew its first items on {use.closed})" if same_study else ""
        raise PearLensError(f"test seed {seed} was already used on {use.first_used} for {use.purpose!r}"
                            f"{where}{why}; its items are no longer a fresh test: claim an unused seed (e.g. {free})")
    again = [u for u in uses if (u.seed, u.study, u.record) == (seed, study, record) and study and record]
    if again:
        return again[0]
    claimed = SeedUse(seed=seed, first_used=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      purpose=purpose, record=record, study=study)
    atomic_write_json(registry_path, [asdict(u) for u in [*uses, claimed]])
    return claimed


def close_study(registry_path: str | os.PathLike, study: str, when: str | None = None) -> None:
    """Mark ``study`` as having drawn items (once; later calls change nothing): its seed is then refused to
    any new claim, so every plan of a study is on record before any of its items exists.

    ``when``: the UTC time (ISO 8601) by which the first items were drawn, for a study that drew them before
    the registry recorded it (e.g. the commit that added them); now by default."""
    uses = used_seeds(registry_path)
    if not any(u.study == study for u in uses):
        raise PearLensError(f"study {study!r} claimed no seed in {registry_path}; fix its plans first "
                            "(studies/confirm.py --plan-only)")
    if all(u.closed for u in uses if u.study == study):
        return
    now = when or datetime.now(timezone.utc).isoformat(timespec="seconds")
    closed = [SeedUse(**{**asdict(u), "closed": u.closed or now}) if u.study == study else u for u in uses]
    atomic_write_json(registry_path, [asdict(u) for u in closed])
