"""Finding and checking a model directory before anything is loaded from it.

Why a separate step: transformers' errors for a missing or truncated file are long and
name the wrong thing (often a hub URL). Here every problem names the file, and weights
are only ever read from safetensors (a pickle ``.bin`` can run code when loaded).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors import safe_open

from medeir_rag.errors import MedeirError, MissingPathError, NotAFolderError

BUNDLED_MODELS_DIR = Path(__file__).parent / "assets"
DEFAULT_MODEL_NAME = "medeir-small"
DEFAULT_RERANKER_NAME = "medeir-small-reranker"
HUB_PREFIX = "hf:"


class ModelFileError(MedeirError, ValueError):
    """A model file is present but unreadable (corrupt JSON, truncated safetensors, ...)."""


def bundled_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Path of a model shipped inside the package (``medeir_rag/assets/<name>``)."""
    return BUNDLED_MODELS_DIR / name


def resolve_model_path(name_or_path: str | os.PathLike[str] | None, *, default: str = DEFAULT_MODEL_NAME) -> Path:
    """Turn ``None`` (the bundled default), a local path, or ``hf:org/name`` into a local directory.

    Only the explicit form ``hf:org/name`` is looked up on the Hugging Face hub (with
    ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE=1``: then only the
    local cache is used). Anything else is a local path or the name of a bundled model, so
    a mistyped path such as ``patients/model-typo`` is a ``MissingPathError`` naming it and
    never becomes a network request that carries the name.

    Raises:
        MissingPathError: the directory does not exist, or the hub model is not available.
        NotAFolderError: the path is a file.
    """
    if name_or_path is None:
        path = bundled_model_path(default)
        if not path.is_dir():
            stage = "train-reranker" if default == DEFAULT_RERANKER_NAME else "finetune"
            raise MissingPathError(
                f"the bundled model {default!r} is not installed at {path}; pass a model path "
                f"(train one with `medeir {stage}`) or reinstall medeir_rag"
            )
        return path
    text = os.fspath(name_or_path)
    if isinstance(text, str) and text.startswith(HUB_PREFIX):
        return _download_hub_model(text)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotAFolderError(f"model path {path} is a file; expected a model directory")
    if bundled_model_path(str(name_or_path)).is_dir():
        return bundled_model_path(str(name_or_path))
    hint = ""
    if not str(text).startswith((".", "/", "~")) and str(text).count("/") == 1:
        hint = f" (a model on the Hugging Face hub must be named {HUB_PREFIX}{text})"
    raise MissingPathError(f"model directory {path} does not exist{hint}")


def _download_hub_model(text: str) -> Path:
    """The local snapshot of ``hf:org/name`` (the cache only, with ``HF_HUB_OFFLINE=1``)."""
    repo_id = text.removeprefix(HUB_PREFIX).removeprefix("//")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise MissingPathError(f"{text!r} is not a hub model id; expected {HUB_PREFIX}org/name")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*/*.json"]))
    except Exception as error:  # offline, unknown repo, no network: all mean "not available here"
        raise MissingPathError(
            f"hub model {repo_id!r} (from {text!r}) is not available here ({type(error).__name__}); "
            "with HF_HUB_OFFLINE=1 only models already in the local hub cache can be used"
        ) from error


def read_json(path: Path) -> dict | list:
    """Read a JSON file, raising ``FileNotFoundError``/``ModelFileError`` that name it."""
    if not path.is_file():
        raise MissingPathError(f"missing model file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"corrupt model file {path}: {error}") from error


def check_safetensors(path: Path) -> None:
    """Fail early, naming the file, when weights are missing, pickled or truncated."""
    if not path.is_file():
        pickled = [p.name for p in path.parent.glob("*.bin")]
        hint = f" (found {pickled}: pickle weights are refused; convert them to safetensors)" if pickled else ""
        raise MissingPathError(f"missing model file: {path}{hint}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            if names:  # reading the last tensor detects a truncated file
                handle.get_slice(names[-1])[...]
    except Exception as error:  # safetensors raises several types for bad files
        raise ModelFileError(f"corrupt weights file {path}: {error}") from error


def check_transformer_dir(path: Path) -> None:
    """A directory holding an HF medeir model: ``config.json``, safetensors weights, tokenizer."""
    config = read_json(path / "config.json")
    if config.get("model_type") != "medeir":
        raise ModelFileError(f"{path / 'config.json'} has model_type={config.get('model_type')!r}, expected 'medeir'")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        for shard in shards:
            check_safetensors(path / shard)
    else:
        check_safetensors(path / "model.safetensors")
    read_json(path / "tokenizer.json")
