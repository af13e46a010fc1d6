"""``MedeirSparseTextEmbedder`` and ``MedeirSparseDocumentEmbedder``: the store's sparse side as Haystack ``SparseEmbedding``.

Drop-ins for ``SentenceTransformersSparseTextEmbedder``/``...SparseDocumentEmbedder`` (same
init parameters, sockets ``sparse_embedding`` and ``documents``), for
``QdrantSparseEmbeddingRetriever`` and ``QdrantHybridRetriever``.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/integrations/haystack/sparse_embedders.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component
from haystack.dataclasses import SparseEmbedding
from haystack.utils import ComponentDevice, Secret
from tqdm.auto import tqdm

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.precision import BACKENDS
from medeir_rag.integrations._shared import get_token_window
from medeir_rag.integrations.haystack._dense import Backend
from medeir_rag.integrations.haystack._loading import (
    DEFAULT_TOKEN,
    PUBLIC_MODULE,
    StoredParams,
    check_documents,
    check_load_options,
    check_positive,
    local_model,
    meta_text,
)
from medeir_rag.integrations.haystack._telemetry import NoTelemetry
from medeir_rag.model.files import DEFAULT_MODEL_NAME
from medeir_rag.rag.store import sparse_document_vectors, sparse_query_vector

# what QdrantDocumentStore needs for these vectors: sparse vectors with Qdrant's IDF modifier
QDRANT_SPARSE_OPTIONS: dict[str, bool] = {"use_sparse_embeddings": True, "sparse_idf": True}


class SparseEmbedderBase(NoTelemetry, StoredParams):
    """Shared state of the two sparse embedders: the tokenizer of ``model``."""

    def _setup(self, owner: str, **params: Any) -> None:
        if "batch_size" in params:
            check_positive("batch_size", params["batch_size"])
        if params["backend"] not in BACKENDS:
            raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {params['backend']!r}")
        params["model"] = str(params["model"])
        check_load_options(owner, params["model"], revision=params["revision"], model_kwargs=params["model_kwargs"],
                           tokenizer_kwargs=params["tokenizer_kwargs"], config_kwargs=params["config_kwargs"])
        params["device"] = ComponentDevice.resolve_device(params["device"])
        self._store_params(params)
        self.tokenizer = None

    def warm_up(self) -> None:
        """Load the model's tokenizer (shared with the splitter of the same model); no weights."""
        if self.tokenizer is None:
            path = local_model(self.model, token=self.token, revision=self.revision,
                               local_files_only=self.local_files_only)
            self.tokenizer = get_token_window(path).tokenizer



