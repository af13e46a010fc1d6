"""Finding and checking a model directory before anything is loaded from it.

Why a separate step: transformers' errors for a missing or truncated file are long and
name the wrong thing (often a hub URL). Here every problem names the file, and weights
are only ever read from safetensors (a pickle ``.bin`` can run code when loaded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from safetensors import safe_open

from medeir_rag.errors import MedeirError, MissingPathError, NotAFolderError

BUNDLED_MODELS_DIR = Path(__file__).parents[1] / "assets"
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


def check_safetensors(path: Path) -> dict[str, list[int]]:
    """Fail early, naming the file, when weights are missing, pickled or truncated; returns the tensor shapes."""
    if not path.is_file():
        pickled = [p.name for p in path.parent.glob("*.bin")]
        hint = f" (found {pickled}: pickle weights are refused; convert them to safetensors)" if pickled else ""
        raise MissingPathError(f"missing model file: {path}{hint}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: list(handle.get_slice(name).get_shape()) for name in handle.keys()}
            if shapes:  # reading the last tensor detects a truncated file
                handle.get_slice(list(shapes)[-1])[...]
    except Exception as error:  # safetensors raises several types for bad files
        raise ModelFileError(f"corrupt weights file {path}: {error}") from error
    return shapes


ModelRole = Literal["embedder", "reranker"]
CLASSIFIER_WEIGHT = "classifier.weight"


def check_st_kind(path: Path, role: ModelRole) -> None:
    """Refuse a sentence-transformers folder saved as the other kind (``model_type`` in its config).

    A cross-encoder folder read as an embedder gives vectors from a backbone never trained to
    embed; an embedder read as a cross-encoder gets a random classification head whose scores
    look like probabilities. Both are errors, named by folder, before any weights load.
    """
    file = path / "config_sentence_transformers.json"
    kind = read_json(file).get("model_type") if file.is_file() else None
    if role == "embedder" and kind == "CrossEncoder":
        raise ModelFileError(
            f"{path} is a cross-encoder (reranker) folder ({file.name}: model_type='CrossEncoder'), not an "
            "embedder; pass it as the reranker (MedeirReranker, --reranker), and an embedder as the model"
        )
    if role == "reranker" and kind == "SentenceTransformer":
        raise ModelFileError(
            f"{path} is an embedder folder ({file.name}: model_type='SentenceTransformer'), not a cross-encoder; "
            "pass it as the model, and a reranker trained with `medeir train-reranker` as the reranker"
        )


def _check_role(path: Path, config: dict, shapes: dict[str, list[int]], role: ModelRole) -> None:
    has_head = CLASSIFIER_WEIGHT in shapes
    if role == "embedder" and has_head:
        raise ModelFileError(
            f"{path} holds a cross-encoder (reranker: {CLASSIFIER_WEIGHT} in its weights, architectures "
            f"{config.get('architectures')}), not an embedder; pass it as the reranker instead"
        )
    if role == "reranker" and not has_head:
        raise ModelFileError(
            f"{path} has no classification head ({CLASSIFIER_WEIGHT} is not in its weights): it is an embedder, "
            "not a cross-encoder, and would score with a random head; train a reranker with `medeir train-reranker`"
        )


def check_weights_match_config(config_file: Path, config: dict, shapes: dict[str, list[int]]) -> None:
    """``config.json``'s sizes against the stored tensors: a disagreement would load random weights.

    transformers fills layers missing from the weights with random ones (with a warning) and
    fails on a width mismatch with a long report; here both are one error naming the file.
    """
    prefix = "medeir." if any(name.startswith("medeir.") for name in shapes) else ""
    embeddings = shapes.get(f"{prefix}embeddings.word_embeddings.weight")
    layers = {name[len(prefix) + 7 :].split(".", 1)[0] for name in shapes if name.startswith(f"{prefix}layers.")}
    found = {"num_hidden_layers": len(layers)}
    if embeddings is not None and len(embeddings) == 2:
        found["vocab_size"], found["hidden_size"] = embeddings
    for key, stored in found.items():
        if key in config and config[key] != stored:
            raise ModelFileError(
                f"{config_file}: {key}={config[key]!r} but the weights hold {stored}; "
                "this config.json does not belong to these weights (restore the one saved with them)"
            )


def check_transformer_dir(path: Path, role: ModelRole | None = None) -> None:
    """A directory holding an HF medeir model: ``config.json``, safetensors weights, tokenizer.

    The config's sizes must match the weights, and with ``role`` the weights must be of that
    kind (a reranker has a classification head, an embedder has none).
    """
    config = read_json(path / "config.json")
    if config.get("model_type") != "medeir":
        raise ModelFileError(f"{path / 'config.json'} has model_type={config.get('model_type')!r}, expected 'medeir'")
    index = path / "model.safetensors.index.json"
    shapes: dict[str, list[int]] = {}
    if index.is_file():
        for shard in sorted(set(read_json(index)["weight_map"].values())):
            shapes.update(check_safetensors(path / shard))
    else:
        shapes = check_safetensors(path / "model.safetensors")
    check_weights_match_config(path / "config.json", config, shapes)
    if role is not None:
        _check_role(path, config, shapes, role)
    tokenizer = read_json(path / "tokenizer.json")
    if not isinstance(tokenizer, dict) or not isinstance(tokenizer.get("model"), dict):
        raise ModelFileError(f"{path / 'tokenizer.json'} holds no tokenizer model (a 'model' object); "
                             "restore the tokenizer.json saved with the model")


# ----------------------------------------------------------------------------
# sentence-transformers folders

DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus", "text")  # the first one saved is the document prompt


@dataclass(frozen=True)
class StFolder:
    """What a saved sentence-transformers folder says about itself, read once from its JSON files."""

    path: Path
    modules: list[dict] = field(default_factory=list)
    transformer_dir: Path = Path()
    max_seq_length: int | None = None  # sentence_bert_config.json, when it sets one
    prompts: dict[str, str] = field(default_factory=dict)

    def module_dirs(self, kind: str) -> list[Path]:
        """The folders of the modules whose type ends in ``kind`` (``"Pooling"``, ``"Normalize"``)."""
        return [self.path / m["path"] for m in self.modules if m["type"].endswith(kind)]

    @property
    def document_prompt(self) -> str:
        return next((self.prompts[n] for n in DOCUMENT_PROMPT_NAMES if n in self.prompts), "")


def read_st_folder(path: str | os.PathLike[str], *, require_st_config: bool = True) -> StFolder:
    """``modules.json``, the Transformer module's folder and window, and the saved prompts.

    The one parser of a sentence-transformers folder (the encoder and the token window use
    it). ``require_st_config=False`` accepts a folder without ``config_sentence_transformers.json``."""
    path = Path(path)
    modules = read_json(path / "modules.json")
    transformer = next((m for m in modules if m.get("type", "").endswith("Transformer")), None)
    if transformer is None:
        raise ModelFileError(f"{path / 'modules.json'}: no Transformer module")
    transformer_dir = path / transformer["path"]
    bert_config = transformer_dir / "sentence_bert_config.json"
    window = read_json(bert_config).get("max_seq_length") if bert_config.is_file() else None
    st_config_file = path / "config_sentence_transformers.json"
    st_config = read_json(st_config_file) if require_st_config or st_config_file.is_file() else {}
    return StFolder(path=path, modules=modules, transformer_dir=transformer_dir, max_seq_length=window,
                    prompts=dict(st_config.get("prompts") or {}))
