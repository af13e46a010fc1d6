"""LlamaIndex components: ``MedeirEmbedding``, ``MedeirTokenWindowSplitter``, ``MedeirRerank``, hybrid Qdrant.

Drop-in replacements for ``HuggingFaceEmbedding``, ``SentenceSplitter``/``TokenTextSplitter``
and ``SentenceTransformerRerank``, with the same parameter names::

    from llama_index.core import Settings, VectorStoreIndex
    from medeir_rag.integrations.llama_index import MedeirEmbedding, MedeirRerank, MedeirTokenWindowSplitter

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/integrations/llama_index.py``.
"""

import asyncio
import difflib
import logging
from collections.abc import Callable, Sequence
from typing import Any

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
    from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.node_parser.interface import MetadataAwareTextSplitter
    from llama_index.core.node_parser.node_utils import build_nodes_from_splits
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
    from llama_index.core.utils import get_tqdm_iterable
    from llama_index.core.vector_stores.types import VectorStoreQueryResult
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"llama-index-core is not installed ({error}); install it with: pip install 'medeir_rag[llamaindex]'"
    ) from error

from medeir_rag.errors import InvalidArgumentError, check_text
from medeir_rag.inference.encode import OVERLONG_POLICIES, check_truncate_dim, encode
from medeir_rag.inference.precision import DEFAULT_PRECISION, check_options
from medeir_rag.integrations._shared import get_encoder, get_reranker, get_token_window
from medeir_rag.model.files import DEFAULT_MODEL_NAME, DEFAULT_RERANKER_NAME, resolve_model_path
from medeir_rag.rag.chunking import (
    DEFAULT_BOUNDARY_FRACTION,
    DEFAULT_CHUNK_SIZE,
    Chunk,
    chunk_text,
    count_tokens,
)
from medeir_rag.rag.fusion import convex_combination, load_hybrid_weights

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

DEFAULT_EMBED_BATCH_SIZE = 64
SMALL_CHUNK_WARNING = 50

BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]  # llama_index.vector_stores.qdrant.utils'


def _refuse_unknown(owner: str, given: Sequence[str], known: Sequence[str]) -> None:
    """Raise ``InvalidArgumentError`` naming the first option of ``given`` that is not in ``known``."""
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(sorted(known))}"
            raise InvalidArgumentError(f"{owner} got an unknown option {name!r}{hint}")


# ----------------------------------------------------------------------------
# Embedding


