"""The plan of a confirmatory run: written, hashed and its test seed claimed before any test item exists.

A confirmatory result is only as good as the order of events: the endpoints, the controls, the test and
the words the table may use are fixed first, then fresh items are drawn, then the numbers come in.
:class:`ConfirmatoryPlan` holds every such choice for one model; :func:`fix_plan` writes it once (claiming
the test seed in the registry of used seeds, :mod:`studies.confirmatory.ledger`), and afterwards only reads
it back: a run that resumes executes the plan on disk, and a changed plan is refused rather than silently
replacing the one the results were promised under. The report prints the plan and its SHA-256 beside the
results, with every deviation (:func:`deviations`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from pear_lens.errors import PearLensError
from studies.confirmatory.ledger import claim_test_seed
from pear_lens.evaluation.tasks import TaskName
from pear_lens.evaluation.verdict import EndpointKind, VerdictRule
from pear_lens.io import atomic_write_text, file_sha256

PLAN_KIND = "pear_lens confirmatory plan"
PRIMARY, SAFETY, SECONDARY = "primary", "safety", "secondary"
"""Roles of an endpoint: at most two primary (context use), closed-book as safety, the rest secondary."""
MAX_PRIMARY = 2
CONTEXT_TASKS = (TaskName.KV, TaskName.MDQA, TaskName.COUNTERFACTUAL)

ENDPOINT_RULE = ("primary endpoints: the context tasks (KV, MDQA, counterfactual) on which the exploratory run "
                 "(test seed 0, figures/results/run.json before this plan) showed PEAR above the baseline, at most "
                 "two, the larger differences first; closed-book is the safety endpoint; every other task is "
                 "secondary (reported, in the Holm family, with fewer controls)")

TESTS = {
    TaskName.KV.value: "exact McNemar, PEAR vs baseline on the same items (items independent)",
    TaskName.MDQA.value: "exact McNemar, PEAR vs baseline on the same items (items independent)",
    TaskName.CLOSED_BOOK.value: "exact McNemar, PEAR vs baseline on the same items (one item per fact)",
    TaskName.COUNTERFACTUAL.value: ("paired bootstrap of PEAR minus baseline, items of one fact resampled together "
                                    "(two-sided p from the bootstrap distribution); McNemar shown beside it"),
}
"""The test of PEAR against the baseline per task, as the plan states it."""


@dataclass(frozen=True)
class Endpoint:
    task: str
    role: str
    """:data:`PRIMARY`, :data:`SAFETY` or :data:`SECONDARY`."""
    kind: str
    """:class:`~pear_lens.evaluation.verdict.EndpointKind` value: efficacy or safety."""
    test: str


def choose_endpoints(exploratory_delta: Mapping[str, float],
                     tasks: Sequence[str] = tuple(t.value for t in (*CONTEXT_TASKS, TaskName.CLOSED_BOOK))) -> list[Endpoint]:
    """Apply :data:`ENDPOINT_RULE` to PEAR's exploratory Δ per task (task value → Δ accuracy vs baseline),
    over ``tasks`` (all four by default; a model that cannot do a task leaves it out).

    >>> [(e.task, e.role) for e in choose_endpoints({"kv": 0.037, "mdqa": -0.016, "counterfactual": 0.07,
    ...                                              "closed-book": -0.036})]
    [('counterfactual', 'primary'), ('kv', 'primary'), ('mdqa', 'secondary'), ('closed-book', 'safety')]
    """
    tasks = [TaskName.parse(t).value for t in tasks]
    missing = [t for t in tasks if t not in exploratory_delta]
    if missing:
        raise PearLensError(f"the exploratory record has no PEAR result on {', '.join(missing)}; the endpoint rule "
                            "reads every planned task (run studies/evaluate_all.py first, or plan fewer --tasks)")
    if TaskName.CLOSED_BOOK.value not in tasks:
        raise PearLensError("a confirmatory plan keeps closed-book as its safety endpoint; add it to --tasks")
    context = sorted((t.value for t in CONTEXT_TASKS if t.value in tasks), key=lambda t: -exploratory_delta[t])
    primary = [t for t in context if exploratory_delta[t] > 0][:MAX_PRIMARY]
    out = [Endpoint(t, PRIMARY, EndpointKind.EFFICACY.value, TESTS[t]) for t in primary]
    out += [Endpoint(t, SECONDARY, EndpointKind.EFFICACY.value, TESTS[t]) for t in context if t not in primary]
    out.append(Endpoint(TaskName.CLOSED_BOOK.value, SAFETY, EndpointKind.SAFETY.value, TESTS[TaskName.CLOSED_BOOK.value]))
    return out


@dataclass(frozen=True)
class ControlPlan:
    """How many controls of each kind are trained, and on which endpoints they are evaluated."""

    uniform_primary: int = 19
    """Uniform random-K controls on the primary endpoints: at least 19 (rank p down to 1/20); a new plan gets
    as many as its rank test needs to fall below alpha after Holm (:func:`controls_for_rank_test`)."""
    layer_matched_primary: int = 6
    other_per_kind: int = 3
    """Controls of each kind (the first seeds) on the secondary and safety endpoints."""
    rank_test: str = ("empirical p = (1 + #controls with Δ ≥ PEAR's Δ) / (1 + #controls) among the uniform controls, "
                      "Holm-adjusted over the primary endpoints; PEAR is 'beyond random heads' on an endpoint when "
                      "the adjusted value is below alpha")


def rank_p_floor(n_controls: int, n_primary: int) -> float:
    """The smallest Holm-adjusted rank p the rank test can give: PEAR above all ``n_controls`` on each of the
    ``n_primary`` endpoints (raw p 1/(1 + n_controls) each, Holm multiplies the smallest by ``n_primary``).

    >>> rank_p_floor(19, 2)  # the first plans: 'beyond random heads' (adjusted p below 0.05) was out of reach
    0.1
    """
    return min(1.0, n_primary / (1 + n_controls))


def controls_for_rank_test(n_primary: int, alpha: float, at_least: int = 19) -> int:
    """The fewest uniform controls (at least ``at_least``) with which the rank test can fall below ``alpha``.

    >>> controls_for_rank_test(2, 0.05), controls_for_rank_test(1, 0.05)
    (40, 20)
    """
    n = at_least
    while rank_p_floor(n, n_primary) >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class ArmPlan:
    """The arms that say where an effect comes from."""

    fixed_damping: str = ("PEAR's heads, every τ set to the mean of PEAR's learned τ, untrained; evaluated wherever "
                          "PEAR is")
    unclipped_lr: float = 0.05
    """Learning rate of the unclipped arm (10× the reference; same steps, schedule, sequences and seed)."""
    unclipped_controls_per_kind: int = 3
    unclipped_criterion: str = ("τ is unclipped when no τ of the arm sits at the step limit "
                                "(|τ - 1| < 90 % of the summed learning rate, pear_lens.reweight.at_step_limit); "
                                "the record states, per condition, whether this held")
    unclipped_endpoints: str = ("PEAR unclipped: every endpoint; its controls: the primary endpoints and closed-book")


@dataclass(frozen=True)
class ConfirmatoryPlan:
    """Every choice of one model's confirmatory run, fixed before its test items exist."""

    model: str
    fingerprint: str
    test_seed: int
    n: int
    endpoints: tuple[Endpoint, ...]
    artifact: dict[str, Any]
    """The PEAR artifact under test: path, coefficient SHA-256, heads, τ, K and how K was chosen."""
    recipe: dict[str, Any]
    """The training recipe of every trained arm but the unclipped one (PEAR's own)."""
    exploratory: dict[str, Any]
    """The exploratory numbers the endpoint rule read (task → Δ), and where they came from."""
    rule: dict[str, Any] = field(default_factory=lambda: VerdictRule().to_dict())
    family: str = "Holm over every PEAR-vs-baseline test of this model (all endpoints in its table)"
    controls: ControlPlan = ControlPlan()
    arms: ArmPlan = ArmPlan()
    endpoint_rule: str = ENDPOINT_RULE
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    statistics: dict[str, Any] = field(default_factory=lambda: {
        "bootstrap_resamples": 10_000, "level": 0.95, "seed": 0,
        "pear_minus_controls": "paired per-item bootstrap of PEAR minus the mean of the controls (clustered by fact "
                               "on counterfactual)",
        "counterfactual_sensitivity": "the same comparisons on one item per fact (the first in item order)"})

    def __post_init__(self) -> None:
        roles = [e.role for e in self.endpoints]
        if roles.count(PRIMARY) > MAX_PRIMARY or roles.count(PRIMARY) == 0:
            raise PearLensError(f"a plan names one or two primary endpoints, got {roles.count(PRIMARY)}")
        if self.n < 1:
            raise PearLensError(f"n must be positive, got {self.n}")

    def tasks(self, role: str | None = None) -> list[str]:
        return [e.task for e in self.endpoints if role is None or e.role == role]

    def rank_p_floor(self) -> float:
        """The smallest adjusted rank p this plan's controls allow (:func:`rank_p_floor`)."""
        return rank_p_floor(self.controls.uniform_primary, len(self.tasks(PRIMARY)))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": PLAN_KIND, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ConfirmatoryPlan":
        d = {k: v for k, v in d.items() if k != "kind"}
        return cls(**{**d, "endpoints": tuple(Endpoint(**e) for e in d["endpoints"]),
                      "controls": ControlPlan(**d["controls"]), "arms": ArmPlan(**d["arms"])})

    def text(self) -> str:
        """The plan in words (the report prints it beside the results)."""
        ends = "; ".join(f"{e.task} ({e.role}: {e.test})" for e in self.endpoints)
        c, a = self.controls, self.arms
        return (f"{self.model}: {self.n} fresh test items per task from seed {self.test_seed}. Endpoints: {ends}. "
                f"{self.endpoint_rule}. PEAR = the artifact {self.artifact['sha256'][:12]} (K = {self.artifact['k']}, "
                f"{self.artifact['k_rule']}). Controls trained with PEAR's recipe ({self.recipe['steps']} steps, lr "
                f"{self.recipe['lr']}, training seed {self.recipe['seed']}): {c.uniform_primary} uniform and "
                f"{c.layer_matched_primary} layer-matched random-K on the primary endpoints, the first "
                f"{c.other_per_kind} of each kind elsewhere; {c.rank_test}. Fixed damping: {a.fixed_damping}. "
                f"Unclipped: PEAR and {a.unclipped_controls_per_kind} controls of each kind at lr {a.unclipped_lr} "
                f"({a.unclipped_endpoints}); {a.unclipped_criterion}. Family: {self.family}. {self.rule['text']}")


