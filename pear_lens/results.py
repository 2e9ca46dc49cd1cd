"""Result objects: per-head scores with the settings that produced them (their files: :mod:`pear_lens.runs`)."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from pear_lens import constants
from pear_lens.errors import PearLensError
from pear_lens.runs import corrupt_run, read_score_table
from pear_lens.scores_folder import SCORES_JSON, TENSORS, damaged, read_scores, write_scores
from pear_lens.heads import Head, head_label

if TYPE_CHECKING:
    from pear_lens.uncertainty import Stability


@dataclass
class HeadScores:
    """Δπ of every attention head, ``[n_layers, n_heads]``, plus how it was made.

    Positive scores mean that removing the head *helps* copying: the head
    suppresses the use of context. ``scores`` is the mean of ``per_setting``
    over the proxy task's (batch, n) settings.
    """

    scores: Float[Tensor, "n_layers n_heads"]
    per_setting: Float[Tensor, "n_settings n_layers n_heads"]
    clean_metric: list[float]
    """Clean π of each setting."""
    model: str
    method: str
    metric: str
    difference: str
    task: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    """Method-specific settings (ablation, positions, ...)."""
    fingerprint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    """Timings and diagnostics; never needed to interpret ``scores``."""
    per_prompt: Float[Tensor, "n_prompts n_layers n_heads"] | None = None
    """The patched metric π̃ of every prompt with each head patched (what error bars are computed from)."""
    clean_per_prompt: Float[Tensor, " n_prompts"] | None = None
    """The clean metric π of every prompt."""
    prompt_setting: Tensor | None = None
    """``[n_prompts]`` int: the setting (index into ``per_setting``) each prompt belongs to. A setting's Δπ is
    ``delta(mean π̃, mean π)`` over its prompts and ``scores`` is the mean over settings."""

    def __post_init__(self) -> None:
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32).detach().cpu()
        self.per_setting = torch.as_tensor(self.per_setting, dtype=torch.float32).detach().cpu()
        if self.scores.ndim != 2:
            raise PearLensError(f"scores must be [n_layers, n_heads], got shape {tuple(self.scores.shape)}")
        if self.per_setting.ndim != 3 or self.per_setting.shape[1:] != self.scores.shape:
            raise PearLensError(
                f"per_setting must be [n_settings, {self.scores.shape[0]}, {self.scores.shape[1]}], "
                f"got {tuple(self.per_setting.shape)}"
            )
        if len(self.clean_metric) != self.per_setting.shape[0]:
            raise PearLensError("clean_metric needs one value per setting")
        given = [x is not None for x in (self.per_prompt, self.clean_per_prompt, self.prompt_setting)]
        if any(given) and not all(given):
            raise PearLensError("per_prompt, clean_per_prompt and prompt_setting go together: give all three or none")
        if all(given):
            self.per_prompt = torch.as_tensor(self.per_prompt, dtype=torch.float32).detach().cpu()
            self.clean_per_prompt = torch.as_tensor(self.clean_per_prompt, dtype=torch.float32).detach().cpu()
            self.prompt_setting = torch.as_tensor(self.prompt_setting, dtype=torch.long).detach().cpu()
            n = self.per_prompt.shape[0]
            if self.per_prompt.shape[1:] != self.scores.shape or self.clean_per_prompt.shape != (n,) \
                    or self.prompt_setting.shape != (n,):
                raise PearLensError(
                    f"per_prompt must be [n_prompts, {self.n_layers}, {self.n_heads}] with clean_per_prompt and "
                    f"prompt_setting [n_prompts]; got {tuple(self.per_prompt.shape)}, "
                    f"{tuple(self.clean_per_prompt.shape)}, {tuple(self.prompt_setting.shape)}")
            if n and (int(self.prompt_setting.min()) < 0 or int(self.prompt_setting.max()) >= self.per_setting.shape[0]):
                raise PearLensError("prompt_setting holds a setting index outside per_setting")

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.scores.shape[1])

    def ranks(self) -> torch.Tensor:
        """Rank of each head, 1 = largest Δπ (strongest suppression); ties by
        :data:`pear_lens.uncertainty.TIE_RULE` (the lower layer, then the lower head). Where the scores cannot
        rank heads at all (:meth:`why_unranked`) the table of :meth:`to_dataframe` leaves ``rank`` empty."""
        order = torch.argsort(self.scores.flatten(), descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, order.numel() + 1)
        return ranks.view_as(self.scores)

    def why_unranked(self) -> str:
        """Why these scores cannot rank heads (all equal, or a NaN or infinite score), or ``""`` when they can:
        :func:`pear_lens.uncertainty.why_unranked`."""
        from pear_lens.uncertainty import why_unranked

        return why_unranked(self.scores, "Δπ")

    def why_top_k_undefined(self, k: int) -> str:
        """Why the top ``k`` heads are picked by the tie rule rather than by Δπ, or ``""``:
        :func:`pear_lens.uncertainty.why_top_k_undefined`."""
        from pear_lens.uncertainty import why_top_k_undefined

        return why_top_k_undefined(self.scores, k, "Δπ")

    def _check_not_empty(self, what: str) -> None:
        if self.scores.numel() == 0:
            raise PearLensError(f"this HeadScores is empty ({self.n_layers} × {self.n_heads} heads): there is no "
                                f"head to {what}")

    def top_k(self, k: int, by: str = "score", *, level: float = 0.95, n_boot: int = 2000,
              seed: int = 0) -> list[Head]:
        """The ``k`` heads with the largest Δπ, strongest first (ties: the lower layer, then the lower head).

        ``by="lower_bound"`` ranks by the lower end of each head's bootstrap interval (:meth:`ci` with ``level``,
        ``n_boot`` and ``seed``) instead: a head whose score is large but uncertain ranks below one that is
        reliably positive. PEAR ranks by the score (the default).
        """
        self._check_not_empty("rank")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.scores.numel():
            raise PearLensError(f"k must be a whole number between 1 and {self.scores.numel()}, got {k!r}")
        if by == "score":
            key = self.scores
        elif by == "lower_bound":
            key = self.ci(level=level, n_boot=n_boot, seed=seed)[0].float()
        else:
            raise PearLensError(f"by must be 'score' or 'lower_bound', got {by!r}")
        order = torch.argsort(key.flatten(), descending=True, stable=True)[:k]
        return [(int(i) // self.n_heads, int(i) % self.n_heads) for i in order]

    def settings_columns(self) -> dict[str, Any]:
        cols = {"model": self.model, "method": self.method, "metric": self.metric,
                "difference": self.difference}
        cols.update({k: (v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v))
                     for k, v in self.options.items()})
        return cols

    def to_dataframe(self, ci: bool = False, *, level: float = 0.95, n_boot: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
        """Tidy table: one row per head with layer, head, score, rank and the settings.

        ``rank`` is :meth:`ranks`, left empty (NaN) for every head where the scores cannot rank heads
        (:meth:`why_unranked`: all equal, or NaN or infinite): ranks 1..N drawn from ties would look like a
        finding.

        With ``ci=True`` (which needs the per-prompt values) also ``ci_low``, ``ci_high`` (:meth:`ci`),
        ``p_value`` (:meth:`pvalues`), ``q_value`` (Benjamini–Hochberg over all heads), ``n_boot`` and ``level``.
        """
        ranks = self.ranks()
        layers, heads = torch.meshgrid(torch.arange(self.n_layers), torch.arange(self.n_heads), indexing="ij")
        df = pd.DataFrame({
            "layer": layers.flatten().numpy(),
            "head": heads.flatten().numpy(),
            "score": self.scores.flatten().numpy(),
            "rank": ranks.flatten().numpy(),
        })
        if self.why_unranked():
            df["rank"] = np.nan
        if ci:
            lo, hi = self.ci(level=level, n_boot=n_boot, seed=seed)
            from pear_lens.uncertainty import fdr

            p = self.pvalues().numpy()
            df["ci_low"], df["ci_high"] = lo.flatten().numpy(), hi.flatten().numpy()
            df["p_value"], df["q_value"] = p.ravel(), fdr(p)[1].ravel()
            df["n_boot"], df["level"] = n_boot, level
        for k, v in self.settings_columns().items():
            df[k] = v
        return df

    def per_setting_dataframe(self) -> pd.DataFrame:
        """Long table of the score of every head under every (batch, n) setting."""
        rows = []
        for s, (b, n) in enumerate(self.task.get("settings", [])):
            for layer in range(self.n_layers):
                for head in range(self.n_heads):
                    rows.append({"setting": s, "batch": b, "n": n, "layer": layer, "head": head,
                                 "score": float(self.per_setting[s, layer, head]),
                                 "clean_metric": self.clean_metric[s]})
        return pd.DataFrame(rows)

    def heatmap(self, top_k: int | None = 10, title: str | None = None, mark_significant: bool = False, *,
                level: float = 0.95, n_boot: int = 2000, seed: int = 0):
        """Layers × heads heatmap (plotly ``go.Figure``), diverging at 0, top-k heads marked (none where the top k
        would be picked by the tie rule: :meth:`why_top_k_undefined`). An empty map is refused, saying so.

        With ``mark_significant``, a small black dot marks each head whose bootstrap interval (:meth:`ci` with
        ``level``, ``n_boot``, ``seed``) excludes 0; the legend and subtitle say so.
        """
        from pear_lens.drawing import delta_pi_heatmap  # plotly loads only when a figure is drawn

        self._check_not_empty("draw")
        k = min(top_k, self.scores.numel()) if top_k else 0
        top = self.top_k(k) if k and not self.why_top_k_undefined(k) else None
        if not mark_significant:
            return delta_pi_heatmap(self.scores.numpy(), top, model=self.model, method=self.method,
                                    metric=self.metric, difference=self.difference, title=title,
                                    proxy_task=self.task.get("kind") != "prompts")
        lo, hi = self.ci(level=level, n_boot=n_boot, seed=seed)
        excludes = ((lo > 0) | (hi < 0)).nonzero().tolist()
        return delta_pi_heatmap(self.scores.numpy(), top, model=self.model, method=self.method, metric=self.metric,
                                difference=self.difference, title=title,
                                significant=[(int(l), int(h)) for l, h in excludes], level=level, n_boot=n_boot,
                                proxy_task=self.task.get("kind") != "prompts")

    def caterpillar(self, top: int = 20, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                    alpha: float = 0.05):
        """The ``top`` heads by score, strongest first, each with its bootstrap interval (:meth:`ci`) as an
        error bar, a line at 0, and filled where the head's FDR-adjusted q < ``alpha`` (hollow otherwise);
        a plotly ``go.Figure``."""
        from pear_lens.drawing import caterpillar  # plotly loads only when a figure is drawn

        self._check_not_empty("draw")
        heads = self.top_k(min(top, self.scores.numel()))
        lo, hi = self.ci(level=level, n_boot=n_boot, seed=seed)
        q = self.qvalues()
        layers = [l for l, _ in heads]
        cols = [h for _, h in heads]
        return caterpillar([head_label(h) for h in heads], self.scores[layers, cols].tolist(),
                           lo[layers, cols].tolist(), hi[layers, cols].tolist(),
                           [bool(q[l, h] < alpha) for l, h in heads], level=level, n_boot=n_boot, alpha=alpha,
                           n_tested=self.scores.numel(), model=self.model, method=self.method, metric=self.metric,
                           difference=self.difference)

    # ------------------------------------------------------------------ uncertainty (pear_lens.uncertainty)
    def _prompt_arrays(self) -> tuple[Any, Any, Any]:
        """``(per_prompt, clean_per_prompt, prompt_setting)`` as numpy arrays, refused if absent or partial."""
        if self.per_prompt is None:
            raise PearLensError(
                "this HeadScores has no per-prompt values (made before pear_lens kept them, after version 0.1.0, "
                "or loaded from a discovery run folder's head_scores.csv); rescore it to get intervals and tests: "
                "pear_lens.mediation.rescore(model, scores)")
        covered = set(self.prompt_setting.unique().tolist())
        missing = sorted(set(range(self.per_setting.shape[0])) - covered)
        if missing:
            raise PearLensError(f"settings {missing} of this HeadScores have no per-prompt values, so its scores "
                                "cannot be recomputed from its prompts; rescore it")
        return self.per_prompt.numpy(), self.clean_per_prompt.numpy(), self.prompt_setting.numpy()

    def ci(self, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``(lo, hi)``, float64 ``[n_layers, n_heads]``: each head's stratified, paired percentile bootstrap
        interval at ``level`` from ``n_boot`` resamples of the prompts (:func:`pear_lens.uncertainty.bootstrap_ci`,
        which says what it does with degenerate heads). The last result is kept, keyed by the arguments."""
        from pear_lens.uncertainty import bootstrap_ci

        key = (level, n_boot, seed, id(self.per_prompt), id(self.clean_per_prompt), id(self.prompt_setting))
        cached = self.__dict__.get("_ci_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        lo, hi = bootstrap_ci(*self._prompt_arrays(), self.difference, n_boot=n_boot, level=level, seed=seed)
        result = (torch.from_numpy(lo), torch.from_numpy(hi))
        self.__dict__["_ci_cache"] = (key, result)  # not a dataclass field: equality and metadata ignore it
        return result

    def pvalues(self) -> Tensor:
        """Float64 ``[n_layers, n_heads]``: each head's two-sided p-value for "its effect is 0", a t-test on
        per-prompt effects (:func:`pear_lens.uncertainty.head_pvalues`). NaN for a head whose per-prompt
        effects are all identical (a warning names them): such a head is never a finding."""
        from pear_lens.uncertainty import constant_effects, head_pvalues

        arrays = self._prompt_arrays()
        p = head_pvalues(*arrays, self.difference)
        constant = constant_effects(*arrays[:2]).nonzero()
        if len(constant[0]):
            named = ", ".join(head_label((int(l), int(h))) for l, h in zip(*constant[:2]))
            warnings.warn(f"{len(constant[0])} heads have the same effect on every prompt, so no test applies "
                          f"(p = NaN, never significant): {named}", UserWarning, stacklevel=2)
        return torch.from_numpy(p)

    def qvalues(self) -> Tensor:
        """Benjamini–Hochberg q-values of :meth:`pvalues` over all heads (NaN where p is NaN)."""
        from pear_lens.uncertainty import fdr

        return torch.from_numpy(fdr(self.pvalues().numpy())[1])

    def significant(self, alpha: float = 0.05) -> list[Head]:
        """Heads whose FDR-adjusted q (Benjamini–Hochberg over all heads) is below ``alpha``, by score,
        largest first."""
        from pear_lens.uncertainty import fdr

        reject = fdr(self.pvalues().numpy(), alpha)[0].ravel()
        order = torch.argsort(self.scores.flatten(), descending=True, stable=True)
        return [(int(i) // self.n_heads, int(i) % self.n_heads) for i in order if reject[int(i)]]

    def with_prompt_values(self, rescan: "HeadScores", tolerance: float = 1e-4) -> "HeadScores":
        """These scores with the per-prompt values of ``rescan`` (:func:`pear_lens.rescore` of them), for scores
        that lost theirs (a discovery run's ``head_scores.csv``, a run from before pear_lens kept them).

        The scores, settings' scores, record and fingerprint stay these; the rescan brings only every prompt's
        values, so intervals and tests can resample the prompts. Refused unless the rescan is of the same scan
        (weights, method, metric, difference, task) and reproduces every score within ``tolerance`` times the
        largest |score| (another device or batch shape changes the last digits, nothing more). ``extra["rescored"]``
        records the largest difference, so a reader can see how far the prompts' means sit from the scores.
        """
        import dataclasses

        if rescan.per_prompt is None:
            raise PearLensError("the rescan keeps no per-prompt values either; make it with pear_lens.rescore")
        # a fingerprint digests the weights in the dtype they were loaded in: the same weights rescanned in another
        # dtype (which pear_lens.rescore checked) have another, so the fingerprints are compared within one dtype
        dtypes = (self.extra.get("dtype"), rescan.extra.get("dtype"))
        same_dtype = None in dtypes or dtypes[0] == dtypes[1]
        checks = {"weights": not same_dtype or self.fingerprint == rescan.fingerprint,
                  "model": self.model == rescan.model, "method": self.method == rescan.method,
                  "metric": self.metric == rescan.metric, "difference": self.difference == rescan.difference,
                  "task": all(rescan.task.get(k) == v for k, v in self.task.items()),
                  "head grid": rescan.scores.shape == self.scores.shape}
        if not all(checks.values()):
            what = [name for name, ok in checks.items() if not ok]
            raise PearLensError(f"the rescan is not of these scores (its {', '.join(what)} differ); rescan them with "
                                "pear_lens.rescore")
        if not tolerance >= 0:
            raise PearLensError(f"tolerance must be a fraction ≥ 0 of the largest |score|, got {tolerance}")
        largest = float(self.scores.abs().max())
        gap = float((rescan.scores - self.scores).abs().max())
        if gap > tolerance * largest:
            raise PearLensError(f"the rescan does not reproduce these scores: largest difference {gap:.3g}, more than "
                                f"{tolerance:g} of the largest |score| {largest:.3g}; other weights, code or settings "
                                "made one of them (raise the tolerance only if you know why they differ)")
        record = {"max_abs_difference": gap, "largest_abs_score": largest, "tolerance": tolerance,
                  "dtype": rescan.extra.get("dtype"), "seconds": rescan.extra.get("seconds")}
        return dataclasses.replace(self, per_prompt=rescan.per_prompt, clean_per_prompt=rescan.clean_per_prompt,
                                   prompt_setting=rescan.prompt_setting, extra={**self.extra, "rescored": record})

    def stability(self, others: Sequence["HeadScores"], k: int) -> "Stability":
        """Top-k stability of this map and ``others`` (the same model, method, metric and difference, other
        seeds): :func:`pear_lens.uncertainty.stability`, this map first."""
        from pear_lens.uncertainty import stability

        for other in others:
            if not isinstance(other, HeadScores):
                raise PearLensError(f"stability compares HeadScores, got a {type(other).__name__}")
            for what in ("model", "method", "metric", "difference"):
                if getattr(other, what) != getattr(self, what):
                    raise PearLensError(f"stability compares maps of one {what}; got {getattr(self, what)!r} "
                                        f"and {getattr(other, what)!r}")
            if other.scores.shape != self.scores.shape:
                raise PearLensError(f"stability compares maps of one shape; got {tuple(self.scores.shape)} and "
                                    f"{tuple(other.scores.shape)}")
        return stability([self.scores.numpy(), *(o.scores.numpy() for o in others)], k)

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        return {
            "format_version": constants.FORMAT_VERSION,
            "model": self.model, "fingerprint": self.fingerprint, "method": self.method,
            "metric": self.metric, "difference": self.difference, "options": self.options,
            "task": self.task, "clean_metric": self.clean_metric,
            "per_setting": self.per_setting.tolist(), "extra": self.extra,
        }

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, meta: dict[str, Any]) -> "HeadScores":
        n_layers, n_heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
        scores = torch.zeros(n_layers, n_heads)
        layers = torch.tensor(df["layer"].to_numpy(copy=True), dtype=torch.long)
        heads = torch.tensor(df["head"].to_numpy(copy=True), dtype=torch.long)
        scores[layers, heads] = torch.tensor(df["score"].to_numpy(copy=True), dtype=torch.float32)
        return cls(scores=scores, per_setting=torch.tensor(meta["per_setting"]), clean_metric=meta["clean_metric"],
                   model=meta["model"], method=meta["method"], metric=meta["metric"],
                   difference=meta["difference"], task=meta["task"], options=meta.get("options", {}),
                   fingerprint=meta.get("fingerprint", ""), extra=meta.get("extra", {}))

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write ``scores.json`` (:meth:`metadata`, the tensors' shapes and SHA-256) and ``head_scores.safetensors``
        (scores, per_setting and, where present, the per-prompt values) into ``folder``, read back by :meth:`load`.

        The folder is built in a temporary sibling and moved into place whole. An existing non-empty folder is
        replaced only with ``overwrite`` and only if this method wrote it (its ``scores.json`` says so).
        """
        tensors = {name: getattr(self, name).contiguous() for name in TENSORS if getattr(self, name) is not None}
        return write_scores(folder, tensors, self.metadata(), overwrite=overwrite)

    @classmethod
    def load(cls, run_dir: str | Path) -> "HeadScores":
        """Read head scores: a folder written by :meth:`save` (``scores.json``), or the scores of a
        ``pear-lens discover`` run folder (the files: :func:`pear_lens.runs.read_score_table`)."""
        if (Path(run_dir) / SCORES_JSON).is_file():
            return cls._load_saved(Path(run_dir))
        return cls.load_run(run_dir)[0]

    @classmethod
    def _load_saved(cls, folder: Path) -> "HeadScores":
        tensors, meta = read_scores(folder)
        try:
            return cls(**{k: tensors.get(k) for k in TENSORS}, clean_metric=list(meta["clean_metric"]),
                       model=meta["model"], method=meta["method"], metric=meta["metric"],
                       difference=meta["difference"], task=meta["task"], options=meta.get("options", {}),
                       fingerprint=meta.get("fingerprint", ""), extra=meta.get("extra", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise damaged(folder / SCORES_JSON, f"missing or malformed field {' '.join(str(e).split())}") from None

    @classmethod
    def load_run(cls, run_dir: str | Path) -> tuple["HeadScores", dict[str, Any]]:
        """The scores of a run folder and its whole ``discovery.json`` (settings, model, environment), read once."""
        df, info = read_score_table(run_dir)
        try:
            table = cls.from_dataframe(df, info["scores"])
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt_run(Path(run_dir), e) from None
        saved = Path(run_dir) / constants.RUN_SCORES_DIR
        if not (saved / SCORES_JSON).is_file():
            return table, info  # a run from before the per-prompt values were kept
        full = cls._load_saved(saved)
        if not torch.equal(full.scores, table.scores):
            raise corrupt_run(Path(run_dir), ValueError(f"{constants.HEAD_SCORES_CSV} and {constants.RUN_SCORES_DIR}/ "
                                                        "hold different scores"))
        if full.fingerprint != table.fingerprint:
            raise corrupt_run(Path(run_dir), ValueError(f"{constants.DISCOVERY_JSON} and {constants.RUN_SCORES_DIR}/ "
                                                        "name different weights"))
        return full, info
