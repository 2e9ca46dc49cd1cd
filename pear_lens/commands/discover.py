"""``pear-lens discover --out OUT``: score every head on the copy proxy task and write a discovery run folder.

A run folder holds ``head_scores.csv`` (tidy, one row per head), an interactive
``heatmap.html``, a static ``heatmap.png`` and ``discovery.json`` (settings,
model, weight fingerprint, package versions, per-setting scores, and the model's
clean accuracy on the proxy task), written by :func:`pear_lens.runs.write_run`. Later stages
(``pear-lens train``, ``apply``, ``ablate``) read and extend the same folder.

Before scoring, the unmodified model's copy accuracy on the proxy task is
measured: heads ranked on a task the model cannot do (Gemma-3 without BOS copies
about one token in eight) rank noise, so below :data:`MIN_COPY_ACCURACY` the run
stops unless told to go on.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pear_lens.config import option
from pear_lens.copy_check import MIN_COPY_ACCURACY, check_copy_task, clean_copy, copy_task_record
from pear_lens.errors import PearLensError
from pear_lens.mediation import METHODS, method_options
from pear_lens.metrics import Difference, Metric
from pear_lens.models import DEFAULT_MODEL
from pear_lens.proxy_task import ProxyTask
from pear_lens.results import HeadScores
from pear_lens.runs import write_run

if TYPE_CHECKING:
    from pear_lens.models import LoadedModel

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
    allow_weak_copy_task: bool = option(False, help=f"score the heads even when the model copies less than "
                                                    f"{MIN_COPY_ACCURACY:.0%} of the proxy task's tokens")
    top_k: int = option(10, help="heads outlined on the heatmap")
    overwrite: bool = option(False, help="replace RUN_DIR if it already exists")
    no_png: bool = option(False, help="skip the static PNG (needs a Chrome for kaleido)")
    quiet: bool = option(False, help="no progress bars")


def discover(config: DiscoverConfig) -> HeadScores:
    """Load the model, score every head, write the run folder; return the scores."""
    from pear_lens.io import check_output, check_static_export
    from pear_lens.mediation import score_heads
    from pear_lens.models import check_device, load_model

    start = time.perf_counter()
    # everything that can be checked is checked before the slow part
    inputs = (config.model,)  # a local model folder
    check_output(config.out, kind="run", inputs=inputs, overwrite=config.overwrite)
    options = method_options(config.method, config.options)  # an option of another method: one clear line
    if config.device_map and config.device != "cpu":
        raise PearLensError("give either --device (one device) or --device-map (several), not both")
    if not config.device_map:
        check_device(config.device)
    if not config.no_png:
        check_static_export()
    task = config.task
    placement = {"device_map": config.device_map} if config.device_map else {"device": config.device}
    model = load_model(config.model, dtype=config.dtype, **placement)
    t0 = time.perf_counter()
    copy_task = copy_task_record(task, clean_copy(model, task), time.perf_counter() - t0)
    check_copy_task(model.name, copy_task, config.allow_weak_copy_task)  # before the expensive scoring
    scores = score_heads(model, task, config.metric, config.method, difference=config.difference,
                         seed=task.seed, progress=not config.quiet, options=options)
    write_run(config.out, table=scores.to_dataframe(), scores=scores.metadata(),
              heatmap=scores.heatmap(top_k=config.top_k), config=config_record(config, options),
              overwrite=config.overwrite, png=not config.no_png, model_info=model.describe(), copy_task=copy_task,
              seconds=time.perf_counter() - start, inputs=inputs)
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
