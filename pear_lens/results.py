"""Result objects: per-head scores with the settings that produced them (their files: :mod:`pear_lens.runs`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from pear_lens import constants
from pear_lens.errors import PearLensError
from pear_lens.runs import corrupt_run, read_score_table

Head = tuple[int, int]


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
        """Rank of each head, 1 = largest Δπ (strongest suppression)."""
        order = torch.argsort(self.scores.flatten(), descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(1, order.numel() + 1)
        return ranks.view_as(self.scores)

    def top_k(self, k: int) -> list[Head]:
        """The ``k`` heads with the largest Δπ, strongest first."""
        if not 1 <= k <= self.scores.numel():
            raise PearLensError(f"k must be between 1 and {self.scores.numel()}, got {k}")
        order = torch.argsort(self.scores.flatten(), descending=True, stable=True)[:k]
        return [(int(i) // self.n_heads, int(i) % self.n_heads) for i in order]

    def settings_columns(self) -> dict[str, Any]:
        cols = {"model": self.model, "method": self.method, "metric": self.metric,
                "difference": self.difference}
        cols.update({k: (v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v))
                     for k, v in self.options.items()})
        return cols

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy table: one row per head with layer, head, score, rank and the settings."""
        ranks = self.ranks()
        layers, heads = torch.meshgrid(torch.arange(self.n_layers), torch.arange(self.n_heads), indexing="ij")
        df = pd.DataFrame({
            "layer": layers.flatten().numpy(),
            "head": heads.flatten().numpy(),
            "score": self.scores.flatten().numpy(),
            "rank": ranks.flatten().numpy(),
        })
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

    def heatmap(self, top_k: int | None = 10, title: str | None = None):
        """Layers × heads heatmap (plotly ``go.Figure``), diverging at 0, top-k heads marked."""
        from pear_lens.drawing import delta_pi_heatmap  # plotly loads only when a figure is drawn

        top = self.top_k(min(top_k, self.scores.numel())) if top_k else None
        return delta_pi_heatmap(self.scores.numpy(), top, model=self.model, method=self.method, metric=self.metric,
                                difference=self.difference, title=title)

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

    @classmethod
    def load(cls, run_dir: str | Path) -> "HeadScores":
        """Read the scores of a ``pear-lens discover`` run folder (the files: :func:`pear_lens.runs.read_score_table`)."""
        return cls.load_run(run_dir)[0]

    @classmethod
    def load_run(cls, run_dir: str | Path) -> tuple["HeadScores", dict[str, Any]]:
        """The scores of a run folder and its whole ``discovery.json`` (settings, model, environment), read once."""
        df, info = read_score_table(run_dir)
        try:
            return cls.from_dataframe(df, info["scores"]), info
        except (KeyError, TypeError, ValueError) as e:
            raise corrupt_run(Path(run_dir), e) from None
