"""Per-head mediation scores (Δπ) on the copy proxy task or a task of your own.

Every method has the signature ``(model, task, metric, *, difference, seed, progress,
options) -> HeadScores`` and is registered in :data:`METHODS` with the dataclass of
its options (``register(name, short, description, OptionsClass)``);
:func:`score_heads` dispatches by name and checks the options against the chosen
method's dataclass. ``pear-lens discover`` offers every registered method and its
options.

- ``path`` (default): the PEAR reference path patching.
- ``activation``: total effect of replacing a head's output.
- ``attribution``: one-pass linear estimate of ``activation``.
"""
from __future__ import annotations

import inspect
import os
import warnings
from typing import TYPE_CHECKING, Any, Literal, Mapping

from pear_lens.config import variant_options
from pear_lens.copy_accuracy import clean_copy, copy_task_record, weak_copy_message
from pear_lens.errors import CopyTaskTooWeak, PearLensError
from pear_lens.mediation import activation, attribution, path  # noqa: F401  (registers the methods)
from pear_lens.mediation.activation import ActivationOptions
from pear_lens.mediation.attribution import AttributionOptions
from pear_lens.mediation.base import (METHODS, Ablation, Implementation, Method, NoOptions, Positions, record_options,
                                      register)
from pear_lens.mediation.path import PathOptions
from pear_lens.metrics import Difference, Metric, MetricLike, parse_metric
from pear_lens.results import HeadScores
from pear_lens.vocabulary import parse_member

if TYPE_CHECKING:
    from pear_lens.models.loaded import LoadedModel
    from pear_lens.prompt_task import PromptTask
    from pear_lens.proxy_task import ProxyTask

class WeakCopyTask(UserWarning):
    """The model copies too little of the proxy task for its head scores to mean much (``copy_check='warn'``)."""


__all__ = ["WeakCopyTask", "METHODS", "Ablation", "ActivationOptions", "AttributionOptions", "Implementation", "Method", "NoOptions",
           "PathOptions", "Positions", "method_options", "record_options", "register", "rescore", "score_heads"]


def method_options(method: str, options: Any = None, **opts: Any) -> Any:
    """The options dataclass of ``method``, from an instance, a mapping or keywords.

    An option the method does not take is a :class:`PearLensError` that names the methods taking it.
    """
    if method not in METHODS:
        raise PearLensError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    cls = METHODS[method].options
    variants = {name: m.options for name, m in METHODS.items()}
    if options is None or isinstance(options, Mapping):
        given = {**(options or {}), **opts}
        return variant_options(variants, method, given, "method")
    if opts:
        raise PearLensError("pass the method's options either as options=... or as keywords, not both")
    if not isinstance(options, cls):
        raise PearLensError(f"method {method!r} takes {cls.__name__} options, got {type(options).__name__}")
    return options


def score_heads(
    model: Any,
    task: "ProxyTask | PromptTask | None" = None,
    metric: MetricLike = Metric.LOGIT_MINUS_MEAN,
    method: str = "path",
    *,
    difference: Difference | str | None = None,
    seed: int = 0,
    progress: bool = True,
    options: Any = None,
    tokenizer: Any = None,
    copy_check: Literal["warn", "refuse", "off"] = "warn",
    checkpoint: "str | os.PathLike | None" = None,
    **opts: Any,
) -> HeadScores:
    """Score every attention head of ``model`` on ``task`` (default: PEAR's copy proxy task).

    ``model``: a :class:`~pear_lens.models.loaded.LoadedModel`, a registry name or folder, or a model object
    (:func:`~pear_lens.models.loaded.as_loaded`). ``task``: a :class:`~pear_lens.proxy_task.ProxyTask` or
    your own :class:`~pear_lens.prompt_task.PromptTask`. ``metric``: a :class:`~pear_lens.metrics.Metric` (or
    its name) or your own callable ``fn(logits [batch, vocab], batch) -> [batch]``. ``difference``: relative or
    absolute (default: the task's own, relative on the proxy task, absolute on yours). ``options`` (the method's
    options dataclass, e.g. :class:`ActivationOptions`, or a mapping) or keyword options (``positions="end"``)
    set the method's own options; ``seed`` seeds resample ablation. ``tokenizer``: the tokenizer of a Hugging Face
    model object. The result keeps every prompt's values, so :meth:`~pear_lens.results.HeadScores.ci` can put
    error bars on it.

    On the proxy task the unmodified model's copy accuracy is measured first, as ``pear-lens discover`` does
    (:func:`~pear_lens.copy_accuracy.check_copy_task`): heads ranked on a task the model cannot do rank noise.
    ``copy_check``: ``"warn"`` (one warning line), ``"refuse"`` (a :class:`~pear_lens.errors.CopyTaskTooWeak`) or
    ``"off"``. ``checkpoint``: a folder each batch's result is saved into as it is made, so a scan stopped part way
    resumes where it stopped when run again with the same folder (:mod:`pear_lens.mediation.checkpoint`).

    >>> from pear_lens import load_model, ProxyTask
    >>> scores = score_heads(load_model("tiny-llama"), ProxyTask(settings=((4, 8),)), progress=False)
    >>> scores.scores.shape
    torch.Size([3, 4])
    """
    from pear_lens.models.loaded import as_loaded
    from pear_lens.proxy_task import ProxyTask

    chosen = method_options(method, options, **opts)
    task = task if task is not None else ProxyTask()
    if not hasattr(task, "batches"):
        raise PearLensError(f"task must be a ProxyTask or a PromptTask, got {type(task).__name__}; build your "
                            "prompts into pear_lens.PromptTask(prompts, answers, ...)")
    difference = task.default_difference if difference is None else difference
    if copy_check not in ("warn", "refuse", "off"):
        raise PearLensError(f"copy_check must be 'warn', 'refuse' or 'off', got {copy_check!r}")
    model = as_loaded(model, tokenizer=tokenizer)
    if isinstance(task, ProxyTask) and copy_check != "off":
        record = copy_task_record(task, clean_copy(model, task), 0.0)
        message = weak_copy_message(model.name, record, python=True)
        if message and copy_check == "refuse":
            raise CopyTaskTooWeak(message)
        if message:
            warnings.warn(message, WeakCopyTask, stacklevel=2)
    fn = METHODS[method].fn
    resumable = {} if checkpoint is None else {"checkpoint": checkpoint}
    if resumable and "checkpoint" not in inspect.signature(fn).parameters:
        raise PearLensError(f"method {method!r} cannot save a checkpoint (it was registered without the "
                            "@scoring_method decorator that saves each batch); run it without checkpoint=")
    return fn(
        model, task, parse_metric(metric),
        difference=parse_member(Difference, difference, "difference"),
        seed=seed, progress=progress, options=chosen, **resumable,
    )