class MedeirEmbedding(BaseEmbedding):
    """medeir embeddings for LlamaIndex (parameters as in ``HuggingFaceEmbedding``).

    Args:
        model_name: a medeir sentence-transformers directory or ``hf:org/name`` hub id; ``None`` is the
            model bundled with the package.
        max_length: window in tokens (special tokens included); default the model's (8,192).
        query_instruction: prepended to queries; default the model's ``query`` prompt.
        text_instruction: prepended to documents; default its document prompt.
        normalize: L2-normalise (after ``truncate_dim``).
        embed_batch_size: texts per call (the encoder batches by tokens inside a call).
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        show_progress_bar: progress bar inside each call.
        truncate_dim: Matryoshka dimension.
        precision: ``"auto"`` (default: bf16 where the hardware runs it natively, else fp32),
            ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPUs) or ``"int8"`` (see
            ``medeir_rag.inference.precision``); stored as given, so a saved pipeline resolves
            ``"auto"`` again on the machine that loads it.
        backend: ``"torch"`` (default) or ``"onnx"`` (the model folder's ``onnx/`` export,
            written by ``medeir export --onnx``).
        dtype: deprecated spelling of ``precision`` (``"float32"``, ``"float16"``, ``"bfloat16"``);
            warns, and is stored as ``precision``.
        overlong: inputs over the window: ``"truncate"`` (warns), ``"chunk"`` or ``"error"``.
    """

    model_name: str = Field(default=DEFAULT_MODEL_NAME, description="medeir model directory or hf:org/name hub id.")
    max_length: int | None = Field(default=None, gt=2, description="Window in tokens; None: the model's.")
    query_instruction: str | None = Field(default=None, description="Prefix for queries.")
    text_instruction: str | None = Field(default=None, description="Prefix for documents.")
    normalize: bool = Field(default=True, description="L2-normalise embeddings.")
    truncate_dim: int | None = Field(default=None, gt=0, description="Matryoshka dimension.")
    device: str = Field(default="cpu", description="Torch device.")
    precision: str = Field(default=DEFAULT_PRECISION, description="auto, fp32, bf16, fp16 or int8.")
    backend: str = Field(default="torch", description="torch or onnx.")
    dtype: str | None = Field(default=None, description="Deprecated: use precision.")
    show_progress_bar: bool = Field(default=False, description="Show a progress bar.")
    overlong: str = Field(default="truncate", description="truncate, chunk or error.")
    _encoder: Any = PrivateAttr()
    # a misspelt option must not run with the default (BaseEmbedding's pydantic config ignores extras)
    model_config = ConfigDict(extra="forbid")

    def __init__(
        self,
        model_name: str | None = None,
        max_length: int | None = None,
        query_instruction: str | None = None,
        text_instruction: str | None = None,
        normalize: bool = True,
        embed_batch_size: int = DEFAULT_EMBED_BATCH_SIZE,
        device: str | None = None,
        callback_manager: CallbackManager | None = None,
        show_progress_bar: bool = False,
        truncate_dim: int | None = None,
        dtype: str | None = None,
        overlong: str = "truncate",
        precision: str = DEFAULT_PRECISION,
        backend: str = "torch",
        **kwargs: Any,
    ) -> None:
        _refuse_unknown("MedeirEmbedding", list(kwargs), list(type(self).model_fields))
        if overlong not in OVERLONG_POLICIES:
            raise InvalidArgumentError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
        precision = check_options(precision, backend, dtype=dtype, owner="MedeirEmbedding")
        encoder = get_encoder(model_name, device, precision=precision, backend=backend)
        hidden = encoder.model.config.hidden_size
        truncate_dim = check_truncate_dim(truncate_dim, hidden)
        if query_instruction is None:
            query_instruction = encoder.prompts.get("query", "")
        if text_instruction is None:
            text_instruction = encoder.document_prompt
        super().__init__(
            model_name=str(model_name) if model_name is not None else DEFAULT_MODEL_NAME,
            max_length=max_length,
            query_instruction=query_instruction,
            text_instruction=text_instruction,
            normalize=normalize,
            embed_batch_size=embed_batch_size,
            device=str(encoder.device),
            precision=precision,
            backend=backend,
            callback_manager=callback_manager,
            show_progress_bar=show_progress_bar,
            truncate_dim=truncate_dim,
            overlong=overlong,
            **kwargs,
        )
        self._encoder = encoder

    @classmethod
    def class_name(cls) -> str:
        return "MedeirEmbedding"

    @property
    def embedding_dimension(self) -> int:
        return self.truncate_dim or self._encoder.model.config.hidden_size

    def _embed(self, texts: list[str], instruction: str | None) -> list[list[float]]:
        for index, text in enumerate(texts):  # a lone surrogate: a clear error, not the tokenizer's
            if isinstance(text, str):
                check_text(text, f"texts[{index}]")
        encoder = self._encoder
        window = min(self.max_length or encoder.max_length, encoder.max_length)
        vectors = encode(
            encoder.model, encoder.tokenizer, list(texts), prompt=instruction or "", max_length=window,
            batch_tokens=encoder.batch_tokens, normalize=self.normalize, truncate_dim=self.truncate_dim,
            overlong=self.overlong, autocast_dtype=encoder.autocast_dtype, show_progress=self.show_progress_bar,
        )
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], self.query_instruction)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], self.text_instruction)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, self.text_instruction)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


# ----------------------------------------------------------------------------
# Splitter


def _check_overlap(chunk_overlap: int, chunk_size: int) -> None:
    if chunk_overlap >= chunk_size:
        raise InvalidArgumentError(f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})")


