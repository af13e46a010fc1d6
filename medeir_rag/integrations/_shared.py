"""What both integrations share: a process-wide cache of loaded models.

The Haystack text and document embedders of one pipeline (and LlamaIndex's embed model,
splitter and reranker) load the same directories; the cache gives them one copy each,
like sentence-transformers-haystack's backend factory; the key holds the precision and
backend too (an int8 and an fp32 component get a model each). Per-call options (prompts,
``truncate_dim``, normalisation, the overlong policy) are never stored on a cached model.
"""

from __future__ import annotations

import os
import threading

from medeir_rag.inference.encoder import MedeirEncoder, resolve_device
from medeir_rag.inference.precision import (
    DEFAULT_PRECISION,
    check_options,
    default_device_for,
    resolve_precision,
)
from medeir_rag.inference.rerank import MedeirReranker, bundled_reranker_missing, no_bundled_reranker
from medeir_rag.model.files import DEFAULT_MODEL_NAME, DEFAULT_RERANKER_NAME, resolve_model_path
from medeir_rag.rag.chunking import TokenWindow, load_token_window

_lock = threading.Lock()
_encoders: dict[tuple[str, str, str, str], MedeirEncoder] = {}
_rerankers: dict[tuple[str, str, int | None, str, str], MedeirReranker] = {}
_windows: dict[str, TokenWindow] = {}


def _key(model: str | os.PathLike[str] | None, default: str) -> str:
    return str(resolve_model_path(model, default=default).resolve())


def _device(device: str | None, precision: str, backend: str) -> str:
    return device or str(default_device_for(precision, backend))


def _precision(precision: str, backend: str, device: str) -> str:
    """The concrete precision, so ``"auto"`` and what it means here share one cached model."""
    return resolve_precision(check_options(precision, backend), backend, resolve_device(device))


def get_encoder(
    model: str | os.PathLike[str] | None, device: str | None = None, *, precision: str = DEFAULT_PRECISION,
    backend: str = "torch",
) -> MedeirEncoder:
    """A shared ``MedeirEncoder`` for ``(model, device, precision, backend)``; ``None`` is the bundled model."""
    check_options(precision, backend)
    device = _device(device, precision, backend)
    precision = _precision(precision, backend, device)
    key = (_key(model, DEFAULT_MODEL_NAME), device, precision, backend)
    with _lock:
        if key not in _encoders:
            _encoders[key] = MedeirEncoder(key[0], device=key[1], precision=precision, backend=backend)
        return _encoders[key]


def get_reranker(
    model: str | os.PathLike[str] | None, device: str | None = None, max_length: int | None = None, *,
    precision: str = "fp32", backend: str = "torch",
) -> MedeirReranker:
    """A shared ``MedeirReranker``; ``None`` is the bundled reranker.

    Raises ``FileNotFoundError`` naming the ``model`` argument when the bundled reranker is
    asked for (``None`` or its name) and none is installed.
    """
    check_options(precision, backend, owner="MedeirReranker")
    if bundled_reranker_missing(model):
        raise no_bundled_reranker("model=<path to a CrossEncoder folder>")
    device = _device(device, precision, backend)
    precision = _precision(precision, backend, device)
    key = (_key(model, DEFAULT_RERANKER_NAME), device, max_length, precision, backend)
    with _lock:
        if key not in _rerankers:
            _rerankers[key] = MedeirReranker(
                key[0], device=key[1], max_length=max_length, precision=precision, backend=backend
            )
        return _rerankers[key]


def get_token_window(model: str | os.PathLike[str] | None) -> TokenWindow:
    """Tokenizer, window and document prompt of ``model`` (``None``: the shipped tokenizer)."""
    key = "" if model is None else _key(model, DEFAULT_MODEL_NAME)
    with _lock:
        if key not in _windows:
            _windows[key] = load_token_window(key or None)
        return _windows[key]


def clear_cache() -> None:
    """Forget every cached model (tests, or to free memory)."""
    with _lock:
        _encoders.clear()
        _rerankers.clear()
        _windows.clear()