def rescore(model: Any, scores: HeadScores, *, dtype: str | None = None, progress: bool = True,
            tokenizer: Any = None, checkpoint: "str | os.PathLike | None" = None) -> HeadScores:
    """The scan that made ``scores`` run again on ``model``: same task (rebuilt from its record), method, metric,
    difference, options and seed. The result keeps every prompt's values, which scores loaded from a discovery
    run's ``head_scores.csv``, or made before pear_lens kept them, lack (so intervals and tests need this).

    Refused in one line when ``model`` is not the weights the scores were made on: their fingerprint is compared
    with the model's taken in ``dtype``, the dtype the scores' model was loaded in (default: ``extra["dtype"]``,
    else the model's own; a discovery run records it, :func:`pear_lens.runs.recorded_dtype`), so the same weights
    in another dtype are not taken for others. Scores without a fingerprint cannot be checked and are refused too.
    Also refused: a task that cannot be rebuilt (a custom ``vocab_filter``), a custom metric (pass the callable to
    :func:`score_heads` again) and an unregistered method. The new scores are those of this device and dtype: they
    differ from ``scores`` by float rounding, which the caller can measure (``(new.scores -
    scores.scores).abs().max()``).
    """
    import dataclasses

    from pear_lens.models.loaded import as_loaded
    from pear_lens.prompt_task import PromptTask
    from pear_lens.proxy_task import ProxyTask

    if not scores.fingerprint:
        raise PearLensError("these scores name no weights (no fingerprint), so a rescan could not be checked "
                            "against them; score the heads afresh with score_heads")
    if scores.method not in METHODS:
        raise PearLensError(f"these scores were made by method {scores.method!r}, which is not registered here; "
                            f"register it, or rescore with one of: {', '.join(METHODS)}")
    if scores.metric.startswith("custom:"):
        raise PearLensError(f"these scores were made with your own metric ({scores.metric}), which a record cannot "
                            "restore; call score_heads with it again")
    record = dict(scores.task)
    if record.get("kind", "proxy") not in ("prompts", "proxy"):
        raise PearLensError(f"these scores' task is of kind {record.get('kind')!r}, which rescore cannot rebuild; "
                            "score the heads afresh with score_heads")
    loaded = as_loaded(model, tokenizer=tokenizer)
    recorded = dtype or scores.extra.get("dtype")
    now = loaded.fingerprint_as(recorded)
    if now != scores.fingerprint:
        raise PearLensError(f"these scores were made on other weights ({scores.fingerprint}) than {loaded.name}'s "
                            f"({now}, in {recorded or loaded.dtype}); rescore them with "
                            "the model they were made on, or name the dtype they were made in (dtype=)")
    task = PromptTask.from_dict(record) if record.get("kind") == "prompts" else ProxyTask.from_dict(record)
    # the record holds the options the method takes and what it fixes itself (path: positions=end; the seed)
    taken = {f.name for f in dataclasses.fields(METHODS[scores.method].options)}
    options = {k: v for k, v in scores.options.items() if k in taken}
    seed = int(scores.options.get("seed", 0))
    new = score_heads(loaded, task, scores.metric, scores.method, difference=scores.difference, seed=seed,
                      progress=progress, options=options, copy_check="off", checkpoint=checkpoint)
    if new.options != {"seed": seed, **scores.options}:  # records from before the seed was kept lack it
        raise PearLensError(f"the rescan recorded options {new.options}, not the scores' {scores.options}: "
                            f"method {scores.method!r} has changed since; score the heads afresh")
    return new
