"""Haystack components: ``MedeirTextEmbedder``, ``MedeirDocumentEmbedder``, ``MedeirSimilarityRanker``,
``MedeirDocumentSplitter``.

Drop-in replacements for sentence-transformers-haystack's ``SentenceTransformersTextEmbedder``,
``SentenceTransformersDocumentEmbedder`` and ``SentenceTransformersSimilarityRanker`` and for
core's ``DocumentSplitter(split_by="token")``: same parameter names (``prefix``, ``suffix``,
``batch_size``, ``progress_bar``, ``normalize_embeddings``, ``truncate_dim``, ``device``,
``meta_fields_to_embed``, ``embedding_separator``, ``top_k``, ``scale_score``,
``score_threshold``, ``split_length``, ``split_overlap``), same sockets, same output metadata.

Usage example:

```python
from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore
from medeir_rag.integrations.haystack import MedeirDocumentEmbedder, MedeirDocumentSplitter

store = QdrantDocumentStore(location=":memory:", embedding_dim=768, similarity="cosine")
indexing = Pipeline()
indexing.add_component("splitter", MedeirDocumentSplitter(model="path/to/medeir-st", split_length=2048))
indexing.add_component("embedder", MedeirDocumentEmbedder(model="path/to/medeir-st"))
indexing.add_component("writer", DocumentWriter(document_store=store))
indexing.connect("splitter", "embedder")
indexing.connect("embedder", "writer")
indexing.run({"splitter": {"documents": [Document(content="Metformin lowers glucose.")]}})
```

Design choices:

- Keyword-only ``__init__``; every parameter is stored under its own name and serialised by
  ``to_dict``; models load in ``warm_up`` (which ``run`` also calls when needed) from a
  process-wide cache, so a text and a document embedder share one model.
- The model's saved prompts are applied by name: ``prompt_name="query"`` for the text
  embedder, ``"document"`` for the document embedder (``None`` turns them off); ``prefix``
  and ``suffix`` are added around the text as in the ST components.
- ``precision`` (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"int8"``) and ``backend`` (``"torch"``,
  ``"onnx"``) are ``MedeirEncoder``'s/``MedeirReranker``'s (``medeir_rag.precision``). The old
  ``dtype`` argument still loads (an older pipeline file has it): it warns and becomes
  ``precision``; ``to_dict`` writes ``precision`` and ``backend``, no ``dtype``.
- ``normalize_embeddings=False`` keeps the model's own setting (medeir models normalise);
  ``True`` forces L2 normalisation.
- Documents are never mutated: outputs are ``dataclasses.replace`` copies.
- The splitter counts the ``meta_fields_to_embed`` values that the document embedder will
  prepend against ``split_length``, and ``split_length`` must fit the model window with the
  document prompt, so a chunk is never truncated by the embedder. It writes Haystack's
  ``source_id``, ``page_number``, ``split_id``, ``split_idx_start`` (and ``_split_overlap`` when
  ``split_overlap > 0``), plus ``split_idx_end``; ``content == parent[split_idx_start:split_idx_end]``.
- **Privacy by default.** Haystack sends usage telemetry (to PostHog) unless
  ``HAYSTACK_TELEMETRY_ENABLED`` says otherwise, and reads that variable once, when
  ``haystack.telemetry`` is first imported. Importing this module turns telemetry off unless
  the user set the variable themselves: it sets ``HAYSTACK_TELEMETRY_ENABLED=False`` before
  haystack is imported and, when haystack was imported earlier, switches off the telemetry
  client haystack already made. Set ``HAYSTACK_TELEMETRY_ENABLED=True`` to opt in; even then
  these components add nothing to the events (``_get_telemetry_data`` is empty: no model path).
"""

from __future__ import annotations

import logging
import os
import sys
from copy import deepcopy
from dataclasses import replace
from typing import Any, Literal

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # before haystack reads it, at its import

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.utils import ComponentDevice
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"haystack-ai is not installed ({error}); install it with: pip install 'medeir_rag[haystack]'"
    ) from error

