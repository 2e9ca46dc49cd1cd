"""Where a study stands: each job done, pending, running, failed (with its error's last line), changed or damaged."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from pear_lens.jobs.job import Study, finished_state, is_running, run_log_path

if TYPE_CHECKING:
    import pandas as pd

ORDER = ("failed", "changed", "damaged", "running", "pending", "done")


@dataclass(frozen=True)
class JobRow:
    job: str
    state: str
    detail: str = ""
    seconds: float | None = None
    """Seconds of its successful run, where this machine's run log has it."""


@dataclass(frozen=True)
class StudyStatus:
    """Each job's state, read from the study folder alone (no job runs)."""

    root: str
    rows: Sequence[JobRow]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.state == s for r in self.rows) for s in ORDER if any(r.state == s for r in self.rows)}

    @property
    def complete(self) -> bool:
        return all(r.state == "done" for r in self.rows)

    def to_dataframe(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame([vars(r) for r in self.rows], columns=["job", "state", "detail", "seconds"])

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        lines = [f"{self.root}: {len(self.rows)} jobs: {counts}"]
        for state in ORDER[:-1]:  # every job that is not done, by name, the failed ones with their error
            for r in (r for r in self.rows if r.state == state):
                lines.append(f"  {state:<8} {r.job}" + (f": {r.detail}" if r.detail else ""))
        return "\n".join(lines)


def study_status(study: Study) -> StudyStatus:
    rows = []
    for job in study.jobs:
        state, why = finished_state(study.root, job)
        if state in ("pending", "failed") and is_running(study.root, job):
            state, why = "running", ""
        seconds = None
        log = run_log_path(study.root, job)
        if state == "done" and log.is_file():
            try:
                seconds = float(json.loads(log.read_text(encoding="utf-8"))["seconds"])
            except (ValueError, KeyError, TypeError):
                seconds = None
        rows.append(JobRow(job.name, state, why, seconds))
    return StudyStatus(str(study.root), tuple(rows))