class MedeirTokenWindowSplitter(MetadataAwareTextSplitter):
    """Cuts text into windows of the medical tokenizer's tokens, up to the model's long window.

    The default ``chunk_size`` is 512 tokens, not the 8,192-token window: a LlamaIndex query
    engine hands the LLM ``similarity_top_k`` chunks, and 20 whole-window chunks would be
    160k tokens of context. Measured with the bundled model (dense, no chunk overlap) by
    ``benchmarks/chunk_size.py`` on the shared PubMed abstracts, never an evaluation corpus:
    300 abstract texts joined 10 at a time into 30 sections of about 2,270 tokens, each title
    searching for its abstract (docs/results/chunk-size.md). The share of that abstract
    carried by the top chunk (0 on a miss) was 0.43 / 0.55 / 0.52 / 0.41 / 0.28 at 128 /
    256 / 512 / 1,024 tokens / the whole window, and the top chunk held 80% of it for 12% /
    32% / **47%** / 41% / 28% of the titles. Smaller chunks are hit more often (top-1 0.83 /
    0.72 / 0.57 / 0.41 / 0.28) but carry fragments; 512 hands the LLM the whole abstract most
    often, with five hits near 2,300 tokens of context (whole windows: 11,300). The long window stays
    one argument away: ``chunk_size=None`` is the whole window, for whole abstracts,
    sections or notes in one chunk (then lower ``similarity_top_k`` or rerank).

    Args:
        chunk_size: tokens per chunk *including* the node's metadata string (default 512, or
            the window when the model's is smaller); ``None`` is the whole window (8,192
            minus special tokens minus the document prompt). Larger values are refused,
            also when set later (``Settings.chunk_size = ...``): a chunk over the window would
            be truncated by the embedder, silently dropping its end from the index.
        chunk_overlap: tokens repeated at the start of the next chunk.
        model_name: the model whose tokenizer, window and prompt apply; ``None`` uses the
            tokenizer shipped with the package and the 8,192-token window.
        boundary_fraction: look back this share of a window for a paragraph or sentence end.
        include_metadata, include_prev_next_rel, id_func, callback_manager: as in
            ``SentenceSplitter``; ``callback_manager`` receives a ``CBEventType.CHUNKING``
            event per text cut, as ``SentenceSplitter`` sends.
    """

    chunk_size: int = Field(description="Tokens per chunk, metadata string included.", gt=0)
    chunk_overlap: int = Field(default=0, description="Tokens shared by consecutive chunks.", ge=0)
    model_name: str | None = Field(default=None, description="Model whose tokenizer and window apply.")
    boundary_fraction: float = Field(default=DEFAULT_BOUNDARY_FRACTION, ge=0, lt=1)
    _window: Any = PrivateAttr()

    def __init__(
        self,
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = 0,
        model_name: str | None = None,
        boundary_fraction: float = DEFAULT_BOUNDARY_FRACTION,
        callback_manager: CallbackManager | None = None,
        include_metadata: bool = True,
        include_prev_next_rel: bool = True,
        id_func: Any | None = None,
    ) -> None:
        window = get_token_window(model_name)
        chunk_size = window.resolve_chunk_size(chunk_size)
        _check_overlap(chunk_overlap, chunk_size)
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            model_name=model_name,
            boundary_fraction=boundary_fraction,
            callback_manager=callback_manager or CallbackManager([]),
            include_metadata=include_metadata,
            include_prev_next_rel=include_prev_next_rel,
            id_func=id_func,
        )
        self._window = window

    def __setattr__(self, name: str, value: Any) -> None:
        # ``Settings.chunk_size = n`` is ``Settings.node_parser.chunk_size = n``, and pydantic does
        # not validate assignments here: check it as the constructor does
        if name == "chunk_size":
            try:
                value = self._window.resolve_chunk_size(value)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"{type(self).__name__}.chunk_size (or Settings.chunk_size): {error}") from None
            _check_overlap(self.chunk_overlap, value)
        elif name == "chunk_overlap":
            _check_overlap(value, self.chunk_size)
        super().__setattr__(name, value)

    @classmethod
    def from_defaults(cls, **kwargs: Any) -> "MedeirTokenWindowSplitter":
        return cls(**kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "MedeirTokenWindowSplitter"

    @property
    def tokenizer(self) -> Any:
        return self._window.tokenizer

    def _chunks(self, text: str, metadata_str: str) -> list[Chunk]:
        reserved = count_tokens(self.tokenizer, metadata_str) if metadata_str else 0
        budget = self.chunk_size - reserved
        if budget <= 0:
            raise ValueError(
                f"Metadata length ({reserved} tokens) is not smaller than chunk size ({self.chunk_size}). "
                "Increase chunk_size or exclude metadata keys from embedding (excluded_embed_metadata_keys)."
            )
        if reserved and budget < SMALL_CHUNK_WARNING:
            logger.warning(
                "Metadata takes %d of %d tokens; chunks will have at most %d tokens of text", reserved,
                self.chunk_size, budget,
            )
        if not text:
            return []
        overlap = min(self.chunk_overlap, budget - 1)
        with self.callback_manager.event(CBEventType.CHUNKING, payload={EventPayload.CHUNKS: [text]}) as event:
            chunks = chunk_text(
                text, self.tokenizer, self.chunk_size, overlap, reserved_tokens=reserved,
                boundary_fraction=self.boundary_fraction,
            )
            event.on_end(payload={EventPayload.CHUNKS: [c.text for c in chunks]})
        return chunks

    def split_text(self, text: str) -> list[str]:
        return [c.text for c in self._chunks(text, "")]

    def split_text_metadata_aware(self, text: str, metadata_str: str) -> list[str]:
        return [c.text for c in self._chunks(text, metadata_str)]

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
        all_nodes: list[BaseNode] = []
        for node in get_tqdm_iterable(nodes, show_progress, "Parsing nodes"):
            chunks = self._chunks(node.get_content(metadata_mode=MetadataMode.NONE), self._get_metadata_str(node))
            built = build_nodes_from_splits([c.text for c in chunks], node, id_func=self.id_func)
            for new_node, chunk in zip(built, chunks, strict=True):
                new_node.start_char_idx, new_node.end_char_idx = chunk.start, chunk.end
            all_nodes.extend(built)
        return all_nodes

    def _postprocess_parsed_nodes(self, nodes: list[BaseNode], parent_doc_map: dict) -> list[BaseNode]:
        # the base class re-derives offsets with str.find, which picks the wrong occurrence of
        # repeated text; keep the exact ones computed while cutting
        exact = {n.node_id: (n.start_char_idx, n.end_char_idx) for n in nodes if isinstance(n, TextNode)}
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node in nodes:
            if node.node_id in exact:
                node.start_char_idx, node.end_char_idx = exact[node.node_id]
        return nodes


# ----------------------------------------------------------------------------
# Reranker


class MedeirRerank(BaseNodePostprocessor):
    """Reranks retrieved nodes with the medeir cross-encoder (as ``SentenceTransformerRerank``).

    Args:
        top_n: nodes to keep.
        model: a CrossEncoder directory or hub id; ``None`` is the bundled reranker, which is
            not shipped today: then construction raises a ``FileNotFoundError`` asking for
            ``model=<path to a CrossEncoder folder>``.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        keep_retrieval_score: copy each node's retrieval score to ``metadata["retrieval_score"]``.
        batch_size: pairs per forward pass.
        max_length: pair window in tokens; default the one saved with the reranker.
        precision: ``"fp32"`` (default), ``"bf16"``, ``"fp16"`` or ``"int8"``.
        backend: ``"torch"`` (default) or ``"onnx"`` (the reranker folder's ``onnx/`` export).
    """

    model: str = Field(default=DEFAULT_RERANKER_NAME, description="Cross-encoder directory or hub id.")
    top_n: int = Field(default=2, gt=0, description="Number of nodes to return sorted by score.")
    device: str = Field(default="cpu", description="Torch device.")
    keep_retrieval_score: bool = Field(default=False, description="Keep the retrieval score in metadata.")
    batch_size: int = Field(default=16, gt=0)
    max_length: int | None = Field(default=None, gt=2)
    precision: str = Field(default="fp32", description="fp32, bf16, fp16 or int8.")
    backend: str = Field(default="torch", description="torch or onnx.")
    _reranker: Any = PrivateAttr()

    def __init__(
        self,
        top_n: int = 2,
        model: str | None = None,
        device: str | None = None,
        keep_retrieval_score: bool = False,
        batch_size: int = 16,
        max_length: int | None = None,
        callback_manager: CallbackManager | None = None,
        precision: str = "fp32",
        backend: str = "torch",
    ) -> None:
        precision = check_options(precision, backend, owner="MedeirRerank")
        reranker = get_reranker(model, device, max_length, precision=precision, backend=backend)
        super().__init__(
            top_n=top_n,
            model=str(model) if model is not None else DEFAULT_RERANKER_NAME,
            device=str(reranker.device),
            keep_retrieval_score=keep_retrieval_score,
            batch_size=batch_size,
            max_length=max_length,
            precision=precision,
            backend=backend,
            callback_manager=callback_manager or CallbackManager([]),
        )
        self._reranker = reranker

    @classmethod
    def class_name(cls) -> str:
        return "MedeirRerank"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name=self.model))
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        if not nodes:
            dispatcher.event(ReRankEndEvent(nodes=[]))
            return []
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query_bundle.query_str,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            passages = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
            scores = self._reranker.score(query_bundle.query_str, passages, batch_size=self.batch_size)
            for node, score in zip(nodes, scores, strict=True):
                if self.keep_retrieval_score:
                    node.node.metadata["retrieval_score"] = node.score
                node.score = float(score)
            new_nodes = sorted(nodes, key=lambda n: -(n.score or 0.0))[: self.top_n]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes


