"""``MedeirReranker``: the medeir cross-encoder, shared by the CLI and both RAG integrations.

A reranker directory is a standard sentence-transformers ``CrossEncoder`` directory whose
backbone is ``model_type="medeir"`` (registered when ``medeir_rag`` is imported), so it
loads with ``trust_remote_code=False``. ``None`` means the reranker bundled with the
package (``medeir_rag/assets/medeir-small-reranker``); none ships today, so asking for it
is an error that names the argument to pass instead.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/rerank.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medeir_rag.errors import MissingPathError, check_text
from medeir_rag.model.export import transformer_folder
from medeir_rag.model.files import (
    DEFAULT_RERANKER_NAME,
    bundled_model_path,
    check_st_kind,
    check_transformer_dir,
    resolve_model_path,
)


def bundled_reranker_missing(name_or_path: str | os.PathLike[str] | None) -> bool:
    """True when ``name_or_path`` asks for the bundled reranker (``None``, or its name with no
    folder of that name here) and none is installed."""
    if name_or_path is not None and (str(name_or_path) != DEFAULT_RERANKER_NAME or Path(name_or_path).is_dir()):
        return False
    return not bundled_model_path(DEFAULT_RERANKER_NAME).is_dir()


def no_bundled_reranker(how_to_pass: str) -> MissingPathError:
    """The error for asking for the bundled reranker when none is installed (a ``FileNotFoundError``)."""
    return MissingPathError(
        f"no reranker is bundled with medeir_rag; pass {how_to_pass} (train one with `medeir train-reranker`)"
    )


class MedeirReranker:
    """Scores (query, passage) pairs with a cross-encoder.

    Args:
        model_name_or_path: a CrossEncoder directory, ``hf:org/name`` for a hub model, or ``None``
            for the bundled reranker (``FileNotFoundError`` when none is installed, as today).
        device: ``"cpu"``, ``"cuda"``, ...; defaults to CUDA when available (checked before
            the model loads), but to the CPU for ``int8`` and for ``onnx`` without onnxruntime-gpu.
        max_length: pair window in tokens; defaults to the one saved with the model.
        precision: ``"fp32"`` (default: no reranker's bf16 quality has been measured yet),
            ``"auto"`` (bf16 where native, as the embedders), ``"bf16"``, ``"fp16"`` or ``"int8"``.
        backend: ``"torch"`` (default) or ``"onnx"``.
        onnx_path: an ``.onnx`` file or a folder with the exported files (``backend="onnx"``;
            default ``<model>/onnx``).
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        max_length: int | None = None,
        precision: str = "fp32",
        backend: str = "torch",
        onnx_path: str | os.PathLike[str] | None = None,
    ) -> None:
        from sentence_transformers import CrossEncoder

        import medeir_rag  # noqa: F401  (registers the medeir model type)
        from medeir_rag.errors import InvalidArgumentError
        from medeir_rag.inference.encoder import resolve_device
        from medeir_rag.inference.precision import (
            autocast_dtype,
            check_device,
            check_options,
            default_device_for,
            quantize_int8,
            resolve_precision,
        )
        from medeir_rag.model.loading import quiet_loading

        self.precision = check_options(precision, backend, owner="MedeirReranker")
        self.backend = backend
        if onnx_path is not None and backend != "onnx":
            raise InvalidArgumentError(f"onnx_path is only used with backend='onnx', got backend={backend!r}")
        if bundled_reranker_missing(model_name_or_path):
            raise no_bundled_reranker("model_name_or_path=<path to a CrossEncoder folder>")
        resolved = resolve_device(device) if device is not None else default_device_for(self.precision, backend)
        self.precision = resolve_precision(self.precision, backend, resolved)
        check_device(self.precision, backend, resolved)
        self.device = str(resolved)
        self.path: Path = resolve_model_path(model_name_or_path, default=DEFAULT_RERANKER_NAME)
        check_st_kind(self.path, "reranker")  # an embedder folder would score with a random head
        check_transformer_dir(transformer_folder(self.path), role="reranker")
        graph = None
        if backend == "onnx":
            from medeir_rag.inference.onnx_backend import OnnxSequenceClassifier, onnx_file, providers_for

            graph = onnx_file(self.path, self.precision, onnx_path)  # before anything loads
            providers_for(resolved)
        with quiet_loading():
            self.model = CrossEncoder(str(self.path), device=self.device, max_length=max_length, trust_remote_code=False)
        self._autocast = autocast_dtype(self.precision) if backend == "torch" else None
        if graph is not None:
            from sentence_transformers.base.modules import Transformer

            transformer = next(m for m in self.model.modules() if isinstance(m, Transformer))
            transformer.model = OnnxSequenceClassifier(graph, self.model.model.config, resolved)
        elif self.precision == "int8":
            quantize_int8(self.model.model)

    @property
    def name(self) -> str:
        return self.path.name

    def score(
        self, query: str, passages: Sequence[str], *, batch_size: int = 16, scale_score: bool = True
    ) -> np.ndarray:
        """One score per passage: sigmoid probabilities when ``scale_score``, else raw logits.

        A query or passage holding a lone surrogate is refused (``InvalidTextError`` naming it).
        """
        import torch

        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        check_text(query, "query")
        for index, passage in enumerate(passages):
            if isinstance(passage, str):
                check_text(passage, f"passages[{index}]")
        if not passages:
            return np.zeros(0, dtype=np.float32)
        activation = torch.nn.Sigmoid() if scale_score else torch.nn.Identity()
        device_type = torch.device(self.device).type
        with torch.autocast(device_type, dtype=self._autocast, enabled=self._autocast is not None):
            scores = self.model.predict(
                [(query, p) for p in passages], batch_size=batch_size, activation_fn=activation,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.asarray(scores, dtype=np.float32).reshape(-1)

    def __repr__(self) -> str:
        return (f"MedeirReranker(path={str(self.path)!r}, device={self.device!r}, precision={self.precision!r}, "
                f"backend={self.backend!r})")
