"""The re-weighting artifact: which heads to scale, by how much, and for which weights.

An artifact is a folder (the discovery run folder) holding ``pear.json`` —
format version, pear_lens version, base model with a fingerprint of its
weights, the heads with their Δπ, rank and τ, the discovery and training
settings, the SHA-256 of the coefficient file — beside
``coefficients.safetensors`` (τ and the head indices). No pickles. Loading
checks every field and refuses anything it cannot trust with a message that
says what to do. Like :mod:`pear_lens.convert`, this module needs neither
TransformerLens nor a model.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from pear_lens import __version__, constants
from pear_lens.errors import PearLensError
from pear_lens.io import atomic_path, atomic_write_json, file_sha256, save_safetensors
from pear_lens.heads import Head

if TYPE_CHECKING:
    import pandas as pd

KIND = "pear_lens re-weighting artifact"
_KEYS = {"format_version", "kind", "pear_lens_version", "base_model", "heads", "training", "discovery",
         "coefficients_file"}
_HEAD_KEYS = {"layer", "head", "tau", "score", "rank"}
_BASE_KEYS = {"name", "hf_id", "revision", "fingerprint", "model_type", "n_layers", "n_heads"}

TAU_LIMIT = 100.0
"""Largest |τ| pear_lens accepts. τ starts at 1 and Adam moves it about ``lr`` per step (the reference
recipe, 60 steps at lr 0.005, moves it about ±0.3), so no training pear_lens runs reaches 100; a larger
value is a damaged or hand-edited file or a diverged training. Beyond it a head's output swamps the
residual stream, and at ~1e30 the fp32 logits overflow or collapse to constants."""


def check_tau(tau: Sequence[float], where: str, heads: Sequence[Head] | None = None) -> None:
    """Refuse non-finite τ and |τ| > :data:`TAU_LIMIT`, naming ``where`` they came from."""
    values = [float(t) for t in tau]
    names = [f"L{l}.H{h}" for l, h in heads] if heads is not None else [str(i) for i in range(len(values))]
    bad = [(n, t) for n, t in zip(names, values) if not math.isfinite(t)]
    if bad:
        raise PearLensError(f"{where}: τ of {', '.join(n for n, _ in bad)} is not finite ({bad[0][1]}); the training "
                            "diverged or the file is damaged: retrain with `pear-lens train` (e.g. with a smaller --lr)")
    big = [(n, t) for n, t in zip(names, values) if abs(t) > TAU_LIMIT]
    if big:
        raise PearLensError(f"{where}: τ = {big[0][1]:g} of {big[0][0]} is beyond ±{TAU_LIMIT:g}, far outside what "
                            "training produces (τ starts at 1); the file was edited or damaged, or the training "
                            "diverged: retrain with `pear-lens train` (e.g. with a smaller --lr)")


@dataclass
class Artifact:
    """Learned coefficients of one model, as written by ``pear-lens train``."""

    heads: list[Head]
    tau: Float[Tensor, " k"]
    base_model: dict[str, Any]
    """``name`` (registry name or path), ``hf_id``, ``revision``, ``fingerprint``,
    ``model_type``, ``n_layers``, ``n_heads`` (and ``n_kv_heads``)."""
    scores: list[float | None] = field(default_factory=list)
    """Δπ of each head in the discovery run (None for a head chosen by hand without scores)."""
    ranks: list[int | None] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    discovery: dict[str, Any] = field(default_factory=dict)
    pear_lens_version: str = __version__
    path: Path | None = None

    def __post_init__(self) -> None:
        self.heads = [(int(l), int(h)) for l, h in self.heads]
        self.tau = torch.as_tensor(self.tau, dtype=torch.float32).detach().cpu()
        k = len(self.heads)
        self.scores = list(self.scores) or [None] * k
        self.ranks = list(self.ranks) or [None] * k
        missing = _BASE_KEYS - set(self.base_model)
        if missing:
            raise PearLensError(f"{self._where()}base_model lacks {sorted(missing)}; retrain with `pear-lens train`")
        if k == 0:
            raise PearLensError(f"{self._where()}the artifact names no heads; retrain with `pear-lens train`")
        if self.tau.shape != (k,) or len(self.scores) != k or len(self.ranks) != k:
            raise PearLensError(f"{self._where()}{k} heads but τ of shape {tuple(self.tau.shape)}, "
                                f"{len(self.scores)} scores, {len(self.ranks)} ranks; retrain with `pear-lens train`")
        if len(set(self.heads)) != k:
            raise PearLensError(f"{self._where()}duplicate heads {self.heads}; retrain with `pear-lens train`")
        n_layers, n_heads = int(self.base_model["n_layers"]), int(self.base_model["n_heads"])
        for layer, head in self.heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise PearLensError(
                    f"{self._where()}head ({layer}, {head}) is outside {self.base_model['name']} "
                    f"({n_layers} layers × {n_heads} heads); this artifact is damaged or meant for another "
                    "model, retrain with `pear-lens train`"
                )
        check_tau(self.tau.tolist(), f"{self.path / constants.PEAR_JSON}" if self.path else "the artifact",
                  self.heads)

    def _where(self) -> str:
        return f"{self.path}: " if self.path else ""

    @property
    def fingerprint(self) -> str:
        return str(self.base_model["fingerprint"])

    def coefficients(self) -> dict[Head, float]:
        """``{(layer, head): τ}``, the input of :func:`pear_lens.convert.fold_coefficients`."""
        return {h: float(t) for h, t in zip(self.heads, self.tau)}

    def check_fingerprint(self, fingerprint: str, what: str = "these weights") -> None:
        """Refuse weights other than those the coefficients were trained on."""
        if fingerprint != self.fingerprint:
            b = self.base_model
            raise PearLensError(
                f"{what} are not the weights this artifact was trained on (expected fingerprint "
                f"{self.fingerprint} of {b['name']} = {b['hf_id']}, revision {b['revision']}; got {fingerprint}). "
                f"Use the original float32 weights (`pear_lens.load_model({b['name']!r})`, or its "
                "`.fresh_hf()` for folding); an already folded copy cannot be folded again, and "
                "coefficients for another model must be retrained with `pear-lens train`."
            )

    def to_dataframe(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame({"layer": [l for l, _ in self.heads], "head": [h for _, h in self.heads],
                             "tau": self.tau.tolist(), "score": self.scores, "rank": self.ranks})

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": constants.FORMAT_VERSION,
            "kind": KIND,
            "pear_lens_version": self.pear_lens_version,
            "base_model": self.base_model,
            "heads": [{"layer": l, "head": h, "tau": float(t), "score": s, "rank": r}
                      for (l, h), t, s, r in zip(self.heads, self.tau.tolist(), self.scores, self.ranks)],
            "training": self.training,
            "discovery": self.discovery,
        }

    def save(self, run_dir: str | Path) -> Path:
        """Write ``coefficients.safetensors`` then ``pear.json`` (each atomically) into ``run_dir``.

        ``pear.json`` is written last and records the coefficient file's SHA-256,
        so a crash between the two writes leaves a mismatch that loading refuses.
        """
        run_dir = Path(run_dir)
        heads = torch.tensor(self.heads, dtype=torch.int64).reshape(-1, 2)
        with atomic_path(run_dir / constants.COEFFICIENTS_SAFETENSORS) as tmp:
            save_safetensors({"tau": self.tau.contiguous(), "heads": heads}, tmp,
                             metadata={"format_version": str(constants.FORMAT_VERSION), "kind": KIND})
            digest = file_sha256(tmp)
        meta = self.to_json()
        meta["coefficients_file"] = {"name": constants.COEFFICIENTS_SAFETENSORS, "sha256": digest}
        atomic_write_json(run_dir / constants.PEAR_JSON, meta)
        self.path = run_dir
        return run_dir


def _corrupt(path: Path, why: str) -> PearLensError:
    return PearLensError(f"{path} is damaged ({why}); retrain with `pear-lens train {path.parent} --overwrite`")


def _warn_unknown(keys: Sequence[str], known: set[str], where: str) -> None:
    extra = sorted(set(keys) - known)
    if extra:
        warnings.warn(f"{where} has keys this pear_lens does not know, ignored: {extra}", UserWarning, stacklevel=3)


def load_artifact(run_dir: str | Path, model: Any = None) -> Artifact:
    """Read and check the artifact in ``run_dir`` (written by ``pear-lens train``).

    With ``model`` (a :class:`~pear_lens.models.LoadedModel` or a Hugging Face
    model), also refuse it unless its weights are those the artifact was trained on.
    """
    run_dir = Path(run_dir)
    meta_path, coef_path = run_dir / constants.PEAR_JSON, run_dir / constants.COEFFICIENTS_SAFETENSORS
    if not meta_path.exists():
        raise PearLensError(f"{run_dir} has no {constants.PEAR_JSON}; train coefficients first with "
                            f"`pear-lens train {run_dir}`")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(meta_path, f"not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise _corrupt(meta_path, "not a JSON object")
    version = meta.get("format_version")
    if version != constants.FORMAT_VERSION:
        raise PearLensError(
            f"{meta_path} has format version {version!r}; this pear_lens {__version__} reads version "
            f"{constants.FORMAT_VERSION}. Use the pear_lens version that wrote it "
            f"({meta.get('pear_lens_version', 'unknown')}) or retrain with `pear-lens train {run_dir}`."
        )
    _warn_unknown(list(meta), _KEYS, str(meta_path))
    try:
        entries = meta["heads"]
        for e in entries:
            _warn_unknown(list(e), _HEAD_KEYS, f"{meta_path} (head entry)")
        json_heads = [(int(e["layer"]), int(e["head"])) for e in entries]
        json_tau = [float(e["tau"]) for e in entries]
        expected_sha = meta["coefficients_file"]["sha256"]
        base = dict(meta["base_model"])
    except (KeyError, TypeError, ValueError) as e:
        raise _corrupt(meta_path, f"missing or malformed field {e}") from None

    if not coef_path.exists():
        raise PearLensError(f"{coef_path} is missing; retrain with `pear-lens train {run_dir}`")
    if file_sha256(coef_path) != expected_sha:
        raise _corrupt(coef_path, f"its SHA-256 differs from the one recorded in {constants.PEAR_JSON}: "
                                  "truncated, edited or from another training run")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(coef_path))
        tau, heads = tensors["tau"].float(), tensors["heads"]
    except (SafetensorError, KeyError, OSError) as e:
        raise _corrupt(coef_path, f"unreadable: {e}") from None
    # the coefficient file matches the SHA-256 pear.json recorded at training: where the two disagree,
    # it is pear.json that was edited since
    if heads.shape != (len(json_heads), 2) or [tuple(h) for h in heads.tolist()] != json_heads:
        raise _corrupt(meta_path, f"its heads differ from those in {constants.COEFFICIENTS_SAFETENSORS}, whose "
                                  "SHA-256 matches the one recorded at training: pear.json was edited")
    check_tau(json_tau, str(meta_path), json_heads)
    check_tau(tau.tolist(), str(coef_path), json_heads)
    if not torch.allclose(tau, torch.tensor(json_tau)):
        raise _corrupt(meta_path, f"its τ differ from those in {constants.COEFFICIENTS_SAFETENSORS}, whose "
                                  "SHA-256 matches the one recorded at training: pear.json was edited")
    artifact = Artifact(
        heads=json_heads, tau=tau, base_model=base, scores=[e.get("score") for e in entries],
        ranks=[e.get("rank") for e in entries], training=meta.get("training", {}),
        discovery=meta.get("discovery", {}), pear_lens_version=meta.get("pear_lens_version", "unknown"),
        path=run_dir,
    )
    if model is not None:
        if callable(getattr(model, "fingerprint_as", None)):  # a LoadedModel: compared in the dtype trained in
            artifact.check_fingerprint(model.fingerprint_as(base.get("dtype")),
                                       what=f"the weights of {getattr(model, 'name', 'this model')}")
        elif isinstance(getattr(model, "fingerprint", None), str):
            artifact.check_fingerprint(model.fingerprint, what=f"the weights of {getattr(model, 'name', 'this model')}")
        else:
            from pear_lens.fingerprint import fingerprint

            artifact.check_fingerprint(fingerprint(model), what=f"the weights of this {type(model).__name__}")
    return artifact