# ----------------------------------------------------------------------------
# Hybrid search with llama-index-vector-stores-qdrant


def _model_dir(model_name: str | None) -> str:
    return str(resolve_model_path(model_name, default=DEFAULT_MODEL_NAME))


def _texts(function: str, texts: Any) -> list[str]:
    if not isinstance(texts, (list, tuple)):  # medeir_sparse_doc_fn passed itself, not its result
        raise InvalidArgumentError(
            f"{function} expects a list of texts, got {type(texts).__name__}; pass {function.split('(')[0]}"
            "(model_name) (its result), not the factory, as QdrantVectorStore's function"
        )
    for index, text in enumerate(texts):
        check_text(text, f"texts[{index}]")
    return list(texts)


def medeir_sparse_doc_fn(model_name: str | None = None) -> Callable[[list[str]], BatchSparseEncoding]:
    """The ``sparse_doc_fn`` for ``QdrantVectorStore``: ``MedeirVectorStore``'s document sparse vectors.

    ``texts -> (indices per text, values per text)``: BM25 term-frequency weights over the
    model's WordPiece ids (``store.sparse_document_vectors``). They need Qdrant's IDF
    modifier on the sparse vector (``medeir_qdrant_vector_store`` sets it). Only the
    tokenizer is loaded.
    """
    from medeir_rag.rag.store import sparse_document_vectors

    tokenizer = get_token_window(_model_dir(model_name)).tokenizer

    def sparse_doc_fn(texts: list[str]) -> BatchSparseEncoding:
        pairs = sparse_document_vectors(tokenizer, _texts("medeir_sparse_doc_fn(...)", texts))
        return [list(i) for i, _ in pairs], [list(v) for _, v in pairs]

    return sparse_doc_fn