from medeir_rag.chunking import DEFAULT_BOUNDARY_FRACTION, chunk_text, count_tokens
from medeir_rag.encode import OVERLONG_POLICIES
from medeir_rag.integrations._shared import get_encoder, get_reranker, get_token_window
from medeir_rag.model_files import DEFAULT_MODEL_NAME, DEFAULT_RERANKER_NAME
from medeir_rag.precision import check_options

if os.environ["HAYSTACK_TELEMETRY_ENABLED"].lower() not in ("true", "1"):
    # not opted in, but haystack was imported before this module and made its client already
    _haystack_telemetry = sys.modules.get("haystack.telemetry._telemetry")
    if getattr(_haystack_telemetry, "telemetry", None) is not None:
        _haystack_telemetry.telemetry = None

logger = logging.getLogger(__name__)

Dtype = Literal["float32", "float16", "bfloat16"]  # deprecated: Precision
Precision = Literal["fp32", "bf16", "fp16", "int8"]
Backend = Literal["torch", "onnx"]
Overlong = Literal["truncate", "chunk", "error"]


def _check_common(batch_size: int, truncate_dim: int | None, overlong: str) -> None:
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if truncate_dim is not None and (not isinstance(truncate_dim, int) or truncate_dim <= 0):
        raise ValueError(f"truncate_dim must be a positive integer or None, got {truncate_dim!r}")
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")


def _meta_text(doc: Document, fields: list[str]) -> list[str]:
    return [str(doc.meta[k]) for k in fields if k in doc.meta and doc.meta[k] is not None]


def _check_documents(documents: Any, name: str) -> None:
    if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
        raise TypeError(
            f"{name} expects a list of Documents as input. In case you want to embed a string, "
            "please use the MedeirTextEmbedder."
            if name == "MedeirDocumentEmbedder"
            else f"{name} expects a list of Documents as input."
        )


class _EmbedderBase:
    """Shared state and encoding of the two embedders."""

    def __init__(
        self,
        *,
        model: str,
        device: ComponentDevice | None,
        prefix: str,
        suffix: str,
        batch_size: int,
        progress_bar: bool,
        normalize_embeddings: bool,
        truncate_dim: int | None,
        prompt_name: str | None,
        precision: Precision,
        backend: Backend,
        dtype: Dtype | None,
        overlong: Overlong,
        owner: str,
    ) -> None:
        _check_common(batch_size, truncate_dim, overlong)
        precision = check_options(precision, backend, dtype=dtype, owner=owner)
        self.model = str(model)
        self.device = ComponentDevice.resolve_device(device)
        self.prefix = prefix
        self.suffix = suffix
        self.batch_size = batch_size
        self.progress_bar = progress_bar
        self.normalize_embeddings = normalize_embeddings
        self.truncate_dim = truncate_dim
        self.prompt_name = prompt_name
        self.precision = precision
        self.backend = backend
        self.overlong = overlong
        self.encoder = None
        self._prompt = ""

    def _get_telemetry_data(self) -> dict[str, Any]:
        # nothing about the model (a local path can name a patient folder) goes into telemetry
        return {}

    def warm_up(self) -> None:
        """Load the model (shared with other components that use the same one)."""
        if self.encoder is not None:
            return
        encoder = get_encoder(self.model, self.device.to_torch_str(), precision=self.precision, backend=self.backend)
        if self.prompt_name is None:
            prompt = ""
        elif self.prompt_name in encoder.prompts:
            prompt = encoder.prompts[self.prompt_name]
        elif self.prompt_name == "document":
            prompt = encoder.document_prompt
        else:
            raise ValueError(
                f"model {self.model!r} has no prompt named {self.prompt_name!r}; saved prompts: "
                f"{sorted(encoder.prompts)} (pass prompt_name=None for none)"
            )
        hidden = encoder.model.config.hidden_size
        if self.truncate_dim is not None and self.truncate_dim > hidden:
            raise ValueError(f"truncate_dim must be at most {hidden} for model {self.model!r}, got {self.truncate_dim}")
        self._prompt = prompt
        self.encoder = encoder

    @property
    def embedding_dimension(self) -> int:
        """Size of the embeddings (after ``truncate_dim``); loads the model if needed."""
        self.warm_up()
        return self.truncate_dim or self.encoder.model.config.hidden_size

    def _embed(self, texts: list[str]) -> list[list[float]]:
        # every text in one call, so the encoder sorts them all by length before batching;
        # batch_size caps the texts per forward pass
        embeddings = self.encoder.encode(
            texts, prompt=self._prompt, truncate_dim=self.truncate_dim,
            normalize=True if self.normalize_embeddings else None, overlong=self.overlong,
            show_progress=self.progress_bar, max_batch_size=self.batch_size,
        )
        return embeddings.tolist()

    def _init_parameters(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "prefix": self.prefix,
            "suffix": self.suffix,
            "batch_size": self.batch_size,
            "progress_bar": self.progress_bar,
            "normalize_embeddings": self.normalize_embeddings,
            "truncate_dim": self.truncate_dim,
            "prompt_name": self.prompt_name,
            "precision": self.precision,
            "backend": self.backend,
            "overlong": self.overlong,
        }


