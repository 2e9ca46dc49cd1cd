"""Stage 1 of the pipeline: score every head and write a discovery run folder.

A run folder holds ``head_scores.csv`` (tidy, one row per head), an interactive
``heatmap.html``, a static ``heatmap.png`` and ``discovery.json`` (settings,
model, weight fingerprint, package versions, per-setting scores). Later stages
(``pear-lens train``, ``apply``, ``ablate``) read and extend the same folder.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from enum import Enum
from typing import Any

from pear_lens import constants
from pear_lens.config import option
from pear_lens.environment import environment
from pear_lens.io import atomic_write_json, staged_dir
from pear_lens.mediation import METHODS, method_options
from pear_lens.metrics import Difference, Metric
from pear_lens.models import DEFAULT_MODEL
from pear_lens.results import HeadScores
from pear_lens.task import ProxyTask


def _method_options() -> dict[str, type]:
    return {name: m.options for name, m in METHODS.items()}


@dataclass
class DiscoverConfig:
    """Settings of one discovery run (``pear-lens discover``): the proxy task, the method and its options."""

    out: Path = option(help="run folder to create")
    model: str = option(DEFAULT_MODEL, help="registry name (see `pear-lens models`), local Hugging Face folder or hub id")
    method: str = option("path", help="scoring method, one of the registry pear_lens.mediation.METHODS",
                         choices=lambda: list(METHODS))
    metric: Metric = option(Metric.LOGIT_MINUS_MEAN, help="copy metric π")
    difference: Difference = option(Difference.RELATIVE, help="Δπ as π̃/π−1 (relative) or π̃−π (absolute)")
    task: ProxyTask = option(default_factory=ProxyTask, prefix="",
                             help="the copy proxy task the heads are scored on (--seed also seeds resample ablation)")
    options: Any = option(None, variants=_method_options, selector="method",
                          help="the chosen method's own options (None: its defaults)")
    device: str = option("cpu", help="device of the model (cpu, cuda, cuda:1, ...)")
    dtype: str = option("float32", help="dtype of the weights (bfloat16 halves GPU memory)",
                        choices=["float32", "bfloat16", "float16"])
    device_map: str | None = option(None, help="spread a large model over several GPUs with an accelerate "
                                               "device map (auto, balanced, sequential); replaces --device")
    top_k: int = option(10, help="heads outlined on the heatmap")
    overwrite: bool = option(False, help="replace RUN_DIR if it already exists")
    no_png: bool = option(False, help="skip the static PNG (needs a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bars")


def write_run(scores: HeadScores, out: Path, *, config: dict, overwrite: bool, top_k: int, png: bool,
              model_info: dict) -> Path:
    """Write a complete discovery run folder atomically."""
    from pear_lens.plots import save_figure

    with staged_dir(out, overwrite=overwrite) as stage:
        scores.to_dataframe().to_csv(stage / constants.HEAD_SCORES_CSV, index=False)
        fig = scores.heatmap(top_k=top_k)
        save_figure(fig, stage / constants.HEATMAP_HTML, formats=["html"] + (["png"] if png else []))
        atomic_write_json(stage / constants.DISCOVERY_JSON, {
            "format_version": constants.FORMAT_VERSION,
            "kind": "pear_lens discovery run",
            "config": config,
            "model": model_info,
            "environment": environment(),
            "scores": scores.metadata(),
        })
    return out


def discover(config: DiscoverConfig) -> HeadScores:
    """Load the model, score every head, write the run folder; return the scores."""
    from pear_lens.io import check_new_run_dir
    from pear_lens.mediation import score_heads
    from pear_lens.models import load_model

    check_new_run_dir(config.out, config.overwrite)  # fail before the slow part
    options = method_options(config.method, config.options)  # a wrong option fails before loading the model
    placement = {"device_map": config.device_map} if config.device_map else {"device": config.device}
    model = load_model(config.model, dtype=config.dtype, **placement)
    scores = score_heads(model, config.task, config.metric, config.method, difference=config.difference,
                         seed=config.task.seed, progress=not config.quiet, options=options)
    write_run(scores, config.out, config=config_record(config, options), overwrite=config.overwrite,
              top_k=config.top_k, png=not config.no_png, model_info=model.describe())
    return scores


def config_record(config: DiscoverConfig, options: Any) -> dict[str, Any]:
    """``discovery.json``'s ``config``: one flat mapping of every setting (task and method options inline)."""
    record: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "task":
            record.update({k: v for k, v in value.to_dict().items() if k != "vocab_filter"})
        elif f.name == "options":
            record.update({o.name: _plain(getattr(options, o.name)) for o in dataclasses.fields(options)})
        else:
            record[f.name] = _plain(value)
    return record


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    return str(value) if isinstance(value, Path) else value