def medeir_sparse_query_fn(model_name: str | None = None) -> Callable[[list[str]], BatchSparseEncoding]:
    """The ``sparse_query_fn`` for ``QdrantVectorStore``: weight 1 per distinct query token, as our store."""
    from medeir_rag.rag.store import sparse_query_vector

    tokenizer = get_token_window(_model_dir(model_name)).tokenizer

    def sparse_query_fn(texts: list[str]) -> BatchSparseEncoding:
        pairs = [sparse_query_vector(tokenizer, t) for t in _texts("medeir_sparse_query_fn(...)", texts)]
        return [list(i) for i, _ in pairs], [list(v) for _, v in pairs]

    return sparse_query_fn


def medeir_hybrid_fusion_fn(model_name: str | None = None, alpha: float | None = None) -> Callable[..., Any]:
    """The ``hybrid_fusion_fn`` for ``QdrantVectorStore``: ``fusion.convex_combination`` with the model's alpha.

    ``alpha`` (the dense side's weight) defaults to the model's ``hybrid.json`` (0.7 for the
    bundled model; 0.5 without the file). The ``alpha`` LlamaIndex passes at query time is
    not used: ``QdrantVectorStore`` sends 0.5 when the query sets none, so it cannot tell a
    chosen 0.5 from no choice; give another weight here instead. Each side is normalised as
    the model's ``hybrid.json`` says (min-max or max-scaled) over its own candidates
    (``similarity_top_k`` dense, ``sparse_top_k`` sparse); with both at 100, the store's
    candidate depth, the ranking is ``medeir query --mode hybrid``'s.
    """
    weights = load_hybrid_weights(_model_dir(model_name)).with_alpha(alpha)

    def hybrid_fusion_fn(
        dense_result: VectorStoreQueryResult, sparse_result: VectorStoreQueryResult, **kwargs: Any
    ) -> VectorStoreQueryResult:
        nodes: dict[str, BaseNode] = {}
        sides: list[dict[str, float]] = []
        for result in (dense_result, sparse_result):
            side: dict[str, float] = {}
            for node, score in zip(result.nodes or [], result.similarities or [], strict=True):
                nodes.setdefault(node.node_id, node)
                side[node.node_id] = float(score)
            sides.append(side)
        fused = convex_combination(sides[0], sides[1], weights.alpha, kwargs.get("top_k"), weights.normalization)
        return VectorStoreQueryResult(nodes=[nodes[i] for i in fused], similarities=list(fused.values()),
                                      ids=list(fused))

    hybrid_fusion_fn.alpha = weights.alpha  # type: ignore[attr-defined]  # what a caller may want to log
    hybrid_fusion_fn.normalization = weights.normalization  # type: ignore[attr-defined]
    return hybrid_fusion_fn


