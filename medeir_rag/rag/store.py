"""A Qdrant collection of medeir chunks: dense + medical-tokenizer sparse vectors, hybrid search.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/store.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from medeir_rag.errors import InvalidArgumentError, check_text
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.rag.chunking import Chunk, TokenWindow, chunk_text, count_tokens
from medeir_rag.rag.documents import SourceDocument, document_text
from medeir_rag.rag.fusion import (
    DEFAULT_NORMALIZATION,
    HYBRID_CANDIDATES,
    convex_combination,
    load_hybrid_weights,
)
from medeir_rag.rag.store_backends import (
    DEFAULT_QDRANT_PATH,
    DENSE_VECTOR,
    METADATA_KEY,
    SPARSE_VECTOR,
    CollectionMismatchError,
    CollectionNotFoundError,
    LegacyStoreError,
    Record,
    ServerBackend,
    ServerUnreachableError,
    StorageLockedError,
    StoreBackend,
    StoredPoint,
    VectorQuery,
    check_qdrant_path,
    open_backend,
    require_qdrant_client,
    require_qdrant_edge,
)

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid")
MIN_RERANK_CANDIDATES = 20  # default rerank depth: max(4 * top_k, 20)
DEFAULT_COLLECTION = "medeir"
# HNSW beam width of dense searches: recall@10 0.995 at a million points (0.922 at the engine default),
# p50 1.28 ms (docs/results/store-scale-hnsw-ef.md)
DEFAULT_HNSW_EF = 512
METADATA_FORMAT = 1
BM25_K1 = 1.2
BM25_B = 0.75
BM25_AVG_TOKENS = 256
SPARSE_SCHEME = f"medeir-bm25-tf/v1 k1={BM25_K1} b={BM25_B} avg_tokens={BM25_AVG_TOKENS}"
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "medeir-rag/qdrant-points")
MAX_TITLE_SHARE = 4  # a title longer than chunk_size / 4 tokens is stored but not embedded

__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_HNSW_EF",
    "DEFAULT_QDRANT_PATH",
    "DENSE_VECTOR",
    "METADATA_KEY",
    "SPARSE_VECTOR",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "IndexStats",
    "LegacyStoreError",
    "MedeirVectorStore",
    "PreparedDocument",
    "SearchHit",
    "ServerUnreachableError",
    "StorageLockedError",
    "candidate_lists",
    "check_qdrant_path",
    "default_rerank_depth",
    "document_text",
    "hybrid_search",
    "open_backend",
    "open_existing",
    "point_id",
    "prepare_document",
    "require_qdrant_client",
    "require_qdrant_edge",
    "rerank_hits",
    "sparse_document_vectors",
    "sparse_query_vector",
]


# ----------------------------------------------------------------------------
# Opening, ids, fingerprints, sparse vectors


def _not_found(collection: str, location: str) -> CollectionNotFoundError:
    return CollectionNotFoundError(
        f"collection {collection!r} does not exist at {location}; "
        "index documents first (`medeir index PATH --collection NAME`)"
    )


def require_collection(backend: StoreBackend, collection: str) -> None:
    """Raise ``CollectionNotFoundError`` unless ``collection`` exists (no model needed)."""
    if not backend.exists(collection):
        raise _not_found(collection, backend.location)


def open_existing(
    collection: str, path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None
) -> StoreBackend:
    """The backend of a store that holds ``collection``, locked and checked before any model is loaded.

    An embedded folder that does not exist is not created: the collection is simply not there.
    """
    backend = open_backend(path, url, api_key, collection=collection, create=False)
    try:
        require_collection(backend, collection)
    except BaseException:
        backend.close()
        raise
    return backend


def point_id(doc_id: str, chunk_index: int) -> str:
    """The Qdrant id of chunk ``chunk_index`` of document ``doc_id`` (a UUID string)."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{doc_id}\x00{chunk_index}"))


