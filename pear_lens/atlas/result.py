"""``HeadAtlas``, the head atlas's result: Δπ beside every detector's per-head scores, its statistics and files.

A :class:`HeadAtlas` holds a discovery run's Δπ and, per detector, one score per head and prompt;
the per-prompt scores (and Δπ's, where it keeps them) give each rank correlation a bootstrap interval
that resamples heads and prompts together (:mod:`pear_lens.atlas.correlation`). On disk
it is ``head_atlas.csv`` (one row per head), ``head_atlas.json`` (definitions, sources, options,
prompt sets, timings, statistics) and ``head_atlas_prompts.safetensors`` (the per-prompt scores).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor

from pear_lens import constants, manifest
from pear_lens.agreement import layer_depth, spearman
from pear_lens.atlas import correlation, figures
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_path, atomic_write_json, save_safetensors
from pear_lens.results import HeadScores
from pear_lens.runs import existing
from pear_lens.uncertainty import MIN_BOOT, why_top_k_undefined, why_unranked
from pear_lens.heads import Head

RETRIEVAL_THRESHOLD = 0.1
"""Wu et al. 2024 call a head a retrieval head when its retrieval score exceeds 0.1."""


@dataclass
class HeadAtlas:
    """Δπ of every head beside each detector's score.

    ``per_prompt[name]`` is ``[n_prompts, n_layers, n_heads]``: NaN rows are prompts the detector
    did not use (the retrieval score skips prompts whose answer missed the needle).
    """

    delta_pi: HeadScores
    per_prompt: dict[str, Float[Tensor, "n_prompts n_layers n_heads"]]
    detectors: dict[str, dict[str, Any]]
    """Per detector: short, definition, source, prompts, options, higher_is_role, seconds, diagnostics."""
    prompts: dict[str, Any] = field(default_factory=dict)
    """How each prompt set was built."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Timings (shared forward passes, generation); never needed to read the scores."""

    def __post_init__(self) -> None:
        shape = tuple(self.delta_pi.scores.shape)
        for name, t in self.per_prompt.items():
            t = torch.as_tensor(t, dtype=torch.float32)
            if t.ndim != 3 or tuple(t.shape[1:]) != shape:
                raise PearLensError(f"scores of detector {name!r} must be [n_prompts, {shape[0]}, {shape[1]}], got "
                                    f"{tuple(t.shape)}")
            used = ~torch.isnan(t).all(-1).all(-1)
            if not bool(used.any()):
                raise PearLensError(f"detector {name!r} used no prompt")
            if not bool(torch.isfinite(t[used]).all()):
                raise PearLensError(f"detector {name!r} gave a non-finite score")
            self.per_prompt[name] = t
        missing = set(self.per_prompt) ^ set(self.detectors)
        if missing:
            raise PearLensError(f"detectors without scores or description: {sorted(missing)}")

    # ------------------------------------------------------------------ numbers
    @property
    def model(self) -> str:
        return self.delta_pi.model

    @property
    def names(self) -> list[str]:
        return list(self.per_prompt)

    def used(self, name: str) -> Tensor:
        """The per-prompt scores of the prompts ``name`` used, ``[n_used, n_layers, n_heads]``."""
        t = self.per_prompt[name]
        return t[~torch.isnan(t).all(-1).all(-1)]

    def score(self, name: str) -> Float[Tensor, "n_layers n_heads"]:
        """Detector ``name``'s score of every head: the mean over the prompts it used."""
        return self.used(name).mean(0)

    def role_order(self, name: str, values: Tensor | None = None) -> Tensor:
        """Flat head indices, the detector's role first (largest score, or most negative for copy suppression);
        ties by :data:`pear_lens.uncertainty.TIE_RULE` (the lower layer, then the lower head)."""
        v = (self.score(name) if values is None else values).flatten()
        return torch.argsort(v, descending=self.detectors[name]["higher_is_role"], stable=True)

    def why_unranked(self, name: str) -> str:
        """Why detector ``name``'s scores cannot rank heads (all equal, or non-finite), or ``""``."""
        return why_unranked(self.score(name), f"the {self.detectors[name]['short']} score")

    def why_top_k_undefined(self, name: str, k: int) -> str:
        """Why detector ``name``'s top ``k`` would be picked by the tie rule rather than by its scores, or ``""``."""
        return why_top_k_undefined(self.score(name), k, f"the {self.detectors[name]['short']} score",
                                   descending=self.detectors[name]["higher_is_role"])

    def top_heads(self, name: str, k: int) -> list[Head]:
        n_heads = self.delta_pi.n_heads
        return [(int(i) // n_heads, int(i) % n_heads) for i in self.role_order(name)[:k]]

    def to_dataframe(self) -> pd.DataFrame:
        """One row per head: layer, head, relative depth, Δπ and its rank, then each score and its role rank.

        Ties rank by :data:`pear_lens.uncertainty.TIE_RULE`; a rank column is left empty (NaN) where its
        scores cannot rank heads (all equal, or non-finite: :meth:`why_unranked`)."""
        df = self.delta_pi.to_dataframe()[["layer", "head", "score", "rank"]].rename(
            columns={"score": "delta_pi", "rank": "delta_pi_rank"})
        df.insert(2, "relative_depth", [layer_depth(int(l), self.delta_pi.n_layers) for l in df["layer"]])
        for name in self.names:
            df[name] = self.score(name).flatten().numpy()
            ranks = torch.empty(df.shape[0], dtype=torch.long)
            ranks[self.role_order(name)] = torch.arange(1, df.shape[0] + 1)
            df[f"{name}_rank"] = np.nan if self.why_unranked(name) else ranks.numpy()
        return df

    def statistics(self, top_k: int = 10, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
        """Per detector: Spearman ρ of Δπ with the score over heads, its bootstrap interval, and how many of the
        top-``top_k`` Δπ heads are among the detector's top ``top_k`` (its role end; ``top_k`` is capped at the
        number of heads).

        Each of the ``n_boot`` replicates (at least 1000) draws the heads with replacement and recomputes both
        scores from prompts drawn with replacement: the detector's used prompts, and Δπ's per-prompt values
        within each setting as :func:`pear_lens.uncertainty.bootstrap_ci` resamples them (the two prompt sets
        are drawn independently, and all detectors share the head draws). The interval is the replicates'
        percentile interval at ``level`` (:mod:`pear_lens.atlas.correlation`). Where Δπ keeps no per-prompt
        values (a run from before pear_lens kept them) its scores are held fixed: ``resampled`` says what was
        resampled and ``note`` why. ``interval`` is the printable ρ and interval; where ρ or its interval is
        undefined (a score constant over the heads, fewer than 3 heads) it says "undefined" and why, and
        ``ci_low`` and ``ci_high`` are NaN. ``n_boot`` and ``level`` are columns, so every table states them.
        ``overlap`` is the printable overlap; where either top ``top_k`` would be picked by the tie rule (a score
        constant over the heads, or a tie across the ``top_k``-th place) it says "undefined" and why, and
        ``top_k_overlap`` is NaN and ``overlap_heads`` empty.
        """
        if n_boot < MIN_BOOT:
            raise PearLensError(f"n_boot={n_boot} is too few for the tails of an interval; use n_boot >= {MIN_BOOT}")
        if not 0 < level < 1:
            raise PearLensError(f"level must be between 0 and 1 (e.g. 0.95), got {level}")
        top_k = min(top_k, self.delta_pi.scores.numel())
        delta = self.delta_pi.scores.flatten()
        delta_np = delta.double().numpy()
        top_delta = set(self.delta_pi.top_k(top_k))
        delta_tied = self.delta_pi.why_top_k_undefined(top_k)
        rng = np.random.default_rng(seed)
        delta_reps, why_fixed = correlation.delta_pi_replicates(self.delta_pi, n_boot, rng)
        heads = rng.integers(0, delta_np.size, size=(n_boot, delta_np.size))
        rows = []
        for name in self.names:
            used = self.used(name)
            score = self.score(name).flatten()
            label = self.detectors[name]["short"]
            corr = correlation.rank_correlation(
                spearman(delta, score), delta_np, score.double().numpy(), label=label, delta_reps=delta_reps,
                score_reps=correlation.score_replicates(used.numpy(), n_boot, rng), heads=heads, level=level)
            notes = [why_fixed] if why_fixed else []
            if corr.n_undefined and not corr.undefined:
                notes.append(f"ρ undefined in {corr.n_undefined} of {n_boot} replicates, left out")
            tied = delta_tied or self.why_top_k_undefined(name, top_k)
            overlap = [] if tied else sorted(top_delta & set(self.top_heads(name, top_k)))
            rows.append({"detector": name, "short": label, "n_prompts": int(used.shape[0]),
                         "spearman": corr.rho, "ci_low": corr.low, "ci_high": corr.high, "interval": corr.text,
                         "resampled": corr.resampled.value, "n_boot": n_boot, "level": level,
                         "note": "; ".join(notes), "top_k": top_k,
                         "top_k_overlap": float("nan") if tied else len(overlap),
                         "overlap": (f"top-{top_k} overlap undefined ({tied})" if tied else
                                     f"{len(overlap)} of the top {top_k} Δπ heads in its top {top_k}"),
                         "overlap_heads": " ".join(f"L{l}.H{h}" for l, h in overlap)})
        return pd.DataFrame(rows)

    def roles(self, top_k: int = 10) -> pd.DataFrame:
        """The top-``top_k`` Δπ heads and the roles each holds: in a detector's top ``top_k``, and a
        retrieval head by Wu et al.'s threshold (score > 0.1) where the retrieval score was computed.

        A detector whose top ``top_k`` would be picked by the tie rule (:meth:`why_top_k_undefined`) gives no
        role; where Δπ's own top ``top_k`` is so picked, the table is empty."""
        top_k = min(top_k, self.delta_pi.scores.numel())
        df = self.to_dataframe().set_index(["layer", "head"])
        rows: list[dict[str, Any]] = []
        if self.delta_pi.why_top_k_undefined(top_k):
            return pd.DataFrame(rows)
        decided = {name for name in self.names if not self.why_top_k_undefined(name, top_k)}
        for layer, head in self.delta_pi.top_k(top_k):
            r = df.loc[(layer, head)]
            row = {"head": f"L{layer}.H{head}", "delta_pi": float(r["delta_pi"]),
                   "delta_pi_rank": int(r["delta_pi_rank"])}
            roles = []
            for name in self.names:
                row[name] = float(r[name])
                rank = r[f"{name}_rank"]
                row[f"{name}_rank"] = None if pd.isna(rank) else int(rank)
                if name in decided and int(rank) <= top_k:
                    roles.append(self.detectors[name]["short"])
            if "retrieval" in self.names:
                row["retrieval_head"] = bool(r["retrieval"] > RETRIEVAL_THRESHOLD)
            row["roles"] = ", ".join(roles) or "none"
            rows.append(row)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ figures
    def _columns(self) -> dict[str, str]:
        return {name: self.detectors[name]["short"] for name in self.names}

    def heatmaps(self, top_k: int = 10, title: str | None = None):
        """Δπ and every score as heatmaps side by side, the top-``top_k`` Δπ heads outlined in each."""
        return figures.atlas_heatmaps(self.to_dataframe(), self._columns(), top_k=top_k,
                                      title=title or f"Head atlas of {self.model}",
                                      higher_is_role={n: self.detectors[n]["higher_is_role"] for n in self.names})

    def scatter(self, top_k: int = 10, n_boot: int = 1000, title: str | None = None):
        """Δπ against each score, with Spearman ρ (the interval of :meth:`statistics`) and the top-``top_k``
        overlap."""
        return figures.atlas_scatter(self.to_dataframe(), self._columns(), self.statistics(top_k, n_boot),
                                     top_k=top_k, title=title or f"{self.model}: Δπ against each head score")

    # ------------------------------------------------------------------ persistence
    def metadata(self, top_k: int = 10, n_boot: int = 1000) -> dict[str, Any]:
        return {"format_version": constants.FORMAT_VERSION, "kind": "pear_lens head atlas", "model": self.model,
                "fingerprint": self.delta_pi.fingerprint, "delta_pi": {"method": self.delta_pi.method,
                                                                       "metric": self.delta_pi.metric,
                                                                       "difference": self.delta_pi.difference,
                                                                       "task": self.delta_pi.task},
                "detectors": self.detectors, "prompts": self.prompts, "extra": self.extra,
                "statistics": _records(self.statistics(top_k, n_boot)),
                "roles": self.roles(top_k).to_dict(orient="records")}

    def save(self, folder: str | Path, top_k: int = 10, n_boot: int = 1000) -> list[Path]:
        """Write the three atlas files into ``folder`` (each atomically); returns their paths."""
        folder = Path(folder)
        csv = folder / constants.HEAD_ATLAS_CSV
        with atomic_path(csv) as tmp:
            self.to_dataframe().to_csv(tmp, index=False)
        tensors = folder / constants.HEAD_ATLAS_PROMPTS
        with atomic_path(tensors) as tmp:
            save_safetensors({name: t.contiguous() for name, t in self.per_prompt.items()}, tmp)
        meta = atomic_write_json(folder / constants.HEAD_ATLAS_JSON, self.metadata(top_k, n_boot))
        return [csv, meta, tensors]

    @classmethod
    def load(cls, run_dir: str | Path) -> "HeadAtlas":
        """Read the atlas that ``pear-lens atlas`` wrote into a discovery run folder."""
        run_dir = Path(run_dir)
        meta_path, tensors = existing(run_dir, constants.HEAD_ATLAS_JSON, constants.HEAD_ATLAS_PROMPTS,
                                      fix=f"run `pear-lens atlas {run_dir}` first")
        for name in (constants.HEAD_ATLAS_JSON, constants.HEAD_ATLAS_PROMPTS):  # cut, edited or another run's
            manifest.check(run_dir, name, fix=f"rerun `pear-lens atlas {run_dir} --overwrite`")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            per_prompt = load_file(str(tensors))
            return cls(delta_pi=HeadScores.load(run_dir), per_prompt={k: per_prompt[k] for k in meta["detectors"]},
                       detectors=meta["detectors"], prompts=meta.get("prompts", {}), extra=meta.get("extra", {}))
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise PearLensError(f"{run_dir} holds a corrupt head atlas ({' '.join(str(e).split())}); "
                                f"rerun `pear-lens atlas {run_dir} --overwrite`") from None


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts for JSON: an undefined number is null, never NaN (which JSON lacks)."""
    return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]