# ----------------------------------------------------------------------------
# Embedders


@component
class MedeirTextEmbedder(_EmbedderBase):
    """
    Embeds a string (a query) with a medeir model.

    Usage example:

    ```python
    from medeir_rag.integrations.haystack import MedeirTextEmbedder

    embedder = MedeirTextEmbedder(model="path/to/medeir-st")
    print(embedder.run("first-line drug for type 2 diabetes")["embedding"][:4])
    ```
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL_NAME,
        device: ComponentDevice | None = None,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        prompt_name: str | None = "query",
        precision: Precision = "fp32",
        backend: Backend = "torch",
        dtype: Dtype | None = None,
        overlong: Overlong = "truncate",
    ) -> None:
        """
        Create a MedeirTextEmbedder.

        :param model: a medeir sentence-transformers directory, or `hf:org/name` for a hub model
            (default: the bundled model).
        :param device: the device to load the model on; `None` picks one automatically.
        :param prefix: a string added before the text (after the model's prompt).
        :param suffix: a string added after the text.
        :param batch_size: the most texts per forward pass (all texts are sorted by length and
            batched by token budget in one encode call).
        :param progress_bar: show a progress bar.
        :param normalize_embeddings: force L2 normalisation (`False` keeps the model's setting).
        :param truncate_dim: Matryoshka dimension; `None` keeps the full vector.
        :param prompt_name: the saved prompt to prepend (`"query"`); `None` for none.
        :param precision: `"fp32"` (default), `"bf16"`, `"fp16"` (GPUs) or `"int8"` (see `medeir_rag.precision`).
        :param backend: `"torch"` (default) or `"onnx"` (the model folder's `onnx/` export, from `medeir export --onnx`).
        :param dtype: deprecated spelling of `precision` (`"float32"`, `"float16"`, `"bfloat16"`); warns.
        :param overlong: text over the model window: `"truncate"` (with a warning), `"chunk"` or `"error"`.
        """
        # the @component decorator rebuilds the class, so zero-argument super() cannot be used
        _EmbedderBase.__init__(
            self, model=model, device=device, prefix=prefix, suffix=suffix, batch_size=batch_size,
            progress_bar=progress_bar, normalize_embeddings=normalize_embeddings, truncate_dim=truncate_dim,
            prompt_name=prompt_name, precision=precision, backend=backend, dtype=dtype, overlong=overlong,
            owner="MedeirTextEmbedder",
        )

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(self, **self._init_parameters())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirTextEmbedder:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, data)

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """
        Embed a single string.

        :param text: Text to embed.
        :returns: A dictionary with the key `embedding`: the embedding of the text.
        :raises TypeError: if `text` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(
                "MedeirTextEmbedder expects a string as input. "
                "In case you want to embed a list of Documents, please use the MedeirDocumentEmbedder."
            )
        if self.encoder is None:
            self.warm_up()
        return {"embedding": self._embed([self.prefix + text + self.suffix])[0]}


@component
class MedeirDocumentEmbedder(_EmbedderBase):
    """
    Embeds Documents with a medeir model; the embedding goes to each Document's `embedding` field.

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirDocumentEmbedder

    embedder = MedeirDocumentEmbedder(model="path/to/medeir-st", meta_fields_to_embed=["title"])
    docs = embedder.run([Document(content="Metformin lowers glucose.", meta={"title": "Metformin"})])["documents"]
    print(docs[0].embedding[:4])
    ```
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL_NAME,
        device: ComponentDevice | None = None,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        normalize_embeddings: bool = False,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        truncate_dim: int | None = None,
        prompt_name: str | None = "document",
        precision: Precision = "fp32",
        backend: Backend = "torch",
        dtype: Dtype | None = None,
        overlong: Overlong = "truncate",
    ) -> None:
        """
        Create a MedeirDocumentEmbedder.

        :param model: a medeir sentence-transformers directory, or `hf:org/name` for a hub model
            (default: the bundled model).
        :param device: the device to load the model on; `None` picks one automatically.
        :param prefix: a string added before each document text (after the model's prompt).
        :param suffix: a string added after each document text.
        :param batch_size: the most documents per forward pass (all documents are sorted by length
            and batched by token budget in one encode call).
        :param progress_bar: show a progress bar.
        :param normalize_embeddings: force L2 normalisation (`False` keeps the model's setting).
        :param meta_fields_to_embed: metadata fields embedded together with the content.
        :param embedding_separator: separator between those fields and the content.
        :param truncate_dim: Matryoshka dimension; `None` keeps the full vector.
        :param prompt_name: the saved prompt to prepend (`"document"`); `None` for none.
        :param precision: `"fp32"` (default), `"bf16"`, `"fp16"` (GPUs) or `"int8"` (see `medeir_rag.precision`).
        :param backend: `"torch"` (default) or `"onnx"` (the model folder's `onnx/` export, from `medeir export --onnx`).
        :param dtype: deprecated spelling of `precision` (`"float32"`, `"float16"`, `"bfloat16"`); warns.
        :param overlong: documents over the model window: `"truncate"` (with a warning), `"chunk"` or `"error"`.
        """
        # the @component decorator rebuilds the class, so zero-argument super() cannot be used
        _EmbedderBase.__init__(
            self, model=model, device=device, prefix=prefix, suffix=suffix, batch_size=batch_size,
            progress_bar=progress_bar, normalize_embeddings=normalize_embeddings, truncate_dim=truncate_dim,
            prompt_name=prompt_name, precision=precision, backend=backend, dtype=dtype, overlong=overlong,
            owner="MedeirDocumentEmbedder",
        )
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self, **self._init_parameters(), meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirDocumentEmbedder:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, data)

    def _text(self, doc: Document) -> str:
        fields = _meta_text(doc, self.meta_fields_to_embed)
        return self.prefix + self.embedding_separator.join([*fields, doc.content or ""]) + self.suffix

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embed a list of Documents.

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`: copies of the Documents with their embeddings.
        :raises TypeError: if the input is not a list of Documents.
        """
        _check_documents(documents, "MedeirDocumentEmbedder")
        if self.encoder is None:
            self.warm_up()
        if not documents:
            return {"documents": []}
        embeddings = self._embed([self._text(doc) for doc in documents])
        return {"documents": [replace(doc, embedding=emb) for doc, emb in zip(documents, embeddings, strict=True)]}


# ----------------------------------------------------------------------------
# Ranker


def _deduplicate(documents: list[Document]) -> list[Document]:
    """One Document per id, keeping the highest-scored copy (order of first appearance)."""
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or (doc.score is not None and (kept.score is None or doc.score > kept.score)):
            best[doc.id] = doc
    return list(best.values())


@component
class MedeirSimilarityRanker:
    """
    Ranks Documents by their relevance to a query with the medeir cross-encoder.

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirSimilarityRanker

    ranker = MedeirSimilarityRanker(model="path/to/medeir-reranker", top_k=3)
    docs = [Document(content="Gout and colchicine"), Document(content="Asthma inhalers")]
    print(ranker.run(query="asthma treatment", documents=docs)["documents"][0].content)
    ```
    """

    def __init__(
        self,
        *,
        model: str = DEFAULT_RERANKER_NAME,
        device: ComponentDevice | None = None,
        top_k: int = 10,
        query_prefix: str = "",
        query_suffix: str = "",
        document_prefix: str = "",
        document_suffix: str = "",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        scale_score: bool = True,
        score_threshold: float | None = None,
        batch_size: int = 16,
        max_length: int | None = None,
        precision: Precision = "fp32",
        backend: Backend = "torch",
    ) -> None:
        """
        Create a MedeirSimilarityRanker.

        :param model: a medeir CrossEncoder directory or hub id. The default names the bundled
            reranker, which is not shipped today: `warm_up` (and so the pipeline) then raises a
            `FileNotFoundError` asking for `model=<path to a CrossEncoder folder>`.
        :param device: the device to load the model on; `None` picks one automatically.
        :param top_k: the most Documents to return.
        :param query_prefix: a string added before the query.
        :param query_suffix: a string added after the query.
        :param document_prefix: a string added before each document text.
        :param document_suffix: a string added after each document text.
        :param meta_fields_to_embed: metadata fields scored together with the content.
        :param embedding_separator: separator between those fields and the content.
        :param scale_score: apply a sigmoid to the logits (scores in 0..1).
        :param score_threshold: drop Documents scoring below this.
        :param batch_size: pairs per forward pass.
        :param max_length: pair window in tokens (default: the one saved with the model).
        :param precision: `"fp32"` (default), `"bf16"`, `"fp16"` (GPUs) or `"int8"`.
        :param backend: `"torch"` (default) or `"onnx"` (the reranker folder's `onnx/` export).
        :raises ValueError: if `top_k` is not > 0, or `precision`/`backend` is not one of the names above.
        """
        if top_k <= 0:
            raise ValueError(f"top_k must be > 0, but got {top_k}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = str(model)
        self.device = ComponentDevice.resolve_device(device)
        self.top_k = top_k
        self.query_prefix = query_prefix
        self.query_suffix = query_suffix
        self.document_prefix = document_prefix
        self.document_suffix = document_suffix
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.scale_score = scale_score
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.max_length = max_length
        self.precision = check_options(precision, backend, owner="MedeirSimilarityRanker")
        self.backend = backend
        self.reranker = None

    def _get_telemetry_data(self) -> dict[str, Any]:
        # nothing about the model (a local path can name a patient folder) goes into telemetry
        return {}

    def warm_up(self) -> None:
        """Load the cross-encoder."""
        if self.reranker is None:
            self.reranker = get_reranker(
                self.model, self.device.to_torch_str(), self.max_length, precision=self.precision, backend=self.backend
            )

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            device=self.device,
            top_k=self.top_k,
            query_prefix=self.query_prefix,
            query_suffix=self.query_suffix,
            document_prefix=self.document_prefix,
            document_suffix=self.document_suffix,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            scale_score=self.scale_score,
            score_threshold=self.score_threshold,
            batch_size=self.batch_size,
            max_length=self.max_length,
            precision=self.precision,
            backend=self.backend,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirSimilarityRanker:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        scale_score: bool | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """
        Rank Documents by relevance to the query. Documents are first deduplicated by id,
        keeping the copy with the highest score.

        :param query: the query.
        :param documents: the Documents to rank.
        :param top_k: overrides the init value.
        :param scale_score: overrides the init value.
        :param score_threshold: overrides the init value.
        :returns: A dictionary with the key `documents`: copies with `score` set, best first.
        :raises ValueError: if `top_k` is not > 0.
        :raises TypeError: if `query` is not a string or `documents` not a list of Documents.
        """
        if not isinstance(query, str):
            raise TypeError("MedeirSimilarityRanker expects the query to be a string.")
        _check_documents(documents, "MedeirSimilarityRanker")
        if self.reranker is None:
            self.warm_up()
        if not documents:
            return {"documents": []}
        if top_k is not None and top_k <= 0:
            raise ValueError(f"top_k must be > 0, but got {top_k}")
        top_k = self.top_k if top_k is None else top_k
        scale_score = self.scale_score if scale_score is None else scale_score
        score_threshold = self.score_threshold if score_threshold is None else score_threshold

        unique = _deduplicate(documents)
        passages = [
            self.document_prefix
            + self.embedding_separator.join([*_meta_text(d, self.meta_fields_to_embed), d.content or ""])
            + self.document_suffix
            for d in unique
        ]
        scores = self.reranker.score(
            self.query_prefix + query + self.query_suffix, passages, batch_size=self.batch_size, scale_score=scale_score
        )
        ranked = sorted(
            (replace(doc, score=float(score)) for doc, score in zip(unique, scores, strict=True)),
            key=lambda d: -d.score,
        )
        if score_threshold is not None:
            ranked = [d for d in ranked if d.score >= score_threshold]
        return {"documents": ranked[:top_k]}


# ----------------------------------------------------------------------------
# Splitter


@component
class MedeirDocumentSplitter:
    """
    Splits Documents into windows of the medical tokenizer's tokens, up to the model's long window.

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirDocumentSplitter

    splitter = MedeirDocumentSplitter(model="path/to/medeir-st", split_length=1024, split_overlap=64)
    chunks = splitter.run([Document(content="A long PubMed abstract ...")])["documents"]
    ```
    """

    def __init__(
        self,
        *,
        model: str | None = None,
        split_length: int | None = None,
        split_overlap: int = 0,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        skip_empty_documents: bool = True,
        boundary_fraction: float = DEFAULT_BOUNDARY_FRACTION,
    ) -> None:
        """
        Create a MedeirDocumentSplitter.

        :param model: the model whose tokenizer, window and document prompt apply; `None` uses the
            tokenizer shipped with the package and its 8,192-token window.
        :param split_length: tokens per chunk, including the `meta_fields_to_embed` values;
            `None` is the whole window (minus special tokens and the document prompt).
        :param split_overlap: tokens repeated at the start of the next chunk.
        :param meta_fields_to_embed: the metadata fields the document embedder will prepend
            (their tokens count against `split_length`).
        :param embedding_separator: the separator the document embedder will use.
        :param skip_empty_documents: skip Documents without any token (empty or whitespace-only).
        :param boundary_fraction: look back this share of a window for a paragraph or sentence end.
        """
        if split_length is not None and (not isinstance(split_length, int) or split_length <= 0):
            raise ValueError(f"split_length must be a positive integer or None, got {split_length!r}")
        if not isinstance(split_overlap, int) or split_overlap < 0:
            raise ValueError(f"split_overlap must be a non-negative integer, got {split_overlap!r}")
        if split_length is not None and split_overlap >= split_length:
            raise ValueError(f"split_overlap ({split_overlap}) must be smaller than split_length ({split_length})")
        if not 0 <= boundary_fraction < 1:
            raise ValueError(f"boundary_fraction must be in [0, 1), got {boundary_fraction}")
        self.model = None if model is None else str(model)
        self.split_length = split_length
        self.split_overlap = split_overlap
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.skip_empty_documents = skip_empty_documents
        self.boundary_fraction = boundary_fraction
        self.window = None
        self._length = 0

    def warm_up(self) -> None:
        """Load the tokenizer and check that `split_length` fits the model window."""
        if self.window is None:
            window = get_token_window(self.model)
            self._length = window.resolve_chunk_size(self.split_length)
            if self.split_overlap >= self._length:
                raise ValueError(f"split_overlap ({self.split_overlap}) must be smaller than {self._length}")
            self.window = window

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            split_length=self.split_length,
            split_overlap=self.split_overlap,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            skip_empty_documents=self.skip_empty_documents,
            boundary_fraction=self.boundary_fraction,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirDocumentSplitter:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, data)

    def _split(self, doc: Document) -> list[Document]:
        tokenizer = self.window.tokenizer
        fields = _meta_text(doc, self.meta_fields_to_embed)
        reserved = count_tokens(tokenizer, self.embedding_separator.join(fields)) if fields else 0
        budget = self._length - reserved
        if budget <= 0:
            raise ValueError(
                f"the metadata fields {self.meta_fields_to_embed} of document {doc.id} take {reserved} tokens, "
                f"not less than split_length={self._length}"
            )
        text = doc.content
        chunks = chunk_text(
            text, tokenizer, self._length, min(self.split_overlap, budget - 1), reserved_tokens=reserved,
            boundary_fraction=self.boundary_fraction,
        )
        if not chunks and not self.skip_empty_documents:
            chunks_spans = [("", 0, 0)]
        else:
            chunks_spans = [(c.text, c.start, c.end) for c in chunks]
        documents: list[Document] = []
        for index, (content, start, end) in enumerate(chunks_spans):
            meta = deepcopy(doc.meta)
            meta["source_id"] = doc.id
            meta["page_number"] = text.count("\f", 0, start) + 1
            meta["split_id"] = index
            meta["split_idx_start"] = start
            meta["split_idx_end"] = end
            new = Document(content=content, meta=meta)
            documents.append(new)
            if self.split_overlap <= 0:
                continue
            new.meta["_split_overlap"] = []
            if index == 0:
                continue
            previous = documents[index - 1]
            previous_start, previous_end = chunks_spans[index - 1][1], chunks_spans[index - 1][2]
            if start < previous_end:  # same bookkeeping as haystack's DocumentSplitter
                overlap = (start - previous_start, previous_end - previous_start)
                new.meta["_split_overlap"].append({"doc_id": previous.id, "range": overlap})
                previous.meta["_split_overlap"].append({"doc_id": new.id, "range": (0, previous_end - start)})
        return documents

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Split Documents into token windows.

        :param documents: the Documents to split.
        :returns: A dictionary with the key `documents`: the chunks, each with `source_id`,
            `page_number`, `split_id`, `split_idx_start`, `split_idx_end` (and `_split_overlap`
            when `split_overlap > 0`) added to a copy of its parent's metadata.
        :raises TypeError: if the input is not a list of Documents.
        :raises ValueError: if a Document's content is None.
        """
        _check_documents(documents, "MedeirDocumentSplitter")
        if self.window is None:
            self.warm_up()
        split: list[Document] = []
        for doc in documents:
            if doc.content is None:
                raise ValueError(
                    f"MedeirDocumentSplitter only works with text documents but content for document ID {doc.id} is None."
                )
            chunks = self._split(doc)
            if not chunks:
                logger.warning("Document ID %s has no text to split (empty or whitespace). Skipping it.", doc.id)
            split.extend(chunks)
        return {"documents": split}


__all__ = ["MedeirDocumentEmbedder", "MedeirDocumentSplitter", "MedeirSimilarityRanker", "MedeirTextEmbedder"]
