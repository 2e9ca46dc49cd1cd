"""Stage 2 of PEAR: learn one scalar τ per chosen head with the model frozen (the PEAR reference recipe).

τ multiplies a head's output (its ``hook_z`` slice) before the heads are summed,
and starts at 1.0, so training starts from the unmodified model. Only the K
scalars train, on the cross-entropy of the copy half of fresh proxy sequences.
With the model frozen, autograd keeps no graph below the lowest chosen layer,
and logits are computed only where the loss reads them (the copy half).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from pear_lens import hooks
from pear_lens.copy_accuracy import CopyEval, copy_inputs
from pear_lens.errors import PearLensError
from pear_lens.heads import Head, check_heads
from pear_lens.proxy_task import TaskBatch, sample_batch
from pear_lens.recipe import Recipe, as_recipe, training_heads

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from pear_lens.models.loaded import LoadedModel, ModelLike
    from pear_lens.results import HeadScores


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
def reweighted(model: "ModelLike", heads: Sequence[Head], tau: Tensor | Sequence[float]) -> Iterator[Any]:
    """Run ``model.bridge`` with head ``heads[i]`` scaled by ``tau[i]`` (hooked, not folded).

    ``model`` is any form :func:`~pear_lens.models.loaded.as_loaded` accepts (a name or a folder is loaded
    anew on each call: load it once with :func:`~pear_lens.models.loaded.load_model` to reuse it).

    >>> from pear_lens import load_model
    >>> m = load_model("tiny-llama")
    >>> with reweighted(m, [(1, 2)], [0.5]) as bridge:
    ...     logits = bridge(torch.tensor([[5, 6, 7]]))
    """
    from pear_lens.models.loaded import as_loaded

    model = as_loaded(model)
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
    # under a device map the logits come off the last device, the tokens went to the embedding's
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().to(logits.device))


@torch.no_grad()
def evaluate_copy(model: "LoadedModel", batches: Sequence[TaskBatch], heads: Sequence[Head] = (),
                  tau: Tensor | Sequence[float] | None = None) -> CopyEval:
    """Copy accuracy and loss of the bridge on ``batches`` with τ applied (no heads: the original model)."""
    tau_t = None if tau is None else torch.as_tensor(tau, dtype=torch.float32)
    return CopyEval.of(copy_logits(model, b, list(heads), tau_t) for b in batches)


@torch.no_grad()
def evaluate_copy_hf(hf_model: Any, batches: Sequence[TaskBatch]) -> CopyEval:
    """The same for a plain Hugging Face model (an original or a folded one)."""
    from pear_lens.models.loaded import input_device

    device = input_device(hf_model)

    def outputs():
        for batch in batches:
            tokens, targets, keep = copy_inputs(batch)
            yield hf_model(tokens.to(device), logits_to_keep=keep).logits, targets
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
        """Loss and τ of every head against the step, with the step limit (the summed learning rates) drawn
        (plotly ``go.Figure``)."""
        from pear_lens.drawing import training_curves  # plotly loads only when a figure is drawn

        return training_curves(self.loss_curve, self.tau_trajectory.tolist(), self.heads, self.model,
                               step_limit=float(sum(self.lr_curve)) if len(self.lr_curve) else None)


def train_coefficients(model: "ModelLike", heads: "Sequence[Any] | str | HeadScores",
                       recipe: Recipe | None = None,
                       progress: bool = True, *, k: int | None = None) -> TrainResult:
    """Learn one τ per head of ``heads`` on the copy proxy task with ``recipe``, the model frozen.

    ``heads``: ``(layer, head)`` pairs, head names (``"24.4"``, ``"L24.H4"``), or a
    :class:`~pear_lens.results.HeadScores` with ``k``, the number of its top heads to train. A
    :class:`~pear_lens.recipe.TrainConfig` may stand for the recipe only while it selects no heads (``heads`` are the heads
    trained); its selection is not recorded in :attr:`TrainResult.config`.

    >>> from pear_lens import load_model
    >>> m = load_model("tiny-llama")
    >>> r = train_coefficients(m, [(2, 1)], Recipe(steps=2, batch_size=2, micro_batch=2, n=8), progress=False)
    >>> r.tau_trajectory.shape
    torch.Size([3, 1])
    """
    from pear_lens.models.loaded import as_loaded, input_device

    model = as_loaded(model)  # a LoadedModel, a name, a Hugging Face model with its tokenizer, or a bridge
    config = as_recipe(recipe)
    heads = training_heads(heads, k, model.n_layers, model.n_heads)
    task = config.task()
    task.check_fits(model)
    ids = task.candidate_ids(model)
    bos = model.tokenizer.bos_token_id if config.prepend_bos else None
    gen = torch.Generator().manual_seed(config.seed)
    device = input_device(model)  # the embedding's: with a device map the blocks sit on several devices

    # identity start: τ = 1 leaves every head's output unchanged, so step 0 is the original model
    tau = torch.nn.Parameter(torch.ones(len(heads)))
    opt = torch.optim.AdamW([tau], lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup(config.warmup_steps, config.schedule_steps))
    def autocast() -> torch.autocast:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

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
