"""``MedeirSimilarityRanker``: reorders retrieved Documents with the medeir cross-encoder.

Drop-in for ``SentenceTransformersSimilarityRanker``: same parameters (``token``,
``trust_remote_code``, ``model_kwargs``, ``tokenizer_kwargs``, ``config_kwargs`` with the
decisions of ``_loading``), same run arguments, deduplication by id and score scaling.
``precision`` here is the compute precision (``"fp32"|"bf16"|"fp16"|"int8"``, as
``MedeirReranker``'s); the built-in ranker has no ``precision``, so nothing clashes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.precision import check_options
from medeir_rag.integrations._shared import get_reranker
from medeir_rag.integrations.haystack._dense import Backend, ComputePrecision
from medeir_rag.integrations.haystack._loading import (
    DEFAULT_TOKEN,
    PUBLIC_MODULE,
    check_documents,
    check_load_options,
    check_positive,
    deserialize_kwargs,
    local_model,
    meta_text,
    serialize_kwargs,
)
from medeir_rag.integrations.haystack._telemetry import NoTelemetry
from medeir_rag.model.files import DEFAULT_RERANKER_NAME


def _deduplicate(documents: list[Document]) -> list[Document]:
    """One Document per id, keeping the highest-scored copy (order of first appearance)."""
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or (doc.score is not None and (kept.score is None or doc.score > kept.score)):
            best[doc.id] = doc
    return list(best.values())


@component
class MedeirSimilarityRanker(NoTelemetry):
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

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirSimilarityRanker

    def __init__(
        self,
        *,
        model: str = DEFAULT_RERANKER_NAME,
        device: ComponentDevice | None = None,
        token: Secret | None = DEFAULT_TOKEN,
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
        precision: ComputePrecision = "fp32",
        backend: Backend = "torch",
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """
        Create a MedeirSimilarityRanker.

        :param model: a medeir CrossEncoder directory or hub id. The default names the bundled
            reranker, which is not shipped today: `warm_up` (and so the pipeline) then raises a
            `FileNotFoundError` asking for `model=<path to a CrossEncoder folder>`.
        :param device: the device to load the model on; `None` picks one automatically.
        :param token: hub token, used for `hf:` models only.
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
        :param trust_remote_code: accepted, no effect (the model code is this package's own).
        :param model_kwargs: `None` or `{}` (keys are refused: use `precision` for the dtype).
        :param tokenizer_kwargs: `None` or `{}` (use `max_length` for the pair window).
        :param config_kwargs: `None` or `{}`.
        :raises ValueError: if `top_k` is not > 0, or `precision`/`backend` is not one of the names above.
        """
        if top_k <= 0:
            raise InvalidArgumentError(f"top_k must be > 0, but got {top_k}")
        check_positive("batch_size", batch_size)
        check_load_options("MedeirSimilarityRanker", str(model), revision=None, model_kwargs=model_kwargs,
                           tokenizer_kwargs=tokenizer_kwargs, config_kwargs=config_kwargs, precision_name="precision")
        self.model = str(model)
        self.device = ComponentDevice.resolve_device(device)
        self.token = token
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
        self.trust_remote_code = trust_remote_code
        self.model_kwargs = model_kwargs
        self.tokenizer_kwargs = tokenizer_kwargs
        self.config_kwargs = config_kwargs
        self.reranker = None

    def warm_up(self) -> None:
        """Load the cross-encoder."""
        if self.reranker is None:
            model = local_model(self.model, token=self.token, revision=None, local_files_only=False)
            self.reranker = get_reranker(
                model, self.device.to_torch_str(), self.max_length, precision=self.precision, backend=self.backend
            )

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return serialize_kwargs(default_to_dict(
            self,
            model=self.model,
            device=self.device,
            token=self.token,
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
            trust_remote_code=self.trust_remote_code,
            model_kwargs=self.model_kwargs,
            tokenizer_kwargs=self.tokenizer_kwargs,
            config_kwargs=self.config_kwargs,
        ))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirSimilarityRanker:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, deserialize_kwargs(data))

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
        check_documents(documents, "MedeirSimilarityRanker")
        if self.reranker is None:
            self.warm_up()
        if not documents:
            return {"documents": []}
        if top_k is not None and top_k <= 0:
            raise InvalidArgumentError(f"top_k must be > 0, but got {top_k}")
        top_k = self.top_k if top_k is None else top_k
        scale_score = self.scale_score if scale_score is None else scale_score
        score_threshold = self.score_threshold if score_threshold is None else score_threshold

        unique = _deduplicate(documents)
        passages = [
            self.document_prefix
            + self.embedding_separator.join([*meta_text(d, self.meta_fields_to_embed), d.content or ""])
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
