"""The loaded model: a Hugging Face model wrapped in a TransformerLens bridge, and how a name becomes one.

Every loaded model is wrapped in a TransformerLens ``TransformerBridge`` for hooking. The bridge rebuilds
the Hugging Face model it wraps in place, so generation, evaluation and folding always use a *separate*
Hugging Face copy (:meth:`LoadedModel.fresh_hf`). :func:`load_model` takes a registry name
(:mod:`pear_lens.models.registry`), a local Hugging Face folder or a hub id.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from pear_lens.errors import ModelNotAvailable, PearLensError
from pear_lens.fingerprint import fingerprint
from pear_lens.models.registry import DEFAULT_MODEL, REGISTRY, ModelSpec
from pear_lens.models.weights import load_hf_folder

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedModel:
    """A hooked model plus everything needed to reproduce and export results."""

    name: str
    bridge: "TransformerBridge"
    tokenizer: "PreTrainedTokenizerBase"
    fingerprint: str
    """Digest of the Hugging Face weights as loaded (see :func:`pear_lens.fingerprint.fingerprint`)."""
    revision: str
    hf_id: str
    model_type: str
    _fresh: Callable[[], "PreTrainedModel"] = field(repr=False)

    @property
    def cfg(self):
        return self.bridge.cfg

    @property
    def n_layers(self) -> int:
        return int(self.bridge.cfg.n_layers)

    @property
    def n_heads(self) -> int:
        return int(self.bridge.cfg.n_heads)

    @property
    def d_vocab(self) -> int:
        return int(self.bridge.cfg.d_vocab)

    @property
    def n_ctx(self) -> int:
        return int(self.bridge.cfg.n_ctx)

    def fresh_hf(self) -> "PreTrainedModel":
        """A separate, un-hooked Hugging Face copy of the same weights (for generation and folding)."""
        return self._fresh()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hf_id": self.hf_id, "revision": self.revision,
                "fingerprint": self.fingerprint, "model_type": self.model_type,
                "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": int(getattr(self.cfg, "n_key_value_heads", None) or self.n_heads)}


@contextlib.contextmanager
def _quiet():
    """Silence the chatter TransformerLens prints while booting a bridge."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def boot_bridge(hf_model: "PreTrainedModel", tokenizer, label: str) -> "TransformerBridge":
    """Wrap ``hf_model`` in a TransformerBridge without any network access.

    The bridge rebuilds ``hf_model`` in place: do not use it for generation afterwards.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if not getattr(hf_model.config, "architectures", None):
        hf_model.config.architectures = [type(hf_model).__name__]
    device = next(hf_model.parameters()).device
    with _quiet():
        bridge = TransformerBridge.boot_transformers(
            label, hf_model=hf_model, tokenizer=tokenizer, device=device,
            dtype=next(hf_model.parameters()).dtype,
        )
    bridge.eval()
    for p in bridge.parameters():
        p.requires_grad_(False)
    return bridge


def _resolve(name_or_path: str) -> tuple[ModelSpec | None, Callable[..., tuple[Any, Any]], str, str]:
    if name_or_path in REGISTRY:
        spec = REGISTRY[name_or_path]
        if not spec.installed():
            raise ModelNotAvailable(
                f"model {spec.name!r} is known but not installed; install it with: {spec.install}"
            )
        return spec, spec.load, spec.hf_id, spec.revision()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(f"{path} is a folder but has no config.json; point to a Hugging Face model folder.")

        return None, (lambda **hf_kwargs: load_hf_folder(path, **hf_kwargs)), str(path.resolve()), "local"
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        def load_hub(**hf_kwargs):
            try:
                return load_hf_folder(name_or_path, **hf_kwargs)
            except OSError as e:
                raise ModelNotAvailable(
                    f"could not load {name_or_path!r} from the Hugging Face hub ({e.__class__.__name__}); "
                    "this machine may have no hub access. Download the model elsewhere and pass its "
                    "local folder, or use one of `pear-lens models`."
                ) from None

        return None, load_hub, name_or_path, "hub"
    known = ", ".join(REGISTRY)
    raise ModelNotAvailable(
        f"unknown model {name_or_path!r}. Known models: {known}. You can also pass a local "
        "Hugging Face model folder or a hub id (owner/name)."
    )


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_device(device: str | torch.device | None) -> None:
    """Refuse a device this torch cannot use, with the fix, before anything is loaded."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise PearLensError(f"unknown device {str(device)!r}; use cpu, cuda, cuda:1, ... or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PearLensError(f"--device {device}: this torch {torch.__version__} sees no CUDA GPU (a CPU build, "
                                "or no driver); use --device cpu or install a CUDA build of torch (docs/gpu.md)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PearLensError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise PearLensError(f"--device {device}: this machine has no MPS backend; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        raise PearLensError(f"--device {device}: pear_lens runs on cpu, cuda or mps")


def device_description(device: str) -> str:
    """Where computations run, for records (minutes and floating-point results depend on it)."""
    import os

    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(device))} (fp32)"
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a model by registry name, local folder or hub id, wrapped in a TransformerBridge.

    ``device`` puts the whole model on one device (default CPU). ``device_map``
    (``"auto"`` or an accelerate map such as ``{"model.layers.0": 0, ...}``)
    spreads a large model over several devices instead; it is handed to
    ``from_pretrained``, so it needs a model read from a folder or the hub (not
    a tiny in-memory one). ``dtype`` is the weights' dtype (``bfloat16`` halves
    memory on a GPU; scores then carry bf16 rounding). See docs/gpu.md.

    >>> m = load_model("tiny-llama")
    >>> m.n_layers, m.n_heads
    (3, 4)
    """
    if device is not None and device_map is not None:
        raise PearLensError("give either device (one device) or device_map (several), not both")
    check_device(device)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise PearLensError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    spec, loader, hf_id, revision = _resolve(name_or_path)
    hf_kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        hf_kwargs["device_map"] = device_map  # accelerate places the weights while loading

    def load():
        model, tok = loader(**hf_kwargs)
        if device_map is None:
            model.to(device or "cpu")
        return model.eval(), tok

    hf_model, tokenizer = load()
    offloaded = [n for n, p in hf_model.named_parameters() if p.device.type == "meta"]
    if offloaded:
        raise PearLensError(
            f"device_map left {len(offloaded)} weights (e.g. {offloaded[0]}) off any real device (meta/disk "
            "offload), which pear_lens cannot hook or fold; map every module to a GPU or the CPU, "
            "or load in bfloat16 to fit more"
        )
    digest = fingerprint(hf_model)
    model_type = hf_model.config.model_type

    def fresh():
        return load()[0]

    bridge = boot_bridge(hf_model, tokenizer, hf_id)
    return LoadedModel(
        name=spec.name if spec else name_or_path, bridge=bridge, tokenizer=tokenizer,
        fingerprint=digest, revision=revision, hf_id=hf_id, model_type=model_type, _fresh=fresh,
    )


def as_loaded(model: Any) -> LoadedModel:
    """Accept a :class:`LoadedModel` or a registry name; reject anything else clearly."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model)
    raise PearLensError(
        f"expected a pear_lens LoadedModel (from pear_lens.load_model) or a model name, got "
        f"{type(model).__name__}"
    )