def plan_bytes(plan: ConfirmatoryPlan, created: str) -> bytes:
    return (json.dumps({**plan.to_dict(), "created": created}, indent=2, ensure_ascii=False) + "\n").encode()


def read_plan(path: str | Path) -> tuple[ConfirmatoryPlan, str]:
    """The plan in ``path`` and its SHA-256 (of the file's bytes, as recorded)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("kind") != PLAN_KIND:
            raise ValueError(f"kind is {raw.get('kind')!r}")
        plan = ConfirmatoryPlan.from_dict({k: v for k, v in raw.items() if k != "created"})
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise PearLensError(f"{path} is not a readable confirmatory plan ({type(e).__name__}: {e}); restore it from "
                            "git: a plan is never rewritten") from None
    return plan, file_sha256(path)


def fix_plan(path: str | Path, plan: ConfirmatoryPlan, registry: str | Path, purpose: str,
             study: str = "") -> tuple[ConfirmatoryPlan, str]:
    """Write ``plan`` to ``path`` and claim its test seed, or read back the plan already fixed there.

    The first call (no file yet) claims ``plan.test_seed`` in ``registry`` (refused when any earlier run used
    it) and then writes the plan: both happen before any test item is drawn. Later calls return the plan on
    disk when ``plan`` equals it and refuse a different one, naming the fields that differ, since the results
    were promised under the first.
    """
    path = Path(path)
    if path.exists():
        fixed, sha = read_plan(path)
        if fixed != plan:
            a, b = fixed.to_dict(), plan.to_dict()
            changed = [k for k in a if a[k] != b.get(k)]
            raise PearLensError(f"{path} already fixes a different plan (fields {', '.join(changed)} differ); a "
                                "confirmatory plan is not changed after the fact: resume it as it is, or start a "
                                "new plan in another folder with a fresh --test-seed")
        return fixed, sha
    claim_test_seed(registry, plan.test_seed, purpose, record=str(path), study=study)
    atomic_write_text(path, plan_bytes(plan, datetime.now(timezone.utc).isoformat(timespec="seconds")).decode())
    return plan, file_sha256(path)


NOT_EVALUATED = "planned conditions not evaluated yet"
"""The words of a :func:`missing_conditions` line (pending work, not a departure that stands)."""


def missing_conditions(plan: ConfirmatoryPlan, done: Mapping[str, Sequence[str]]) -> list[str]:
    """One line per task with planned conditions not evaluated yet (``done``: task → condition ids evaluated):
    pending work, which :func:`deviations` also names."""
    out = []
    for task, wanted in planned_conditions(plan).items():
        missing = [c for c in wanted if c not in set(done.get(task, ()))]
        if missing:
            out.append(f"{task}: {len(missing)} of {len(wanted)} {NOT_EVALUATED} "
                       f"({', '.join(missing[:4])}{', …' if len(missing) > 4 else ''})")
    return out


def deviations(plan: ConfirmatoryPlan, done: Mapping[str, Sequence[str]], measured: Mapping[str, Any]) -> list[str]:
    """What the run did differently from ``plan``: missing conditions per task (``done``: task → condition ids
    evaluated), a device, dtype or batch size other than planned, fewer items than planned, conditions of one
    task asked on other items or with other settings than the rest (``measured``: ``device``, ``dtype``,
    ``batch_size``, ``n_items`` per task, ``mixed`` per task: key field → the conditions that differ in it from
    the rest)."""
    out = missing_conditions(plan, done)
    for key in ("device", "dtype", "batch_size"):
        got = measured.get(key)
        if got is not None and str(got) != str(getattr(plan, key)):
            out.append(f"{key}: ran on {got}, planned {getattr(plan, key)}")
    for task, n in measured.get("n_items", {}).items():
        if n != plan.n:
            out.append(f"{task}: {n} items, planned {plan.n}")
    for task, fields in measured.get("mixed", {}).items():
        for field, odd in fields.items():
            out.append(f"{task}: {', '.join(odd)} made on other {field} than the task's other conditions, so "
                       "not compared on equal terms")
    return out


def control_ids(kind: str, count: int, suffix: str = "") -> list[str]:
    return [f"{kind}{suffix}_s{seed:02d}" for seed in range(count)]


# conditions whose τ is not trained by the run: none, PEAR's artifact as shipped, its mean fixed on PEAR's heads
UNTRAINED = ("baseline", "pear", "fixed_damping")


def planned_conditions(plan: ConfirmatoryPlan) -> dict[str, list[str]]:
    """Condition ids per task, in the order the run evaluates them (the report's order too)."""
    c, a = plan.controls, plan.arms
    out = {}
    for e in plan.endpoints:
        primary = e.role == PRIMARY
        conds = [*UNTRAINED, "pear_unclipped"]
        conds += control_ids("uniform", c.uniform_primary if primary else c.other_per_kind)
        conds += control_ids("layer_matched", c.layer_matched_primary if primary else c.other_per_kind)
        if primary or e.role == SAFETY:
            conds += control_ids("uniform", a.unclipped_controls_per_kind, "_unclipped")
            conds += control_ids("layer_matched", a.unclipped_controls_per_kind, "_unclipped")
        out[e.task] = conds
    return out


def planned_trainings(plan: ConfirmatoryPlan) -> list[str]:
    """The conditions whose τ the run trains, each once however many tasks evaluate it (first-evaluated first)."""
    ids = (c for conds in planned_conditions(plan).values() for c in conds if c not in UNTRAINED)
    return list(dict.fromkeys(ids))
