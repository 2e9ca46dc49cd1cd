"""What re-weighting trains and how: the recipe (PEAR's reference settings) and the heads it is given.

:class:`Recipe` holds every training setting (steps, learning rate, batch, proxy task, precision, seed);
:class:`HeadSelection` which heads train (``heads`` given, or the ``top_k`` by Δπ or by the lower end of
their interval); :class:`TrainConfig` is both, as ``pear-lens train`` takes them. :func:`select_heads`,
:func:`training_heads` and :func:`as_recipe` turn what a caller gave into heads and a recipe, or refuse it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from pear_lens.config import check_fields, option
from pear_lens.errors import PearLensError
from pear_lens.heads import Head, check_heads
from pear_lens.proxy_task import VOCAB_HELP, ProxyTask, VocabChoice
from pear_lens.text_formats import Heads

if TYPE_CHECKING:
    from pear_lens.results import HeadScores


DEFAULT_TOP_K = 10
"""Heads trained when neither ``heads`` nor ``top_k`` is given. The reference scripts use
5-40; ``pear-lens ablate`` measures the curve over K that should choose it for a model."""


@dataclass
class HeadSelection:
    """Which heads to train: an explicit list, else the top K of a discovery run's Δπ (:func:`select_heads`)."""

    top_k: int | None = option(None, help=f"train the K heads with the largest Δπ; None: {DEFAULT_TOP_K} unless --heads "
                                          "names the heads (giving both is refused)")
    heads: Heads = option((), help="explicit heads to train, LAYER.HEAD pairs like 24.4,29.0 (instead of --top-k)")
    select_by: Literal["score", "lower_bound"] = option(
        "score", help="rank heads for --top-k by their score (PEAR) or by the lower end of their 95 % bootstrap "
                      "interval (needs a run with per-prompt values: discovered by this version)")

    def __post_init__(self) -> None:
        check_fields(self)  # top_k=2.5 or "3" is refused here, not deep in the training
        self.heads = tuple((int(l), int(h)) for l, h in self.heads)
        if self.heads and self.top_k is not None:
            raise PearLensError("give either heads or top_k (--heads or --top-k), not both: heads names the heads, "
                                "so top_k would be ignored")
        if self.top_k is not None and self.top_k < 1:
            raise PearLensError(f"top_k must be at least 1, got {self.top_k}")
        if self.select_by not in ("score", "lower_bound"):
            raise PearLensError(f"select_by must be 'score' or 'lower_bound', got {self.select_by!r}")

    @property
    def k(self) -> int:
        """The number of top heads trained when no ``heads`` are given (``top_k``, else the default)."""
        return DEFAULT_TOP_K if self.top_k is None else self.top_k

    @property
    def selection(self) -> "HeadSelection":
        """The head selection alone (a :class:`TrainConfig`'s without its recipe)."""
        return HeadSelection(**{f.name: getattr(self, f.name) for f in fields(HeadSelection)})

    def to_dict(self) -> dict[str, Any]:
        # select_by is recorded only when it is not PEAR's, so records written before it existed read the same
        extra = {"select_by": self.select_by} if self.select_by != "score" else {}
        # top_k as it acts (the default when not given), so records read as they did when it defaulted to 10
        return {"top_k": self.k, "heads": [list(h) for h in self.heads], **extra}


@dataclass
class Recipe:
    """How τ is trained for given heads. Defaults are the PEAR reference recipe.

    Training is seeded, so the same weights, heads and recipe give the same τ: :meth:`to_dict` is the key
    under which trained τ are kept and found again (:mod:`pear_lens.training_cache`,
    :func:`pear_lens.training_cache.cached_tau`), and its keys and their order must not change.
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
    min_token_id: int = option(2, help="smallest token id drawn; 2 because the reference training data draws from "
                                       "[2, vocab) (discovery draws from 0, as the reference head search: "
                                       "`pear-lens discover --min-token-id`)")
    vocab: VocabChoice = option("all", help=VOCAB_HELP)
    prepend_bos: bool = option(False, help="prepend BOS to every sequence (the reference does not)")
    seed: int = option(0, help="seed of the training sequences; same seed, same τ")
    precision: str = option("fp32", choices=["fp32", "bf16"],
                                  help="bf16: forward under torch.autocast in bfloat16, as the reference trained "
                                       "on GPU; 2-3x faster on CPUs with AMX (evaluation and folding stay fp32)")

    def __post_init__(self) -> None:
        check_fields(self)  # prepend_bos="false" would act as True, steps=2.5 fail deep in the training
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
        heads = _top_heads(heads, k)
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
    if isinstance(recipe, TrainConfig) and (recipe.heads or recipe.top_k is not None):
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
    return _top_heads(scores, config.k, by=config.select_by)


def _top_heads(scores: "HeadScores", k: int, by: str = "score") -> list[Head]:
    """The top ``k`` heads to train, refused when the scores cannot rank heads (all equal, or not finite): the
    heads would be the tie rule's, not the data's; a tie across the k-th place is said in one warning."""
    import warnings

    reason = scores.why_unranked() if by == "score" else ""
    if reason:
        raise PearLensError(f"the heads cannot be ranked ({reason}), so a top {k} would be picked by the tie rule, "
                            "not the scores; rescore the heads, or name the heads to train (--heads)")
    tied = scores.why_top_k_undefined(k) if by == "score" else ""
    if tied:
        warnings.warn(f"the top {k} is partly the tie rule's: {tied}", stacklevel=3)
    return scores.top_k(k, by=by)