def _sample_file(digest: Any, path: Path, samples: int = 32, size: int = 4096) -> None:
    """Hash a weights file's length, header and evenly spaced slices (fast on large files)."""
    length = path.stat().st_size
    digest.update(f"{path.name}:{length}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(65536))
        for k in range(samples):
            handle.seek(max(0, (length - size) * k // max(samples - 1, 1)))
            digest.update(handle.read(size))


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """A short hash that changes when a model's weights, tokenizer, config or prompts change.

    Weights are sampled (length, header and 32 slices of each safetensors file), so a
    multi-GB model is fingerprinted in milliseconds; any retraining changes the sampled bytes.
    """
    root = Path(model_dir)
    digest = hashlib.sha256()
    for name in ("modules.json", "config_sentence_transformers.json"):
        file = root / name
        if file.is_file():
            digest.update(file.read_bytes())
    for file in sorted(root.rglob("*")):
        if file.name in ("config.json", "tokenizer.json", "sentence_bert_config.json"):
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
        elif file.suffix == ".safetensors":
            _sample_file(digest, file)
    return digest.hexdigest()[:16]


def model_identity(encoder: MedeirEncoder) -> dict[str, Any]:
    """What a collection records about the model that filled it."""
    return {
        "format": METADATA_FORMAT,
        "model": encoder.path.name,
        "fingerprint": model_fingerprint(encoder.path),
        "dimension": encoder.embedding_dimension,
        "truncate_dim": encoder.truncate_dim,
        "max_length": encoder.max_length,
        "sparse": SPARSE_SCHEME,
    }


def _special_ids(tokenizer) -> set[int]:
    return set(tokenizer.all_special_ids)


def sparse_document_vectors(tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[float]]]:
    """``(indices, values)`` per text: BM25 term-frequency weights over medical-tokenizer ids."""
    special = _special_ids(tokenizer)
    result = []
    for ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]:
        counts = Counter(i for i in ids if i not in special)
        length = sum(counts.values())
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length / BM25_AVG_TOKENS)
        indices = sorted(counts)
        result.append((indices, [counts[i] * (BM25_K1 + 1) / (counts[i] + norm) for i in indices]))
    return result


def sparse_query_vector(tokenizer, text: str) -> tuple[list[int], list[float]]:
    """``(indices, values)`` of a query: weight 1 for each distinct token."""
    special = _special_ids(tokenizer)
    ids = sorted({i for i in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if i not in special})
    return ids, [1.0] * len(ids)


# ----------------------------------------------------------------------------
# Results


@dataclass
class IndexStats:
    """Counts of one indexing run (``documents`` = documents read)."""

    documents: int = 0
    indexed: int = 0
    chunks: int = 0
    skipped_existing: int = 0
    skipped_empty: int = 0
    skipped_duplicate: int = 0
    seconds: float = 0.0
    optimize_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.documents} documents read: {self.indexed} indexed ({self.chunks} chunks), "
            f"{self.skipped_existing} already indexed, {self.skipped_empty} empty, "
            f"{self.skipped_duplicate} duplicate ids skipped; {self.seconds:.1f} s"
        )


@dataclass
class SearchHit:
    """One retrieved chunk; ``text == document[start:end]``.

    ``score`` is the retrieval score of the mode, or the reranker's probability when the
    search reranked; ``retrieval_score`` is always the retrieval score.
    """

    doc_id: str
    chunk_index: int
    score: float
    title: str
    text: str
    start: int
    end: int
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    retrieval_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PreparedDocument:
    """One document checked and chunked: its chunks, the texts to embed, its content key and point ids."""

    doc: SourceDocument
    chunks: list[Chunk]
    embed_texts: list[str]
    key: str
    ids: list[str]


def prepare_document(
    doc: SourceDocument, tokenizer: Any, stats: IndexStats, seen: set[str], chunk_size: int, chunk_overlap: int,
    embed_title: bool,
) -> PreparedDocument | None:
    """Check and chunk one document; ``None`` (and a count in ``stats``) when it is skipped.

    A function of the tokenizer alone, so that a Ray actor chunks exactly as the store does
    (same chunks, same ``doc_key``, same point ids) without holding a store.
    """
    if not isinstance(doc, SourceDocument):
        raise TypeError(f"documents must be SourceDocument objects, got {type(doc).__name__}")
    if not isinstance(doc.id, str):  # 7 and "7" would name the same points
        raise InvalidArgumentError(
            f"document id {doc.id!r} is a {type(doc.id).__name__}; ids must be strings "
            f"(the id {doc.id!r} and the id {str(doc.id)!r} would name the same points)"
        )
    for name in ("id", "title", "text"):
        value = getattr(doc, name)
        if isinstance(value, str):
            check_text(value, "a document id" if name == "id" else f"the {name} of document {doc.id!r}")
    if not doc.text.strip():
        stats.skipped_empty += 1
        return None
    if doc.id in seen:
        stats.skipped_duplicate += 1
        logger.warning("document id %r appears more than once; keeping the first", doc.id)
        return None
    seen.add(doc.id)
    title = doc.title.strip() if embed_title else ""
    title_tokens = count_tokens(tokenizer, title) if title else 0
    if title_tokens > chunk_size // MAX_TITLE_SHARE or chunk_size - title_tokens <= chunk_overlap:
        title, title_tokens = "", 0
    chunks = chunk_text(doc.text, tokenizer, chunk_size, chunk_overlap, reserved_tokens=title_tokens)
    if not chunks:  # only characters the tokenizer drops (control characters)
        stats.skipped_empty += 1
        return None
    key_source = json.dumps([doc.title, doc.text, chunk_size, chunk_overlap, bool(title)])
    return PreparedDocument(
        doc=doc,
        chunks=chunks,
        embed_texts=[document_text(title, c.text) if title else c.text for c in chunks],
        key=hashlib.sha1(key_source.encode()).hexdigest()[:16],
        ids=[point_id(doc.id, c.index) for c in chunks],
    )


