"""What the Haystack components share: the built-in init parameters we accept or refuse, hub loading, checks.

Drop-in parity with the Sentence-Transformers components means every init parameter of the
built-in is accepted, with the built-in's meaning where our model can honour it and a
one-line ``InvalidArgumentError`` naming it where it cannot. Per option:

- ``token`` (a ``Secret``, default ``HF_API_TOKEN``/``HF_TOKEN``): used for ``hf:org/name``
  hub downloads; a local folder or a bundled model needs none, so it is ignored there (as ST does).
- ``revision``: the hub revision of an ``hf:`` model. Refused for a local folder or a bundled
  model, which have no revisions (a silently ignored revision would pin nothing).

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/integrations/haystack/_loading.py``.
"""

from __future__ import annotations

from typing import Any

from haystack import Document, default_from_dict, default_to_dict
from haystack.utils import Secret
from haystack.utils.hf import deserialize_hf_model_kwargs, serialize_hf_model_kwargs

from medeir_rag.errors import InvalidArgumentError, MissingPathError
from medeir_rag.model.files import HUB_PREFIX

# the serialised "type" of every component: the import path users write, whichever module defines it
PUBLIC_MODULE = "medeir_rag.integrations.haystack"
DEFAULT_TOKEN = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False)
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*/*.json"]  # as model_files fetches an hf: model
ENCODE_KWARGS = ("prompt", "prompt_name")


def check_load_options(
    owner: str,
    model: str,
    *,
    revision: str | None,
    model_kwargs: dict[str, Any] | None,
    tokenizer_kwargs: dict[str, Any] | None,
    config_kwargs: dict[str, Any] | None,
    precision_name: str = "compute_precision",
) -> None:
    """Refuse, by name, the built-in loading options our model cannot honour (see the module docstring)."""
    if revision is not None and not is_hub_model(model):
        raise InvalidArgumentError(
            f"{owner}: revision={revision!r} applies to hub models only ({HUB_PREFIX}org/name); "
            f"model {model!r} is a local folder or a bundled model"
        )
    for name, value in (("model_kwargs", model_kwargs), ("tokenizer_kwargs", tokenizer_kwargs),
                        ("config_kwargs", config_kwargs)):
        if value:
            hint = f"; use {precision_name}=... for the dtype" if name == "model_kwargs" else ""
            raise InvalidArgumentError(
                f"{owner}: {name} keys {sorted(value)} are not supported: the medeir model loads with its own "
                f"configuration and tokenizer{hint}"
            )


def check_encode_kwargs(owner: str, encode_kwargs: dict[str, Any] | None) -> None:
    """Only the ST ``encode`` options with a counterpart here (``prompt``, ``prompt_name``)."""
    unknown = sorted(set(encode_kwargs or {}) - set(ENCODE_KWARGS))
    if unknown:
        raise InvalidArgumentError(f"{owner}: encode_kwargs keys {unknown} are not supported (allowed: {ENCODE_KWARGS})")


def is_hub_model(model: str) -> bool:
    return str(model).startswith(HUB_PREFIX)


def local_model(model: str, *, token: Secret | None, revision: str | None, local_files_only: bool) -> str:
    """The local folder of ``model``: itself, or the snapshot of an ``hf:`` model at ``revision``.

    Raises ``MissingPathError`` when the hub model is not available (offline, unknown, private).
    """
    if not is_hub_model(model):
        return model
    repo_id = model.removeprefix(HUB_PREFIX).removeprefix("//")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise MissingPathError(f"{model!r} is not a hub model id; expected {HUB_PREFIX}org/name")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, revision=revision, token=token.resolve_value() if token else None,
            local_files_only=local_files_only, allow_patterns=HUB_PATTERNS,
        )
    except Exception as error:  # offline, unknown repo or revision, no access: all mean "not available here"
        raise MissingPathError(
            f"hub model {repo_id!r} (from model={model!r}, revision={revision!r}) is not available here "
            f"({type(error).__name__}); with HF_HUB_OFFLINE=1 or local_files_only=True only the local hub cache is used"
        ) from error


def serialize_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """``to_dict`` output with ``model_kwargs`` made JSON-safe, as the ST components do."""
    if data["init_parameters"].get("model_kwargs") is not None:
        serialize_hf_model_kwargs(data["init_parameters"]["model_kwargs"])
    return data


def deserialize_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``serialize_kwargs``, before ``default_from_dict``."""
    if data["init_parameters"].get("model_kwargs") is not None:
        deserialize_hf_model_kwargs(data["init_parameters"]["model_kwargs"])
    return data


class StoredParams:
    """``to_dict``/``from_dict`` over the init parameters a component stored with ``_store_params``."""

    _param_names: list[str]

    def _store_params(self, params: dict[str, Any]) -> None:
        # every init parameter under its own name, as Haystack's to_dict expects
        self._param_names = list(params)
        for name, value in params.items():
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return serialize_kwargs(default_to_dict(self, **{name: getattr(self, name) for name in self._param_names}))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, deserialize_kwargs(cls._upgrade(data)))

    @classmethod
    def _upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A saved pipeline's parameters as this version names them (nothing to rename by default)."""
        return data


def meta_text(doc: Document, fields: list[str]) -> list[str]:
    """The ``meta_fields_to_embed`` values of ``doc``, as the ST components join them."""
    return [str(doc.meta[k]) for k in fields if k in doc.meta and doc.meta[k] is not None]


def check_documents(documents: Any, name: str, text_component: str | None = None) -> None:
    """``TypeError`` unless ``documents`` is a list of Documents (the ST components' message)."""
    if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
        hint = f" In case you want to embed a string, please use the {text_component}." if text_component else ""
        raise TypeError(f"{name} expects a list of Documents as input.{hint}")


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
