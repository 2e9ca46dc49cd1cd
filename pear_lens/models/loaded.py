"""The loaded model: a Hugging Face model wrapped in a TransformerLens bridge, and how a model becomes one.

Every loaded model is wrapped in a TransformerLens ``TransformerBridge`` for hooking. The bridge rebuilds
the Hugging Face model it wraps in place, so generation, evaluation and folding always use a *separate*
Hugging Face copy (:meth:`LoadedModel.fresh_hf`). :func:`load_model` takes a registry name
(:mod:`pear_lens.models.registry`), a local Hugging Face folder or a hub id. :func:`as_loaded`, which every
function that takes a model calls, also takes the model object a notebook already holds, without reloading it:

- a :class:`LoadedModel` (used as is) or a name, folder or hub id (:func:`load_model`);
- a Hugging Face causal LM with its tokenizer, ``as_loaded(hf_model, tokenizer=tok)`` or
  ``as_loaded((hf_model, tok))``: a deep copy is bridged, so ``hf_model`` itself stays usable;
- a ``TransformerBridge``, used as is (its ``fresh_hf`` is refused: pass the Hugging Face model to fold or
  generate).

>>> from pear_lens.models.tiny import build_tiny
>>> hf_model, tok = build_tiny("llama")
>>> m = as_loaded(hf_model, tokenizer=tok)
>>> m.fingerprint == load_model("tiny-llama").fingerprint
True
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Union

import torch

from pear_lens.config import option
from pear_lens.errors import ModelNotAvailable, PearLensError
from pear_lens.fingerprint import fingerprint, fingerprint_state
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
    _reload: Callable[[str], "PreTrainedModel"] | None = field(default=None, repr=False)
    """The same weights loaded (on the CPU) in another dtype, by name; None where no file names them."""
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)
    device_map: str | dict[str, Any] | None = None
    """The accelerate device map the weights were loaded with (None: one device, :attr:`device`)."""

    @property
    def dtype(self) -> str:
        """The dtype of the weights as loaded, by name: ``float32``, ``bfloat16`` or ``float16``."""
        return dtype_name(next(self.bridge.parameters()).dtype)

    @property
    def device(self) -> str:
        """The device inputs go to, e.g. ``cpu`` or ``cuda:0``: the token embedding's (under a device map the
        weights span :attr:`devices`)."""
        return str(input_device(self.bridge))

    @property
    def devices(self) -> list[str]:
        """Every device that holds some of the weights, in order of first use (one unless a device map split them)."""
        return list(dict.fromkeys(str(p.device) for p in self.bridge.parameters()))

    def fingerprint_as(self, dtype: str | None) -> str:
        """The fingerprint these weights have when loaded in ``dtype`` (None: as they are loaded now).

        A fingerprint digests the weights' bytes, so the same weights read in bfloat16 and in float32 have
        two fingerprints; a record (a discovery run, an artifact) says which dtype its fingerprint was
        taken in, and a later stage compares the fingerprint computed the same way, so it never calls
        unchanged weights changed. A dtype other than the loaded one costs one load of the weights on the CPU.
        """
        if dtype is None or dtype == self.dtype:
            return self.fingerprint
        check_dtype(dtype)
        if dtype not in self._fingerprints:
            if self._reload is None:
                raise PearLensError(f"the record was taken of {self.name}'s weights in {dtype}, but this model object "
                                    f"holds them in {self.dtype} and names no file to read them from in {dtype}: "
                                    f"load it in {dtype} (dtype={dtype!r}, --dtype {dtype})")
            self._fingerprints[dtype] = fingerprint(self._reload(dtype))
        return self._fingerprints[dtype]

    def placement(self) -> dict[str, Any]:
        """Where this model runs: ``{"device": ..., "dtype": ...}`` (what a run folder records per stage), and
        ``"devices"`` when a device map spread the weights over several."""
        devices = self.devices
        return {"device": self.device, "dtype": self.dtype, **({"devices": devices} if len(devices) > 1 else {})}

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
        """A separate, un-hooked Hugging Face copy of the same weights (for generation and folding).

        Refused for a model given as a ``TransformerBridge``, which keeps no clean copy.
        """
        return self._fresh()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "hf_id": self.hf_id, "revision": self.revision,
                "fingerprint": self.fingerprint, "model_type": self.model_type,
                "n_layers": self.n_layers, "n_heads": self.n_heads,
                "n_kv_heads": int(getattr(self.cfg, "n_key_value_heads", None) or self.n_heads),
                # the fingerprint is of the weights in this dtype (fingerprint_as); the device is where they ran
                **self.placement()}


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


def input_device(model: Any) -> torch.device:
    """Where the input ids of ``model`` (a :class:`LoadedModel`, a ``TransformerBridge``, whose ``cfg.device``
    TransformerLens sets to the embedding's, or a Hugging Face model) go: its token embedding's device. Under a
    device map the weights span several devices; the logits come off the last, so targets go to ``logits.device``.
    """
    cfg_device = getattr(getattr(model, "cfg", None), "device", None)
    if cfg_device is not None:
        return torch.device(cfg_device)
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return weight.device if isinstance(weight, torch.Tensor) else next(model.parameters()).device


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
"""The dtypes a model's weights can be loaded in, by name."""

DEFAULT_DTYPE = "float32"
"""The dtype of a model loaded without a record that says otherwise (and of runs that recorded none)."""


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` as ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")


def check_dtype(dtype: str) -> None:
    """Refuse a dtype name pear_lens does not load weights in, with the choices."""
    if dtype not in DTYPES:
        raise PearLensError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")


@dataclass(kw_only=True)
class Placement:
    """Where a command runs its model and in which dtype it loads the weights: one declaration, one default, in
    every command that runs a model (``--device``, ``--device-map``, ``--dtype``) and in the Python API
    (``device=``, ``device_map=``, ``dtype=``)."""

    device: str = option("cpu", help="device of the model (cpu, cuda, cuda:1, mps); the run folder records where "
                                     "each stage ran")
    dtype: str | None = option(None, choices=list(DTYPES),
                               help="dtype of the weights as loaded (bfloat16 halves GPU memory; results then carry "
                                    "its rounding). None: float32 for a model loaded anew, and for a command that "
                                    "reads a run or an artifact the dtype that run recorded, so the weights are "
                                    "loaded (and fingerprinted) as they were")
    device_map: str | dict[str, Any] | None = option(
        None, cli_type=str,
        help="spread a model too large for one GPU over every GPU present: an accelerate device map (auto, "
             "balanced, balanced_low_0, sequential; a {module: device} dict in Python) handed to Hugging Face's "
             "from_pretrained; replaces --device (docs/gpu.md)")

    def __post_init__(self) -> None:
        from pear_lens.config import check_fields

        check_fields(self)  # a command's config built in Python is held to the types its command line parses
        if self.dtype is not None:
            check_dtype(self.dtype)
        if self.device_map is not None:
            check_device_map(self.device_map)
            if self.device != "cpu":  # cpu is --device's default, so it cannot tell a choice from no choice
                raise PearLensError(f"give either --device {self.device} (one device) or --device-map (several), "
                                    "not both (device= or device_map= in Python)")

    def resolved_dtype(self, recorded: str | None = None) -> str:
        """The dtype to load in: the one given, else ``recorded`` (a run's), else float32."""
        return self.dtype or recorded or DEFAULT_DTYPE

    def check_placement(self) -> None:
        """Refuse a device this torch cannot use before anything is loaded (accelerate places a device map)."""
        if self.device_map is None:
            check_device(self.device)

    def device_options(self) -> dict[str, Any]:
        """``{"device": ...}`` or ``{"device_map": ...}``: the keyword argument that places the model, for
        :func:`load_model` and every function that loads one (``train_into_run``, ``fold_verified``, ...)."""
        return {"device_map": self.device_map} if self.device_map is not None else {"device": self.device}

    def load_options(self, recorded: str | None = None) -> dict[str, Any]:
        """:func:`load_model`'s keyword arguments: :meth:`device_options` and :meth:`resolved_dtype`."""
        return {**self.device_options(), "dtype": self.resolved_dtype(recorded)}


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""The device maps by name that accelerate computes from the GPUs present (and their free memory)."""


def check_device_map(device_map: Any) -> None:
    """Refuse what is no device map (a strategy name, a device name, or a ``{module: device}`` dict)."""
    if isinstance(device_map, dict) or device_map in DEVICE_MAP_STRATEGIES:
        return
    try:
        torch.device(device_map)
    except (RuntimeError, TypeError):
        raise PearLensError(f"unknown device map {device_map!r:.60}; use one of {', '.join(DEVICE_MAP_STRATEGIES)} "
                            "(or, in Python, a {module: device} dict)") from None
    check_device(device_map)  # a device name maps the whole model there


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

    ``device`` puts the whole model on one device (default CPU). ``device_map`` (``"auto"`` or an accelerate map
    such as ``{"model.layers.0": 0, ...}``) spreads a large model over several devices instead; it is handed to
    ``from_pretrained``, so it needs a model read from a folder or the hub (not a tiny in-memory one), and
    :meth:`LoadedModel.fresh_hf` loads its copies with the same map. ``dtype`` is the weights' dtype
    (``bfloat16`` halves memory on a GPU; scores then carry bf16 rounding). See docs/gpu.md.

    >>> m = load_model("tiny-llama")
    >>> m.n_layers, m.n_heads
    (3, 4)
    """
    if device is not None and device_map is not None:
        raise PearLensError("give either device (one device) or device_map (several), not both")
    check_device(device)
    if device_map is not None:
        check_device_map(device_map)
    if isinstance(dtype, str):
        check_dtype(dtype)
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

    def reload(other: str):  # the weights as another stage loaded them, on the CPU, for their fingerprint only
        return loader(dtype=DTYPES[other])[0]

    bridge = boot_bridge(hf_model, tokenizer, hf_id)
    return LoadedModel(
        name=spec.name if spec else name_or_path, bridge=bridge, tokenizer=tokenizer,
        fingerprint=digest, revision=revision, hf_id=hf_id, model_type=model_type, _fresh=fresh, _reload=reload,
        device_map=device_map,
    )


ModelLike = Union[LoadedModel, str, Path, "PreTrainedModel", "TransformerBridge",
                  tuple["PreTrainedModel", "PreTrainedTokenizerBase"]]
"""What :func:`as_loaded`, and so every function that takes a model, accepts."""

IN_MEMORY = "in-memory"
"""The revision recorded for a model object handed over in memory (no file names its weights)."""


def as_loaded(model: ModelLike, *, tokenizer: "PreTrainedTokenizerBase | None" = None) -> LoadedModel:
    """``model`` as a :class:`LoadedModel`, whichever accepted form it comes in (see the module docstring).

    A Hugging Face model is deep-copied twice (one copy bridged, one kept untouched in CPU memory for
    :meth:`LoadedModel.fresh_hf`); its fingerprint is taken from the object itself. Each call wraps anew, so
    call this once and pass the result on when scoring a model object several times.

    >>> from pear_lens.models.tiny import build_tiny
    >>> hf_model, tok = build_tiny("gpt2")
    >>> as_loaded((hf_model, tok)).revision
    'in-memory'
    """
    if isinstance(model, tuple) and len(model) == 2 and tokenizer is None:
        model, tokenizer = model
    if isinstance(model, (LoadedModel, str, Path)):  # a Path: a local folder, as its str would be
        if tokenizer is not None:
            raise PearLensError("tokenizer= goes with a Hugging Face model object; a LoadedModel or a model name "
                                "brings its own tokenizer, so drop tokenizer=")
        return model if isinstance(model, LoadedModel) else load_model(str(model))
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel

    if isinstance(model, TransformerBridge):
        return _from_bridge(model, tokenizer)
    if isinstance(model, PreTrainedModel):
        return _from_hf(model, tokenizer)
    raise PearLensError(
        f"cannot use a {type(model).__name__} as a model; pass a pear_lens LoadedModel, a model name, a Hugging "
        "Face model with tokenizer=, an (hf_model, tokenizer) pair or a TransformerBridge"
    )


def _label(hf_model: "PreTrainedModel") -> str:
    """The name recorded for a model object: where it was loaded from, else its class."""
    return hf_model.name_or_path or type(hf_model).__name__


def _from_hf(hf_model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase | None") -> LoadedModel:
    name = _label(hf_model)
    if tokenizer is None:
        raise PearLensError(f"the Hugging Face model {name} came without its tokenizer; pass it as "
                            "as_loaded(model, tokenizer=tok) or as the pair (model, tok)")
    digest = fingerprint(hf_model)  # the user's object, before any copy is bridged
    # the bridge rebuilds the model it wraps, so it gets a copy; another copy stays untouched for fresh_hf
    # (kept in CPU memory, where a model that fills an accelerator still fits)
    device = next(hf_model.parameters()).device
    pristine = copy.deepcopy(hf_model).to("cpu").eval()
    bridge = boot_bridge(copy.deepcopy(hf_model).eval(), tokenizer, name)
    # from float32 a lower dtype is a cast, as from_pretrained(dtype=...) does it; the other way it is not
    reload = ((lambda other: copy.deepcopy(pristine).to(DTYPES[other]))
              if pristine.dtype == torch.float32 else None)
    return LoadedModel(
        name=name, bridge=bridge, tokenizer=tokenizer, fingerprint=digest, revision=IN_MEMORY, hf_id=name,
        model_type=hf_model.config.model_type, _fresh=lambda: copy.deepcopy(pristine).to(device), _reload=reload,
    )


def _from_bridge(bridge: "TransformerBridge", tokenizer: "PreTrainedTokenizerBase | None") -> LoadedModel:
    if bridge.tokenizer is None:
        raise PearLensError("this TransformerBridge has no tokenizer; boot it with one "
                            "(TransformerBridge.boot_transformers(..., tokenizer=tok)) or pass the Hugging Face model")
    if tokenizer is not None and tokenizer is not bridge.tokenizer:
        raise PearLensError("a TransformerBridge brings its own tokenizer (bridge.tokenizer); drop tokenizer=")
    hf_model = bridge.original_model
    name = _label(hf_model)

    def fresh() -> "PreTrainedModel":
        raise PearLensError(f"{name} was given as a TransformerBridge, which has rebuilt its Hugging Face model; "
                            "generation and folding need a clean copy: pass the Hugging Face model object "
                            "(with tokenizer=) or a model name instead")

    return LoadedModel(
        name=name, bridge=bridge, tokenizer=bridge.tokenizer, fingerprint=bridged_fingerprint(hf_model),
        revision=IN_MEMORY, hf_id=name, model_type=hf_model.config.model_type, _fresh=fresh,
    )


def bridged_fingerprint(hf_model: "PreTrainedModel") -> str:
    """The :func:`~pear_lens.fingerprint.fingerprint` ``hf_model`` had before a TransformerBridge rebuilt it.

    The bridge nests each module it wraps as ``_original_component`` (so its weights appear under longer
    names, some more than once) and gives a bias-free unembedding a zero ``bias`` buffer. The names the
    model's own class has (built on the meta device, so free) are read back through that nesting.
    """
    with torch.device("meta"):
        names = type(hf_model)(copy.deepcopy(hf_model.config)).state_dict().keys()
    rebuilt: dict[str, torch.Tensor] = {}
    for key, tensor in hf_model.state_dict().items():
        rebuilt.setdefault(key.replace("._original_component", ""), tensor)
    missing = [n for n in names if n not in rebuilt]
    if missing:
        raise PearLensError(f"cannot find the weight {missing[0]} in this TransformerBridge's model, so its "
                            "fingerprint is unknown; pass the Hugging Face model object (with tokenizer=) instead")
    return fingerprint_state({n: rebuilt[n] for n in names})
