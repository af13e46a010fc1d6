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

BUNDLED_MODELS_DIR = Path(__file__).parent / "assets"
DEFAULT_MODEL_NAME = "medeir-small"
DEFAULT_RERANKER_NAME = "medeir-small-reranker"


class ModelFileError(ValueError):
    """A model file is present but unreadable (corrupt JSON, truncated safetensors, ...)."""


def bundled_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Path of a model shipped inside the package (``medeir_rag/assets/<name>``)."""
    return BUNDLED_MODELS_DIR / name


def resolve_model_path(name_or_path: str | os.PathLike[str] | None, *, default: str = DEFAULT_MODEL_NAME) -> Path:
    """Turn ``None`` (the bundled default), a local path, or a hub id into a local directory.

    A hub id is resolved with ``huggingface_hub.snapshot_download``, which honours
    ``HF_HUB_OFFLINE=1`` (then only the local cache is used, nothing is downloaded).
    """
    if name_or_path is None:
        path = bundled_model_path(default)
        if not path.is_dir():
            stage = "train-reranker" if default == DEFAULT_RERANKER_NAME else "finetune"
            raise FileNotFoundError(
                f"the bundled model {default!r} is not installed at {path}; pass a model path "
                f"(train one with `medeir {stage}`) or reinstall medeir_rag"
            )
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"model path {path} is a file; expected a model directory")
    if bundled_model_path(str(name_or_path)).is_dir():
        return bundled_model_path(str(name_or_path))
    text = str(name_or_path)
    looks_local = text.startswith((".", "/", "~")) or text.count("/") != 1
    if looks_local:
        raise FileNotFoundError(f"model directory {path} does not exist")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.txt", "*/*.json"]))
    except Exception as error:  # offline, unknown repo, no network: all mean "not available here"
        raise FileNotFoundError(
            f"{text!r} is neither a local directory nor a hub model available here ({type(error).__name__}); "
            "with HF_HUB_OFFLINE=1 only models already in the local hub cache can be used"
        ) from error


def read_json(path: Path) -> dict | list:
    """Read a JSON file, raising ``FileNotFoundError``/``ModelFileError`` that name it."""
    if not path.is_file():
        raise FileNotFoundError(f"missing model file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"corrupt model file {path}: {error}") from error


def check_safetensors(path: Path) -> None:
    """Fail early, naming the file, when weights are missing, pickled or truncated."""
    if not path.is_file():
        pickled = [p.name for p in path.parent.glob("*.bin")]
        hint = f" (found {pickled}: pickle weights are refused; convert them to safetensors)" if pickled else ""
        raise FileNotFoundError(f"missing model file: {path}{hint}")
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
