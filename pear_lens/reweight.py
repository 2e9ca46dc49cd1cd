"""Stage 2 of PEAR: learn one scalar τ per chosen head with the model frozen (the PEAR reference recipe).

τ multiplies a head's output (its ``hook_z`` slice) before the heads are summed,
and starts at 1.0, so training starts from the unmodified model. Only the K
scalars train, on the cross-entropy of the copy half of fresh proxy sequences.
With the model frozen, autograd keeps no graph below the lowest chosen layer,
and logits are computed only where the loss reads them (the copy half).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from pear_lens import hooks
from pear_lens.config import Heads, option
from pear_lens.copy_accuracy import CopyEval, copy_inputs
from pear_lens.errors import PearLensError
from pear_lens.heads import Head, check_heads
from pear_lens.proxy_task import ProxyTask, TaskBatch, sample_batch

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from pear_lens.models.loaded import LoadedModel, ModelLike
    from pear_lens.results import HeadScores


DEFAULT_TOP_K = 10
"""Heads trained when neither ``heads`` nor ``top_k`` is given. The reference scripts use
5-40; ``pear-lens ablate`` measures the curve over K that should choose it for a model."""


@dataclass
class HeadSelection:
    """Which heads to train: an explicit list, else the top K of a discovery run's Δπ (:func:`select_heads`)."""

    top_k: int = option(DEFAULT_TOP_K, help="train the K heads with the largest Δπ (ignored when --heads is given)")
    heads: Heads = option((), help="explicit heads to train, LAYER.HEAD pairs like 24.4,29.0 (overrides --top-k)")
    select_by: Literal["score", "lower_bound"] = option(
        "score", help="rank heads for --top-k by their score (PEAR) or by the lower end of their 95 % bootstrap "
                      "interval (needs a run with per-prompt values: discovered by this version)")

    def __post_init__(self) -> None:
        self.heads = tuple((int(l), int(h)) for l, h in self.heads)
        if self.top_k < 1:
            raise PearLensError(f"top_k must be at least 1, got {self.top_k}")
        if self.select_by not in ("score", "lower_bound"):
            raise PearLensError(f"select_by must be 'score' or 'lower_bound', got {self.select_by!r}")

    @property
    def selection(self) -> "HeadSelection":
        """The head selection alone (a :class:`TrainConfig`'s without its recipe)."""
        return HeadSelection(**{f.name: getattr(self, f.name) for f in fields(HeadSelection)})

    def to_dict(self) -> dict[str, Any]:
        # select_by is recorded only when it is not PEAR's, so records written before it existed read the same
        extra = {"select_by": self.select_by} if self.select_by != "score" else {}
        return {"top_k": self.top_k, "heads": [list(h) for h in self.heads], **extra}