@component
class MedeirSparseTextEmbedder(SparseEmbedderBase):
    """
    Embeds a string (a query) as the sparse vector `MedeirVectorStore` queries with.

    Usage example:

    ```python
    from medeir_rag.integrations.haystack import MedeirSparseTextEmbedder

    embedder = MedeirSparseTextEmbedder(model="path/to/medeir-st")
    print(embedder.run("metformin dose")["sparse_embedding"])
    ```
    """

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirSparseTextEmbedder

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL_NAME,
        device: ComponentDevice | None = None,
        token: Secret | None = DEFAULT_TOKEN,
        prefix: str = "",
        suffix: str = "",
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: Backend = "torch",
        revision: str | None = None,
    ) -> None:
        """
        Create a MedeirSparseTextEmbedder (parameters as `SentenceTransformersSparseTextEmbedder`'s;
        `medeir_rag.integrations.haystack._loading` lists what each does here).

        :param model: a medeir sentence-transformers directory, or `hf:org/name` (default: the bundled model).
        :param device: accepted, no effect (tokenisation only).
        :param token: hub token, used for `hf:` models only.
        :param prefix: a string added before the text.
        :param suffix: a string added after the text.
        :param trust_remote_code: accepted, no effect.
        :param local_files_only: `hf:` models from the local hub cache only.
        :param model_kwargs: `None` or `{}`.
        :param tokenizer_kwargs: `None` or `{}`.
        :param config_kwargs: `None` or `{}`.
        :param backend: `"torch"` or `"onnx"`, accepted, no effect.
        :param revision: hub revision of an `hf:` model (refused for a local folder).
        """
        SparseEmbedderBase._setup(
            self, "MedeirSparseTextEmbedder", model=model, device=device, token=token, prefix=prefix, suffix=suffix,
            trust_remote_code=trust_remote_code, local_files_only=local_files_only, model_kwargs=model_kwargs,
            tokenizer_kwargs=tokenizer_kwargs, config_kwargs=config_kwargs, backend=backend,
            revision=revision,
        )

    @component.output_types(sparse_embedding=SparseEmbedding)
    def run(self, text: str) -> dict[str, Any]:
        """
        Embed a single string.

        :param text: Text to embed.
        :returns: A dictionary with the key `sparse_embedding`: the query's `SparseEmbedding`.
        :raises TypeError: if `text` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(
                "MedeirSparseTextEmbedder expects a string as input. "
                "In case you want to embed a list of Documents, please use the MedeirSparseDocumentEmbedder."
            )
        if self.tokenizer is None:
            self.warm_up()
        indices, values = sparse_query_vector(self.tokenizer, self.prefix + text + self.suffix)
        return {"sparse_embedding": SparseEmbedding(indices=indices, values=values)}


@component
class MedeirSparseDocumentEmbedder(SparseEmbedderBase):
    """
    Embeds Documents as the sparse vectors `MedeirVectorStore` stores (each copy's `sparse_embedding`).

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirSparseDocumentEmbedder

    embedder = MedeirSparseDocumentEmbedder(model="path/to/medeir-st")
    print(embedder.run([Document(content="Metformin lowers glucose.")])["documents"][0].sparse_embedding)
    ```
    """

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirSparseDocumentEmbedder

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL_NAME,
        device: ComponentDevice | None = None,
        token: Secret | None = DEFAULT_TOKEN,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        backend: Backend = "torch",
        revision: str | None = None,
    ) -> None:
        """
        Create a MedeirSparseDocumentEmbedder (parameters as `SentenceTransformersSparseDocumentEmbedder`'s;
        `medeir_rag.integrations.haystack._loading` lists what each does here).

        :param model: a medeir sentence-transformers directory, or `hf:org/name` (default: the bundled model).
        :param device: accepted, no effect (tokenisation only).
        :param token: hub token, used for `hf:` models only.
        :param prefix: a string added before each document text.
        :param suffix: a string added after each document text.
        :param batch_size: documents tokenised at once.
        :param progress_bar: show a progress bar over the batches.
        :param meta_fields_to_embed: metadata fields embedded together with the content.
        :param embedding_separator: separator between those fields and the content
            (`" "` with `["title"]` is how `MedeirVectorStore` joins a title).
        :param trust_remote_code: accepted, no effect.
        :param local_files_only: `hf:` models from the local hub cache only.
        :param model_kwargs: `None` or `{}`.
        :param tokenizer_kwargs: `None` or `{}`.
        :param config_kwargs: `None` or `{}`.
        :param backend: `"torch"` or `"onnx"`, accepted, no effect.
        :param revision: hub revision of an `hf:` model (refused for a local folder).
        """
        SparseEmbedderBase._setup(
            self, "MedeirSparseDocumentEmbedder", model=model, device=device, token=token, prefix=prefix,
            suffix=suffix, batch_size=batch_size, progress_bar=progress_bar,
            meta_fields_to_embed=meta_fields_to_embed or [], embedding_separator=embedding_separator,
            trust_remote_code=trust_remote_code, local_files_only=local_files_only, model_kwargs=model_kwargs,
            tokenizer_kwargs=tokenizer_kwargs, config_kwargs=config_kwargs, backend=backend, revision=revision,
        )

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embed a list of Documents.

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`: copies with `sparse_embedding` set.
        :raises TypeError: if the input is not a list of Documents.
        """
        check_documents(documents, "MedeirSparseDocumentEmbedder", "MedeirSparseTextEmbedder")
        if self.tokenizer is None:
            self.warm_up()
        texts = [
            self.prefix + self.embedding_separator.join([*meta_text(d, self.meta_fields_to_embed), d.content or ""])
            + self.suffix
            for d in documents
        ]
        vectors: list[tuple[list[int], list[float]]] = []
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, disable=not self.progress_bar, desc="Sparse embeddings", unit="batch"):
            vectors.extend(sparse_document_vectors(self.tokenizer, texts[start : start + self.batch_size]))
        return {
            "documents": [
                replace(doc, sparse_embedding=SparseEmbedding(indices=indices, values=values))
                for doc, (indices, values) in zip(documents, vectors, strict=True)
            ]
        }