def _check_top_k(top_k: object, name: str = "top_k") -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise TypeError(f"{name} must be an integer, got {type(top_k).__name__}")
    if top_k <= 0:
        raise InvalidArgumentError(f"{name} must be > 0, got {top_k}")
    return top_k


# ----------------------------------------------------------------------------
# Hybrid search (the store's own fusion, usable on any backend)


def default_rerank_depth(top_k: int) -> int:
    """Hits the reranker rescores when ``rerank_top_k`` is not given: ``max(4 * top_k, 20)``."""
    return max(4 * top_k, MIN_RERANK_CANDIDATES)


def candidate_lists(
    backend: StoreBackend,
    collection: str,
    dense: Sequence[float],
    sparse: tuple[Sequence[int], Sequence[float]],
    *,
    candidates: int = HYBRID_CANDIDATES,
    query_filter: Any = None,
    hnsw_ef: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """The dense and the sparse top ``candidates`` (``{point id: score}``), from one batch query.

    These are the two lists ``hybrid_search`` fuses; ``medeir tune-hybrid`` fetches them once
    per query and fuses them with every alpha of its grid.
    """
    requests = [VectorQuery(DENSE_VECTOR, list(dense), candidates, query_filter, hnsw_ef=hnsw_ef)]
    if len(sparse[0]):
        requests.append(VectorQuery(SPARSE_VECTOR, sparse, candidates, query_filter))
    responses = backend.query(collection, requests)
    sides = [{r.id: float(r.score) for r in response} for response in responses]
    return sides[0], sides[1] if len(sides) > 1 else {}


def hybrid_search(
    backend: StoreBackend,
    collection: str,
    dense: Sequence[float],
    sparse: tuple[Sequence[int], Sequence[float]],
    top_k: int,
    *,
    alpha: float,
    normalization: str = DEFAULT_NORMALIZATION,
    candidates: int = HYBRID_CANDIDATES,
    query_filter: Any = None,
    hnsw_ef: int | None = None,
) -> list[tuple[Record, float]]:
    """``convex_combination`` of the dense and sparse top ``candidates``: ``(record with payload, score)``.

    Both candidate lists come from one batch query; the fused ids' payloads are fetched after.
    """
    dense_side, sparse_side = candidate_lists(backend, collection, dense, sparse, candidates=candidates,
                                              query_filter=query_filter, hnsw_ef=hnsw_ef)
    fused = convex_combination(dense_side, sparse_side, alpha, top_k, normalization)
    records = {r.id: r for r in backend.retrieve(collection, list(fused), with_payload=True)}
    return [(records[i], score) for i, score in fused.items() if i in records]


# ----------------------------------------------------------------------------
# The store


class MedeirVectorStore:
    """A medeir collection in Qdrant: Qdrant Edge in a local folder, or a Qdrant server.

    Args:
        encoder: a loaded ``MedeirEncoder``, a model path, or ``None`` for the bundled model.
        collection: collection name (on Edge, the name of its subfolder).
        path: the store folder (Qdrant Edge; ``":memory:"`` for a temporary folder deleted
            on close); ignored with ``url``.
        url: a Qdrant server or cluster (through qdrant-client).
        api_key: for a server that needs one.
        engine: ``"edge"`` (default) or ``"qdrant-client"``: qdrant-client's local mode for
            ``path`` (``":memory:"`` or a folder of SQLite files), for comparisons and tests.
        backend: an open ``store_backends.StoreBackend`` to use instead (then ``path``/``url``
            are ignored and ``close()`` leaves it open).
        client: an existing ``QdrantClient`` (a server, or qdrant-client's local mode) to
            use instead; ``close()`` leaves it open.
        hnsw_ef: the HNSW beam width of dense searches (``None``: the engine's own default,
            about 100). The default, 512, was measured at a million points: recall@10 0.995
            against 0.922 at the engine's default, at 1.28 ms p50 (README, "The command line").
            Collections too small to be indexed are searched exactly whatever it is.

    Use it as a context manager, or call ``close()``: it flushes, and an Edge store holds a
    lock on its collection until closed.
    """

    def __init__(
        self,
        encoder: MedeirEncoder | str | os.PathLike[str] | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        path: str | os.PathLike[str] | None = DEFAULT_QDRANT_PATH,
        url: str | None = None,
        api_key: str | None = None,
        engine: str = "edge",
        backend: StoreBackend | None = None,
        client: Any = None,
        hnsw_ef: int | None = DEFAULT_HNSW_EF,
    ) -> None:
        if hnsw_ef is not None:
            _check_top_k(hnsw_ef, "hnsw_ef")
        self.hnsw_ef = hnsw_ef
        self.encoder = encoder if isinstance(encoder, MedeirEncoder) else MedeirEncoder(encoder)
        self.hybrid = load_hybrid_weights(self.encoder.path)  # the model's hybrid.json, read once
        self.collection = collection
        self._owns_backend = backend is None and client is None
        if backend is None:
            if client is not None:
                backend = ServerBackend(client, location=url or str(path), owns_client=False)
            else:
                backend = open_backend(path, url, api_key, collection=collection, engine=engine)
        backend.check_name(collection)
        backend.lock(collection)
        self.backend: StoreBackend | None = backend
        self.location = backend.location
        self._identity: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Flush and close the backend (releases an Edge collection's lock)."""
        if self.backend is None:
            return
        try:
            if self.exists():
                self.backend.flush(self.collection)
        finally:
            if self._owns_backend:
                self.backend.close()
            self.backend = None

    def __enter__(self) -> MedeirVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> str:
        """``"edge"`` (a local folder) or ``"qdrant-client"`` (a server, or its local mode)."""
        return self.backend.engine

    @property
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = model_identity(self.encoder)
        return self._identity

    def exists(self) -> bool:
        """Whether the collection exists (on a server also as an alias, which ``recreate`` leaves)."""
        return self.backend.exists(self.collection)

    def count(self) -> int:
        """Points in the collection (0 when it does not exist)."""
        if not self.exists():
            return 0
        return self.backend.count(self.collection)

    def scroll(self, *, with_payload: bool | list[str] = True, batch: int = 1000) -> Iterator[Record]:
        """Every stored point (id and payload), in id order; nothing when the collection does not exist."""
        if not self.exists():
            return iter(())
        return self.backend.scroll(self.collection, with_payload=with_payload, batch=batch)

    def optimize(self) -> bool:
        """Build the HNSW index and merge segments now (Edge); a server does this by itself.

        ``index`` calls it when it ends; until then new points are searched exactly (brute force).
        """
        require_collection(self.backend, self.collection)
        return self.backend.optimize(self.collection)

    def create_index(self, field_name: str, schema: str = "keyword") -> None:
        """A payload index on ``field_name`` (e.g. ``"meta.journal"``) for fast filters on it.

        ``schema``: ``keyword``, ``integer``, ``float``, ``bool``, ``text`` or ``datetime``.
        """
        require_collection(self.backend, self.collection)
        self.backend.create_index(self.collection, field_name, schema)

    # -- collection ---------------------------------------------------------

    def create(self, *, recreate: bool = False) -> None:
        """Create the collection if missing (or drop and recreate it), else check it matches.

        ``recreate=True`` drops the collection at once; ``index(..., recreate=True)`` instead
        keeps it until a complete replacement is ready.
        """
        if recreate:
            self.drop()
        if self.exists():
            self.check()
            return
        self.backend.create(self.collection, self.encoder.embedding_dimension, self.identity)

    def drop(self) -> None:
        """Delete the collection (and, on a server where the name is an alias, the collection behind it)."""
        self.backend.drop(self.collection)

    def check(self) -> dict[str, Any]:
        """Raise unless the collection exists and was built with this model; returns its model record."""
        require_collection(self.backend, self.collection)
        info = self.backend.describe(self.collection)
        hint = "use the model it was built with, or rebuild it with `medeir index --recreate`"
        if info.dense_size is None or not info.has_sparse:
            raise CollectionMismatchError(
                f"collection {self.collection!r} at {self.location} was not created by medeir "
                f"(no '{DENSE_VECTOR}'/'{SPARSE_VECTOR}' vectors); pick another --collection or --recreate it"
            )
        if info.dense_size != self.encoder.embedding_dimension:
            raise CollectionMismatchError(
                f"collection {self.collection!r} holds {info.dense_size}-dimensional vectors but model "
                f"{self.encoder.path.name!r} gives {self.encoder.embedding_dimension} "
                f"(truncate_dim={self.encoder.truncate_dim}); {hint}"
            )
        stored = info.identity
        if stored is None:
            raise CollectionMismatchError(
                f"collection {self.collection!r} at {self.location} has no medeir model record (created by "
                "another tool, or on a Qdrant server too old to keep collection metadata); "
                f"{hint}"
            )
        mine = self.identity
        for key in ("fingerprint", "sparse"):
            if stored.get(key) != mine[key]:
                raise CollectionMismatchError(
                    f"collection {self.collection!r} was built with model {stored.get('model')!r} "
                    f"({key} {stored.get(key)!r}) but the model in use is {mine['model']!r} "
                    f"({key} {mine[key]!r}); {hint}"
                )
        return stored

    # -- indexing -----------------------------------------------------------

    def _window(self) -> TokenWindow:
        return TokenWindow(self.encoder.tokenizer, self.encoder.max_length, self.encoder.document_prompt)

    def index(
        self,
        documents: Iterable[SourceDocument],
        *,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        batch_size: int = 32,
        recreate: bool = False,
        embed_title: bool = True,
        show_progress: bool = True,
        total: int | None = None,
        optimize: bool = True,
    ) -> IndexStats:
        """Chunk, embed and upsert documents; returns the counts.

        Args:
            documents: ``SourceDocument`` objects (``medeir_rag.rag.documents.read_documents``).
            chunk_size: tokens per chunk including the title; ``None`` = the model window.
            chunk_overlap: tokens shared by consecutive chunks.
            batch_size: chunks embedded and upserted together (the unit of resumption).
            recreate: replace the collection by one holding exactly ``documents``: they are
                indexed into a new collection, swapped in only when all are in; on any
                error (or Ctrl-C) the new one is deleted and the old one is left as it was.
            embed_title: embed ``document_text(title, chunk)``, i.e. ``title + " " + chunk`` (the title's tokens count against
                ``chunk_size``; titles over a quarter of it are not embedded).
            show_progress: tqdm bar over documents, with chunks and points per second
                (and an ETA when ``total`` is given).
            total: how many documents to expect (for the ETA); ``len(documents)`` when it has one.
            optimize: run ``optimize()`` when the documents are in (before the swap with
                ``recreate``), so the collection is searched through HNSW at once.

        Raises:
            InvalidArgumentError: a bad ``chunk_size``/``chunk_overlap``/``batch_size``.
            InvalidTextError: a document's id, title or text holds a lone surrogate.
            Whatever reading ``documents`` raises (``DocumentReadError`` naming file and
            line): the documents read before it are stored first.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
        window = self._window()
        chunk_size = window.resolve_chunk_size(chunk_size)
        if not isinstance(chunk_overlap, int) or not 0 <= chunk_overlap < chunk_size:
            raise InvalidArgumentError(f"chunk_overlap must be in 0..{chunk_size - 1}, got {chunk_overlap!r}")
        if total is None and hasattr(documents, "__len__"):
            total = len(documents)  # type: ignore[arg-type]
        settings = (chunk_size, chunk_overlap, batch_size, embed_title, show_progress, total, optimize)
        if not (recreate and self.exists()):
            self.create()
            return self._index(documents, *settings)
        final, build = self.collection, self.backend.build_name(self.collection)
        self.collection = build
        try:
            self.create()
            stats = self._index(documents, *settings)
        except BaseException:
            try:
                self.backend.drop(build)
            except Exception as error:  # the original error matters more; say what is left
                logger.warning("could not delete the unfinished rebuild %r: %s", build, error)
            raise
        finally:
            self.collection = final
        self.backend.swap_in(final, build)
        return stats

    def _index(
        self,
        documents: Iterable[SourceDocument],
        chunk_size: int,
        chunk_overlap: int,
        batch_size: int,
        embed_title: bool,
        show_progress: bool,
        total: int | None,
        optimize: bool,
    ) -> IndexStats:
        """``index`` into the existing ``self.collection``."""
        started = time.perf_counter()

        stats = IndexStats()
        seen: set[str] = set()
        pending: list[PreparedDocument] = []
        pending_chunks = 0
        progress = tqdm(desc="Indexing", unit="doc", total=total, disable=not show_progress, dynamic_ncols=True)

        def report() -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.set_postfix(chunks=stats.chunks, pts_s=f"{stats.chunks / elapsed:.1f}",
                                 skipped=stats.skipped_existing, refresh=False)

        iterator = iter(documents)
        try:
            while True:
                try:
                    doc = next(iterator)
                    stats.documents += 1
                    item = prepare_document(doc, self.encoder.tokenizer, stats, seen, chunk_size, chunk_overlap, embed_title)
                except StopIteration:
                    break
                except Exception:  # a bad record: store every document read before it, then stop
                    if pending:
                        self._store_batch(pending, stats, batch_size)
                    raise
                if item is None:
                    progress.update(1)
                    continue
                pending.append(item)
                pending_chunks += len(item.chunks)
                if pending_chunks >= batch_size:
                    self._store_batch(pending, stats, batch_size)
                    progress.update(len(pending))
                    report()
                    pending, pending_chunks = [], 0
            if pending:
                self._store_batch(pending, stats, batch_size)
                progress.update(len(pending))
            report()
        finally:
            progress.close()
        return self._finish(stats, started, optimize)

    def _finish(self, stats: IndexStats, started: float, optimize: bool) -> IndexStats:
        """End of an indexing run: build the HNSW index if asked, flush, time the run."""
        if optimize:
            began = time.perf_counter()
            self.backend.optimize(self.collection)
            stats.optimize_seconds = time.perf_counter() - began
        self.backend.flush(self.collection)
        stats.seconds = time.perf_counter() - started
        return stats

    def _store_batch(self, pending: list[PreparedDocument], stats: IndexStats, batch_size: int) -> None:
        """Skip complete documents, delete stale chunks of changed ones, embed and upsert the rest."""
        ids = [i for p in pending for i in p.ids]
        stored = self.backend.retrieve(self.collection, ids, with_payload=["doc_key"])
        stored_keys = {r.id: (r.payload or {}).get("doc_key") for r in stored}
        todo: list[PreparedDocument] = []
        stale: list[str] = []
        for p in pending:
            keys = [stored_keys.get(i) for i in p.ids]
            if all(k == p.key for k in keys):
                stats.skipped_existing += 1
                continue
            if any(k is not None for k in keys):
                stale.append(p.doc.id)
            todo.append(p)
        if stale:
            self.backend.delete_documents(self.collection, stale)
        if not todo:
            return
        texts = [t for p in todo for t in p.embed_texts]
        dense = self.encoder.encode_document(texts, overlong="error", show_progress=False)
        self._upsert(todo, dense, stats, batch_size)

    def _upsert(self, todo: list[PreparedDocument], dense: Any, stats: IndexStats, batch_size: int) -> None:
        """Upsert the chunks of ``todo`` with their dense rows (in order) and their sparse vectors."""
        texts = [t for p in todo for t in p.embed_texts]
        sparse = sparse_document_vectors(self.encoder.tokenizer, texts)
        points = []
        row = 0
        for p in todo:
            for chunk, pid in zip(p.chunks, p.ids, strict=True):
                payload = {
                    "doc_id": p.doc.id,
                    "chunk_index": chunk.index,
                    "num_chunks": len(p.chunks),
                    "doc_key": p.key,
                    "title": p.doc.title,
                    "text": chunk.text,
                    "start": chunk.start,
                    "end": chunk.end,
                    "num_tokens": chunk.num_tokens,
                    "source": p.doc.source,
                    "meta": p.doc.meta,
                }
                points.append(StoredPoint(id=pid, dense=dense[row].tolist(), sparse=sparse[row], payload=payload))
                row += 1
        for start in range(0, len(points), batch_size):
            self.backend.upsert(self.collection, points[start : start + batch_size])
        stats.indexed += len(todo)
        stats.chunks += len(points)

    def index_embedded(
        self,
        documents: Sequence[SourceDocument],
        dense: Any,
        *,
        batch_size: int = 256,
        optimize: bool = True,
    ) -> IndexStats:
        """Store one point per document with its precomputed dense vector (row i for document i).

        For benchmarks, whose document embeddings are already in the embedding cache
        (``baselines.embed`` of ``document_text(title, text)``): nothing is embedded again,
        the sparse vectors and payloads are built by the same code as ``index`` (one chunk
        covering the whole text; its ``embed_texts`` is ``document_text(title, text)``), so
        ``search`` on this collection behaves as on one ``index`` built from unchunked documents.
        """
        import numpy as np

        dense = np.asarray(dense, dtype=np.float32)
        if dense.ndim != 2 or len(dense) != len(documents):
            raise InvalidArgumentError(f"need one dense row per document: {len(documents)} documents, "
                                       f"dense of shape {dense.shape}")
        if len(documents) and dense.shape[1] != self.encoder.embedding_dimension:
            raise InvalidArgumentError(f"dense rows have {dense.shape[1]} dimensions, the model "
                                       f"{self.encoder.embedding_dimension}")
        started = time.perf_counter()
        self.create()
        stats = IndexStats(documents=len(documents))
        tokenizer = self.encoder.tokenizer
        for start in range(0, len(documents), batch_size):
            todo = []
            for doc in documents[start : start + batch_size]:
                chunk = Chunk(text=doc.text, start=0, end=len(doc.text), num_tokens=count_tokens(tokenizer, doc.text),
                              index=0)
                key = hashlib.sha1(json.dumps([doc.title, doc.text, "embedded"]).encode()).hexdigest()[:16]
                todo.append(PreparedDocument(doc=doc, chunks=[chunk], embed_texts=[document_text(doc.title, doc.text)],
                                     key=key, ids=[point_id(doc.id, 0)]))
            self._upsert(todo, dense[start : start + batch_size], stats, batch_size)
        return self._finish(stats, started, optimize)

    # -- search -------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        top_k: int = 5,
        mode: SearchMode = "hybrid",
        candidates: int | None = None,
        query_filter: Any = None,
        alpha: float | None = None,
        reranker: Any = None,
        rerank_top_k: int | None = None,
        query_vector: Sequence[float] | None = None,
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks for ``query``: retrieval, then optional reranking.

        Args:
            query: the question; one longer than the model window is truncated to it, with a
                logged warning (the sparse part always uses every token).
            top_k: results to return (> 0).
            mode: ``"dense"``, ``"sparse"`` or ``"hybrid"`` (convex combination of both).
            candidates: hybrid only: results each side contributes before fusion; the
                scores are normalised over them (default ``max(top_k, 100)``, or ``max(rerank_top_k,
                100)`` when reranking: the depth ``medeir evaluate`` and ``medeir tune-hybrid`` use);
                at least ``top_k`` (``rerank_top_k`` when reranking).
            query_filter: payload conditions: a dict (``{"doc_id": "x"}``, a list value means
                any of), a ``qdrant_client.models.Filter``, or (Edge) a ``qdrant_edge.Filter``.
            alpha: hybrid only: the dense side's weight in [0, 1] (default: the model's
                ``hybrid.json``, else 0.5). Each side is normalised as ``hybrid.json`` says
                (``normalization``, min-max when absent), whatever the alpha.
            reranker: a ``MedeirReranker`` (anything with ``score(query, passages)``): the
                ``rerank_top_k`` best hits of the mode are rescored on
                ``document_text(title, text)``, and ``score`` becomes its probability
                (``retrieval_score`` keeps the mode's score); ``None`` = no reranking.
            rerank_top_k: hits retrieved and rescored when reranking (default ``max(4 * top_k, 20)``;
                at least ``top_k``).
            query_vector: the query's dense embedding when it is already computed (benchmarks
                embed every query in one batch through the embedding cache); else it is encoded here.

        Raises:
            InvalidArgumentError: ``top_k <= 0``, ``rerank_top_k < top_k``, ``candidates`` below the hits
                asked for, an unknown mode, or an empty query.
            InvalidTextError: the query holds a lone surrogate.
            CollectionNotFoundError / CollectionMismatchError: see ``check``.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        _check_top_k(top_k)
        if mode not in SEARCH_MODES:
            raise InvalidArgumentError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        if not query.strip():
            raise InvalidArgumentError("query is empty")
        check_text(query, "the query")
        depth = top_k
        if reranker is not None:
            depth = default_rerank_depth(top_k) if rerank_top_k is None else _check_top_k(rerank_top_k, "rerank_top_k")
            if depth < top_k:
                raise InvalidArgumentError(f"rerank_top_k ({depth}) must be at least top_k ({top_k})")
        if candidates is not None:
            _check_top_k(candidates, "candidates")
            if candidates < depth:  # hybrid would return fewer than asked for, without a word
                wanted = "top_k" if reranker is None else "rerank_top_k"
                raise InvalidArgumentError(f"candidates ({candidates}) must be at least {wanted} ({depth}): "
                                           "hybrid search fuses that many hits from each side")
        self.check()
        hits = self._retrieve(query, depth, mode, candidates, query_filter, alpha, query_vector)
        if reranker is None:
            return hits
        return rerank_hits(reranker, query, hits, top_k)

    def candidate_lists(
        self, query: str, *, candidates: int = HYBRID_CANDIDATES, query_filter: Any = None,
        query_vector: Sequence[float] | None = None,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The dense and sparse candidate lists (``{point id: score}``) hybrid search fuses for ``query``.

        ``convex_combination(dense, sparse, alpha, top_k, self.hybrid.normalization)`` of them is
        ``search(mode="hybrid", alpha=alpha, candidates=candidates)`` by point id; ``medeir
        tune-hybrid`` sweeps alpha and the normalization this way.
        """
        self.check()
        dense = self._query_vector(query, query_vector)
        sparse = sparse_query_vector(self.encoder.tokenizer, query)
        return candidate_lists(self.backend, self.collection, dense, sparse, candidates=candidates,
                               query_filter=query_filter, hnsw_ef=self.hnsw_ef)

    def _query_vector(self, query: str, query_vector: Sequence[float] | None) -> list[float]:
        if query_vector is not None:
            return [float(x) for x in query_vector]
        return self.encoder.encode_query(query, overlong="truncate", show_progress=False).tolist()

    def _retrieve(
        self, query: str, top_k: int, mode: str, candidates: int | None, query_filter: Any, alpha: float | None,
        query_vector: Sequence[float] | None,
    ) -> list[SearchHit]:
        """Dense, sparse or hybrid retrieval of the ``top_k`` best chunks (arguments checked by ``search``)."""
        candidates = candidates or max(top_k, HYBRID_CANDIDATES)
        sparse = sparse_query_vector(self.encoder.tokenizer, query)
        if mode == "hybrid":
            weights = self.hybrid.with_alpha(alpha)
            fused = hybrid_search(self.backend, self.collection, self._query_vector(query, query_vector), sparse,
                                  top_k, alpha=weights.alpha, normalization=weights.normalization,
                                  candidates=candidates, query_filter=query_filter, hnsw_ef=self.hnsw_ef)
            return [_hit(record, score) for record, score in fused]
        if mode == "dense":
            request = VectorQuery(DENSE_VECTOR, self._query_vector(query, query_vector), top_k, query_filter,
                                  with_payload=True, hnsw_ef=self.hnsw_ef)
        else:
            if not sparse[0]:
                return []
            request = VectorQuery(SPARSE_VECTOR, sparse, top_k, query_filter, with_payload=True)
        (records,) = self.backend.query(self.collection, [request])
        return [_hit(r, r.score) for r in records]


def rerank_hits(reranker: Any, query: str, hits: Sequence[SearchHit], top_k: int) -> list[SearchHit]:
    """The rerank step: rescore ``hits`` on ``document_text(title, text)``, best ``top_k`` first.

    ``score`` becomes the reranker's score, ``retrieval_score`` keeps the retrieval one; equal
    reranker scores keep the retrieval order.
    """
    hits = list(hits)
    if not hits:
        return []
    scores = reranker.score(query, [document_text(h.title, h.text) for h in hits])
    for hit, score in zip(hits, scores, strict=True):
        hit.retrieval_score = hit.score
        hit.score = float(score)
    hits.sort(key=lambda h: -h.score)
    return hits[:top_k]


def _hit(record: Record, score: float) -> SearchHit:
    payload = record.payload
    return SearchHit(
        doc_id=payload["doc_id"], chunk_index=payload["chunk_index"], score=float(score),
        title=payload.get("title", ""), text=payload["text"], start=payload["start"], end=payload["end"],
        meta=payload.get("meta") or {}, id=record.id, retrieval_score=float(score),
    )