_STORE_SETS = ("enable_hybrid", "sparse_doc_fn", "sparse_query_fn", "hybrid_fusion_fn", "sparse_config",
               "fastembed_sparse_model")


def medeir_qdrant_vector_store(
    client: Any = None, collection_name: str = "medeir", model_name: str | None = None, *,
    alpha: float | None = None, **kwargs: Any,
) -> Any:
    """A ``QdrantVectorStore(enable_hybrid=True)`` with medeir's sparse side and fusion, its sparse vector IDF-weighted.

    Args:
        client: a ``qdrant_client.QdrantClient`` (``":memory:"``, ``path=`` or ``url=``).
        collection_name: created by LlamaIndex on the first insert, with ``Modifier.IDF`` on
            its sparse vector; an existing hybrid collection without the modifier gets it
            (the stored weights are unchanged: Qdrant applies IDF at query time).
        model_name: the embedding model (``None``: bundled); its tokenizer makes the sparse
            vectors and its ``hybrid.json`` gives alpha. Use the same model in ``MedeirEmbedding``.
        alpha: dense weight overriding the model's (see ``medeir_hybrid_fusion_fn``).
        kwargs: any other ``QdrantVectorStore`` argument (``aclient``, ``batch_size``,
            ``dense_vector_name``, ...); the sparse ones are set here and refused.

    Raises:
        InvalidArgumentError: a sparse argument in ``kwargs``, or an existing collection that
            has no sparse vector of that name (built without ``enable_hybrid``).
    """
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore
        from qdrant_client import models
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"llama-index-vector-stores-qdrant is not installed ({error}); "
            "install it with: pip install 'medeir_rag[llamaindex]'"
        ) from error
    for name in _STORE_SETS:
        if name in kwargs:
            raise InvalidArgumentError(f"medeir_qdrant_vector_store sets {name} itself; leave it out")
    idf = models.SparseVectorParams(index=models.SparseIndexParams(), modifier=models.Modifier.IDF)
    store = QdrantVectorStore(
        collection_name=collection_name, client=client, enable_hybrid=True,
        sparse_doc_fn=medeir_sparse_doc_fn(model_name), sparse_query_fn=medeir_sparse_query_fn(model_name),
        hybrid_fusion_fn=medeir_hybrid_fusion_fn(model_name, alpha), sparse_config=idf, **kwargs,
    )
    if client is not None and client.collection_exists(collection_name):
        sparse = client.get_collection(collection_name).config.params.sparse_vectors or {}
        if store.sparse_vector_name not in sparse:
            raise InvalidArgumentError(
                f"collection {collection_name!r} has no sparse vector {store.sparse_vector_name!r} (built without "
                "enable_hybrid); index into a new collection name for hybrid search"
            )
        if sparse[store.sparse_vector_name].modifier != models.Modifier.IDF:
            logger.warning("collection %r: setting Modifier.IDF on sparse vector %r (medeir's sparse weights need it)",
                           collection_name, store.sparse_vector_name)
            client.update_collection(collection_name, sparse_vectors_config={store.sparse_vector_name: idf})
    return store


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MedeirEmbedding",
    "MedeirRerank",
    "MedeirTokenWindowSplitter",
    "medeir_hybrid_fusion_fn",
    "medeir_qdrant_vector_store",
    "medeir_sparse_doc_fn",
    "medeir_sparse_query_fn",
]
