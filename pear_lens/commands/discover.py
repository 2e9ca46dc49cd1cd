"""Stage 1 of the pipeline: score every head and write a discovery run folder.

A run folder holds ``head_scores.csv`` (tidy, one row per head), an interactive
``heatmap.html``, a static ``heatmap.png`` and ``discovery.json`` (settings,
model, weight fingerprint, package versions, per-setting scores). Later stages
(``pear-lens train``, ``apply``, ``ablate``) read and extend the same folder.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from pear_lens import constants
from pear_lens.config import option
from pear_lens.environment import environment
from pear_lens.io import atomic_write_json, staged_dir
from pear_lens.models import DEFAULT_MODEL
from pear_lens.results import HeadScores
from pear_lens.task import REFERENCE_SETTINGS


@dataclass
class DiscoverConfig:
    """Settings of one discovery run (``pear-lens discover``)."""

    out: Path = option(help="run folder to create")
    model: str = option(DEFAULT_MODEL, help="registry name (see `pear-lens models`), local Hugging Face folder or hub id")
    method: str = option("path", help="scoring method", choices=["path", "activation", "attribution"])
    metric: str = option("logit_minus_mean", help="copy metric π", choices=["logit_minus_mean", "prob"])
    difference: str = option("relative", help="Δπ as π̃/π−1 (relative) or π̃−π (absolute)", choices=["relative", "absolute"])
    ablation: str = option("mean", help="what replaces a head's output", choices=["mean", "zero", "resample"])
    positions: str = option("all", help="where activation/attribution patch (path always patches `end`)", choices=["all", "end"])
    settings: tuple[tuple[int, int], ...] = option(REFERENCE_SETTINGS, help="proxy-task BATCHxN settings, averaged")
    vocab: str = option("all", help="token ids to sample", choices=["all", "no_special"])
    prepend_bos: bool = option(False, help="prepend the BOS token to every proxy sequence")
    seed: int = option(0, help="seed of the proxy-task tokens (and of resample ablation)")
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
    from pear_lens.task import ProxyTask

    check_new_run_dir(config.out, config.overwrite)  # fail before the slow part
    task = ProxyTask(settings=config.settings, vocab=config.vocab, prepend_bos=config.prepend_bos, seed=config.seed)
    placement = {"device_map": config.device_map} if config.device_map else {"device": config.device}
    model = load_model(config.model, dtype=config.dtype, **placement)
    opts = {"ablation": config.ablation, "seed": config.seed, "progress": not config.quiet}
    if config.method != "path":
        opts["positions"] = config.positions
    scores = score_heads(model, task, config.metric, config.method, difference=config.difference, **opts)
    cfg = asdict(config)
    cfg["out"] = str(config.out)
    write_run(scores, config.out, config=cfg, overwrite=config.overwrite, top_k=config.top_k,
              png=not config.no_png, model_info=model.describe())
    return scores
