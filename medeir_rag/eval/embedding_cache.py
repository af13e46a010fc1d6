"""A directory of ``.npy`` embedding matrices keyed by everything that determines them.

Design choices:
- **The key is a hash of what makes the numbers**: the model's weights (sha256 of its
  safetensors/bin files), the source file (sha256 of the corpus file), the exact list of
  texts (sha256), the role (query/document), the prompt, ``truncate_dim`` and the model's
  encode settings (window, overlong policy). Change any of them and the key changes, so a
  stale matrix is never read; nothing has to be invalidated by hand.
- One ``<key>.npy`` per matrix plus a ``<key>.json`` that spells the key's parts out, so
  a cache folder can be inspected. Writes go to a temporary file and are renamed into
  place, so an interrupted run never leaves a half-written matrix behind.
- ``EmbeddingCache(None)`` is a cache that stores nothing (``--no-cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medeir_rag.eval.beir import sha256_file

DEFAULT_CACHE_DIR = Path("~/.cache/medeir/embeddings")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def weights_sha256(model_dir: Path) -> str:
    """sha256 over a model directory's weight files (relative path + file sha256, sorted)."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files ({', '.join(WEIGHT_SUFFIXES)}) under {model_dir}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(model_dir).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def texts_sha256(texts: Sequence[str]) -> str:
    """sha256 of a list of texts (length-prefixed, so boundaries count)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class EmbeddingCache:
    """``get_or_compute(parts, compute)``: load ``<key>.npy`` or compute and store it."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get_or_compute(self, parts: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached matrix for ``parts``, else ``compute()`` (stored for next time)."""
        if self.directory is None:
            self.misses += 1
            return compute()
        key = self.key(parts)
        path = self.directory / f"{key}.npy"
        if path.is_file():
            self.hits += 1
            return np.load(path)
        self.misses += 1
        array = np.asarray(compute(), dtype=np.float32)
        self.directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.directory, suffix=".tmp", delete=False) as handle:
            np.save(handle, array)
        os.replace(handle.name, path)
        (self.directory / f"{key}.json").write_text(json.dumps(parts, indent=1, sort_keys=True, default=str))
        return array