@dataclass
class Recipe:
    """How τ is trained for given heads. Defaults are the PEAR reference recipe.

    Training is seeded, so the same weights, heads and recipe give the same τ: :meth:`to_dict` is the key
    under which trained τ are kept and found again (:mod:`pear_lens.training_cache`,
    :func:`pear_lens.evaluation.protocol.cached_tau`), and its keys and their order must not change.
    """

    steps: int = option(60, help="optimizer steps (the reference evaluated the checkpoint after 60)")
    lr: float = option(0.005, help="AdamW learning rate")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    warmup_steps: int = option(2, help="linear warm-up steps (as in Hugging Face's schedule, step 0 has lr 0)")
    schedule_steps: int = option(2500, help="steps the linear decay is planned over (the reference planned one "
                                            "epoch of 50,000 samples / batch 20 = 2,500 steps and stopped at 60)")
    batch_size: int = option(20, help="effective batch (sequences per optimizer step)")
    micro_batch: int = option(10, help="sequences per forward/backward; gradients accumulate up to --batch-size")
    n: int = option(50, help="half-length of a proxy sequence (the copy half has n tokens)")
    min_token_id: int = option(2, help="smallest token id sampled (the reference draws from [2, vocab))")
    vocab: str = option("all", help="token ids to sample", choices=["all", "no_special"])
    prepend_bos: bool = option(False, help="prepend BOS to every sequence (the reference does not)")
    seed: int = option(0, help="seed of the training sequences; same seed, same τ")
    precision: str = option("fp32", choices=["fp32", "bf16"],
                                  help="bf16: forward under torch.autocast in bfloat16, as the reference trained "
                                       "on GPU; 2-3x faster on CPUs with AMX (evaluation and folding stay fp32)")

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise PearLensError(f"unknown precision {self.precision!r}; choose 'fp32' or 'bf16'")
        for name in ("steps", "batch_size", "micro_batch", "schedule_steps"):
            if getattr(self, name) < 1:
                raise PearLensError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay"):  # NaN passes every comparison, so finiteness is checked first
            if not math.isfinite(getattr(self, name)):
                example = 0.005 if name == "lr" else 0.0
                raise PearLensError(f"{name} must be a finite number, got {getattr(self, name)}; give e.g. "
                                    f"{name}={example} (--{name.replace('_', '-')} {example})")
        if self.warmup_steps < 0 or self.lr <= 0:
            raise PearLensError("warmup_steps must be >= 0 and lr > 0")
        if self.n < 2:
            raise PearLensError(f"n={self.n} is too short: the copy task needs n >= 2")

    @staticmethod
    def from_dict(settings: Mapping[str, Any]) -> "Recipe":
        """The recipe among ``settings`` (e.g. pear.json's ``training``, which also holds the head selection and
        the training's outcome); the other keys are ignored, a missing one keeps its default."""
        return Recipe(**{f.name: settings[f.name] for f in fields(Recipe) if f.name in settings})

    @property
    def recipe(self) -> "Recipe":
        """The recipe alone (a :class:`TrainConfig`'s without its head selection)."""
        return Recipe(**Recipe.to_dict(self))

    def task(self) -> ProxyTask:
        """The proxy task the training sequences are drawn from."""
        return ProxyTask(settings=((self.batch_size, self.n),), vocab=self.vocab,
                         min_token_id=self.min_token_id, prepend_bos=self.prepend_bos, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Every setting of the recipe, in field order (the key of kept τ: keys and order must stay)."""
        return {f.name: getattr(self, f.name) for f in fields(Recipe)}


@dataclass
class TrainConfig(Recipe, HeadSelection):
    """Settings of coefficient learning: the heads (:class:`HeadSelection`) and how to train them
    (:class:`Recipe`). Defaults are the PEAR reference recipe.

    The fields are ``top_k`` and ``heads``, then the recipe's (a dataclass orders inherited fields from the
    last base to the first), which is the order of the command line and of pear.json's ``training``.
    """

    def __post_init__(self) -> None:
        HeadSelection.__post_init__(self)
        Recipe.__post_init__(self)

    def to_dict(self) -> dict[str, Any]:
        """The head selection then the recipe (pear.json's ``training`` starts with it)."""
        return {**HeadSelection.to_dict(self), **Recipe.to_dict(self)}


# --------------------------------------------------------------------------- heads


def training_heads(heads: "Sequence[Any] | str | HeadScores", k: int | None,
                   n_layers: int, n_heads: int) -> list[Head]:
    """The heads :func:`train_coefficients` trains: ``heads`` as pairs or names, or the top ``k`` of a
    :class:`~pear_lens.results.HeadScores`; checked against the model's shape."""
    from pear_lens.results import HeadScores

    if isinstance(heads, HeadScores):
        if k is None:
            raise PearLensError("heads= is a HeadScores: give k= too, the number of its top heads to train "
                                "(e.g. train_coefficients(model, scores, recipe, k=10))")
        if (heads.n_layers, heads.n_heads) != (n_layers, n_heads):
            raise PearLensError(f"heads= is a HeadScores of a {heads.n_layers} layers × {heads.n_heads} heads model "
                                f"({heads.model}), this model has {n_layers} × {n_heads}: score this model's heads")
        heads = heads.top_k(k)
    elif k is not None:
        raise PearLensError("k= picks the top heads of a HeadScores; with heads= listing the heads, leave k out")
    return check_heads(heads, n_layers, n_heads)


def as_recipe(recipe: Recipe | None) -> Recipe:
    """The recipe alone; a :class:`TrainConfig` that selects heads is refused, for only ``heads=`` says which
    heads train (its selection would be silently ignored)."""
    if recipe is None:
        return Recipe()
    if not isinstance(recipe, Recipe):
        raise PearLensError(f"recipe= must be a pear_lens Recipe (or None for the reference recipe), got "
                            f"{type(recipe).__name__}")
    if isinstance(recipe, TrainConfig) and (recipe.heads or recipe.top_k != DEFAULT_TOP_K):
        raise PearLensError("recipe= is a TrainConfig that selects heads (heads= or top_k=), which "
                            "train_coefficients would ignore: pass config.recipe (or a Recipe) and give the heads as "
                            "heads= (e.g. select_heads(scores, config))")
    return recipe.recipe


def select_heads(scores: "HeadScores", config: HeadSelection) -> list[Head]:
    """``config.heads`` if given, else the ``config.top_k`` heads with the largest Δπ (or, with
    ``select_by="lower_bound"``, the largest lower end of their bootstrap interval)."""
    if config.heads:
        return check_heads(config.heads, scores.n_layers, scores.n_heads)
    if config.select_by == "lower_bound" and scores.per_prompt is None:
        raise PearLensError("select_by='lower_bound' (--select-by lower_bound) needs the per-prompt values that "
                            "discovery keeps since this version; rerun `pear-lens discover` (or score_heads)")
    return scores.top_k(config.top_k, by=config.select_by)


# --------------------------------------------------------------------------- the re-weighted forward


def scaling_hooks(heads: Sequence[Head], tau: Float[Tensor, " k"], n_heads: int) -> list[tuple[str, Any]]:
    """``hook_z`` hooks multiplying head ``heads[i]``'s output by ``tau[i]`` (differentiable in τ)."""
    by_layer: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for i, (layer, head) in enumerate(heads):
        by_layer[layer].append((i, head))

    def scale(entries: list[tuple[int, int]]):
        idx = torch.tensor([i for i, _ in entries])
        cols = torch.tensor([h for _, h in entries])

        def hook_fn(z: Tensor, hook) -> Tensor:  # z: [batch, pos, head, d_head]
            factors = torch.ones(n_heads, dtype=z.dtype, device=z.device)
            factors = factors.index_put((cols.to(z.device),), tau[idx].to(z.device, z.dtype))
            return z * factors[:, None]
        return hook_fn

    return [(hooks.z(layer), scale(entries)) for layer, entries in sorted(by_layer.items())]


@contextlib.contextmanager
def reweighted(model: "LoadedModel", heads: Sequence[Head], tau: Tensor | Sequence[float]) -> Iterator[Any]:
    """Run ``model.bridge`` with head ``heads[i]`` scaled by ``tau[i]`` (hooked, not folded).

    >>> from pear_lens import load_model
    >>> m = load_model("tiny-llama")
    >>> with reweighted(m, [(1, 2)], [0.5]) as bridge:
    ...     logits = bridge(torch.tensor([[5, 6, 7]]))
    """
    heads = check_heads(heads, model.n_layers, model.n_heads)
    tau = torch.as_tensor(tau, dtype=torch.float32).detach()
    if tau.shape != (len(heads),):
        raise PearLensError(f"need one τ per head: {len(heads)} heads, τ of shape {tuple(tau.shape)}")
    with model.bridge.hooks(fwd_hooks=scaling_hooks(heads, tau, model.n_heads)):
        yield model.bridge


def copy_logits(
    model: "LoadedModel", batch: TaskBatch, heads: Sequence[Head], tau: Tensor | None,
) -> tuple[Float[Tensor, "batch n vocab"], Int[Tensor, "batch n"]]:
    """Logits at the copy-half positions (``batch.copy_slice``) and their targets, with τ applied.

    Only the copy half goes through the unembedding, and the last token (only
    ever a target) is dropped. The model's parameters are frozen for the pass,
    so autograd records nothing before the first τ scales a head's output: no
    gradients and no stored activations below the lowest chosen layer. It adds
    its own τ hooks: call it outside :func:`reweighted`, or τ is applied twice.
    """
    tokens, targets, keep = copy_inputs(batch)
    fwd = scaling_hooks(heads, tau, model.n_heads) if heads else []
    # Running the blocks below under no_grad and restarting there (mediation._forward.run_from)
    # saves nothing more and measured ~7% slower on SmolLM2: one more bridge call per pass.
    with frozen(model.bridge):
        return model.bridge.run_with_hooks(tokens, fwd_hooks=fwd, logits_to_keep=keep), targets


def copy_loss(model: "LoadedModel", batch: TaskBatch, heads: Sequence[Head], tau: Tensor | None) -> Tensor:
    """Mean cross-entropy of the copy-half targets (the training loss)."""
    logits, targets = copy_logits(model, batch, heads, tau)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@torch.no_grad()
def evaluate_copy(model: "LoadedModel", batches: Sequence[TaskBatch], heads: Sequence[Head] = (),
                  tau: Tensor | Sequence[float] | None = None) -> CopyEval:
    """Copy accuracy and loss of the bridge on ``batches`` with τ applied (no heads: the original model)."""
    tau_t = None if tau is None else torch.as_tensor(tau, dtype=torch.float32)
    return CopyEval.of(copy_logits(model, b, list(heads), tau_t) for b in batches)


@torch.no_grad()
def evaluate_copy_hf(hf_model: Any, batches: Sequence[TaskBatch]) -> CopyEval:
    """The same for a plain Hugging Face model (an original or a folded one)."""
    def outputs():
        for batch in batches:
            tokens, targets, keep = copy_inputs(batch)
            yield hf_model(tokens.to(hf_model.device), logits_to_keep=keep).logits, targets.to(hf_model.device)
    return CopyEval.of(outputs())


# --------------------------------------------------------------------------- training


def linear_warmup(warmup: int, total: int):
    """The learning-rate factor of Hugging Face's ``get_linear_schedule_with_warmup``."""
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def step_limit(config: Recipe) -> float:
    """How far one τ can move from 1 in ``config.steps`` Adam steps: the sum of the scheduled learning rates.

    Adam's update of a scalar is at most about ``lr`` per step (exactly ``lr`` while every gradient has one
    sign), so a τ near ``1 ± step_limit`` was held by the budget, not by the loss: its magnitude says how long
    it trained, not what the copy loss wants. With the reference recipe (60 steps, lr 0.005, warm-up 2 over
    2500) the limit is 0.29.

    >>> round(step_limit(Recipe()), 4)
    0.2886
    """
    factor = linear_warmup(config.warmup_steps, config.schedule_steps)
    return float(config.lr * sum(factor(s) for s in range(config.steps)))


AT_LIMIT_SHARE = 0.9
"""A τ with ``|τ - 1| >= AT_LIMIT_SHARE * step_limit`` sits at the step limit (:func:`at_step_limit`)."""


def at_step_limit(tau: "Sequence[float] | torch.Tensor", config: Recipe) -> list[bool]:
    """Per τ: whether it moved at least :data:`AT_LIMIT_SHARE` of the way to :func:`step_limit` (it still
    moved at about full speed when training stopped, so the loss did not choose its value).

    >>> at_step_limit([0.716, 1.034, 1.0], Recipe())
    [True, False, False]
    """
    bound = step_limit(config)
    return [abs(float(t) - 1.0) >= AT_LIMIT_SHARE * bound for t in tau]


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Switch off gradients of every parameter, restoring the flags afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class TrainResult:
    """Learned coefficients and how they got there."""

    heads: list[Head]
    tau: Float[Tensor, " k"]
    loss_curve: list[float]
    """Training loss of the batch drawn at each step, measured before that step's update."""
    lr_curve: list[float]
    tau_trajectory: Float[Tensor, "steps_plus_1 k"]
    """τ before the first step (all 1.0) and after every step."""
    config: dict[str, Any]
    """The recipe that trained τ (:meth:`Recipe.to_dict`)."""
    model: str
    fingerprint: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heads = [(int(l), int(h)) for l, h in self.heads]
        k, steps = len(self.heads), len(self.loss_curve)
        if self.tau.shape != (k,) or self.tau_trajectory.shape != (steps + 1, k):
            raise PearLensError(
                f"inconsistent TrainResult: {k} heads, {steps} steps, τ {tuple(self.tau.shape)}, "
                f"trajectory {tuple(self.tau_trajectory.shape)}"
            )

    def coefficients(self) -> dict[Head, float]:
        return {h: float(t) for h, t in zip(self.heads, self.tau)}

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy log: one row per (step, head) with τ at that step, the loss and lr of that step.

        Step ``s`` holds τ before update ``s``; the last step holds the final τ
        and has no loss (NaN).
        """
        steps = len(self.loss_curve)
        rows = []
        for s in range(steps + 1):
            loss = self.loss_curve[s] if s < steps else float("nan")
            lr = self.lr_curve[s] if s < steps else float("nan")
            for i, (layer, head) in enumerate(self.heads):
                rows.append({"step": s, "layer": layer, "head": head,
                             "tau": float(self.tau_trajectory[s, i]), "loss": loss, "lr": lr})
        return pd.DataFrame(rows)

    def figure(self) -> "go.Figure":
        """Loss and τ of every head against the step (plotly ``go.Figure``)."""
        from pear_lens.drawing import training_curves  # plotly loads only when a figure is drawn

        return training_curves(self.loss_curve, self.tau_trajectory.tolist(), self.heads, self.model)


def train_coefficients(model: "ModelLike", heads: "Sequence[Any] | str | HeadScores",
                       recipe: Recipe | None = None,
                       progress: bool = True, *, k: int | None = None) -> TrainResult:
    """Learn one τ per head of ``heads`` on the copy proxy task with ``recipe``, the model frozen.

    ``heads``: ``(layer, head)`` pairs, head names (``"24.4"``, ``"L24.H4"``), or a
    :class:`~pear_lens.results.HeadScores` with ``k``, the number of its top heads to train. A
    :class:`TrainConfig` may stand for the recipe only while it selects no heads (``heads`` are the heads
    trained); its selection is not recorded in :attr:`TrainResult.config`.

    >>> from pear_lens import load_model
    >>> m = load_model("tiny-llama")
    >>> r = train_coefficients(m, [(2, 1)], Recipe(steps=2, batch_size=2, micro_batch=2, n=8), progress=False)
    >>> r.tau_trajectory.shape
    torch.Size([3, 1])
    """
    from pear_lens.models.loaded import as_loaded

    model = as_loaded(model)  # a LoadedModel, a name, a Hugging Face model with its tokenizer, or a bridge
    config = as_recipe(recipe)
    heads = training_heads(heads, k, model.n_layers, model.n_heads)
    task = config.task()
    task.check_fits(model)
    ids = task.candidate_ids(model)
    bos = model.tokenizer.bos_token_id if config.prepend_bos else None
    gen = torch.Generator().manual_seed(config.seed)
    device = model.cfg.device

    # identity start: τ = 1 leaves every head's output unchanged, so step 0 is the original model
    tau = torch.nn.Parameter(torch.ones(len(heads)))
    opt = torch.optim.AdamW([tau], lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(config.warmup_steps, config.schedule_steps))
    def autocast() -> torch.autocast:
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    losses, lrs, trajectory = [], [], [tau.detach().clone()]
    t0 = time.perf_counter()
    bar = tqdm(range(config.steps), desc=f"training τ ({len(heads)} heads)", unit="step",
               disable=not progress, leave=False)
    with frozen(model.bridge):
        for _ in bar:
            batch = sample_batch(ids, config.batch_size, config.n, gen, bos)
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for rows in torch.split(batch.tokens, config.micro_batch):
                micro = TaskBatch(rows.to(device), batch.n, batch.offset)
                with autocast():
                    loss = copy_loss(model, micro, heads, tau)
                # weight each micro-batch by its share so the gradient is that of the whole batch's mean
                loss = loss * (len(rows) / config.batch_size)
                loss.backward()
                step_loss += float(loss.detach())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            losses.append(step_loss)
            trajectory.append(tau.detach().clone())
            bar.set_postfix(loss=f"{step_loss:.4f}")
    return TrainResult(
        heads=heads, tau=tau.detach().clone(), loss_curve=losses, lr_curve=lrs,
        tau_trajectory=torch.stack(trajectory), config=config.to_dict(), model=model.name,
        fingerprint=model.fingerprint, seconds=time.perf_counter() - t0,
    )
