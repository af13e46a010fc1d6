"""A Qdrant collection of medeir chunks: dense + medical-tokenizer sparse vectors, hybrid search.

Design choices:

- **Embedded by default.** ``QdrantClient(path=...)`` keeps the collection in a folder
  (``./.medeir/qdrant``) with no server and no network; ``url=`` points the same code at a
  Qdrant server, ``":memory:"`` keeps it in RAM (tests). Embedded mode is meant for small
  and medium collections: qdrant-client commits every point to SQLite on its own (about
  18 ms per point on the 2-core test machine), so index large corpora into a server.
- **Two named vectors per point.** ``dense``: the medeir embedding (cosine).
  ``sparse``: lexical weights over the *model's own* WordPiece ids, so "metformin" or
  "HbA1c" match as the medical tokenizer cuts them. A document weight is the BM25
  term-frequency part, ``tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / 256))``; Qdrant adds
  the IDF part (``Modifier.IDF``) from the live collection. A query weight is 1 per
  distinct token, so a sparse score is BM25 with a fixed average length of 256 tokens.
- **Hybrid = convex combination** of the min-max-normalised dense and sparse scores with
  the model's tuned dense weight (``fusion.convex_combination``, alpha from the model's
  ``hybrid.json``). Both candidate lists come from one ``query_batch_points`` call and
  are fused here rather than by Qdrant's RRF, so search runs the very function that
  ``medeir evaluate`` scores, in embedded and server mode alike.
- **Deterministic point ids**, ``uuid5(document id, chunk index)``, and a per-document
  ``doc_key`` (a hash of title, text and chunking settings) in each payload. Before a batch
  is embedded, its ids are fetched with ``retrieve``: a document whose every chunk is
  already stored with the same key is skipped. Re-indexing is therefore idempotent, an
  interrupted run resumes where it stopped (points are upserted with ``wait=True`` batch by
  batch), and a changed document has its old chunks deleted before the new ones go in.
- **The model is part of the collection.** Collection metadata (``medeir``) records the
  model name, a fingerprint of its weights and tokenizer, the vector size and the sparse
  scheme. Opening a collection with another model or another ``truncate_dim`` raises
  ``CollectionMismatchError`` instead of returning meaningless neighbours.
- **A failed run never leaves less than it found.** Points are stored batch by batch, and
  when reading the input fails, the documents read before the bad one are stored before
  the error propagates. ``recreate=True`` does not drop anything first: it builds a new
  collection beside the old one and swaps it in (as an alias with the collection's name)
  only when every document is in; a failed or interrupted rebuild is deleted and the old
  collection stays as it was. The rebuild needs room for both copies until the swap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from medeir_rag.chunking import Chunk, TokenWindow, chunk_text, count_tokens
from medeir_rag.documents import SourceDocument
from medeir_rag.encoder import MedeirEncoder
from medeir_rag.errors import (
    InvalidArgumentError,
    MedeirError,
    MissingDependencyError,
    NotAFolderError,
    check_text,
)
from medeir_rag.fusion import HybridWeights, convex_combination, load_hybrid_weights

logger = logging.getLogger(__name__)

SearchMode = Literal["dense", "sparse", "hybrid"]
SEARCH_MODES: tuple[str, ...] = ("dense", "sparse", "hybrid")
HYBRID_CANDIDATES = 100  # per side, before fusion: the depth evaluate and tune-hybrid normalise over
DEFAULT_QDRANT_PATH = Path(".medeir") / "qdrant"
DEFAULT_COLLECTION = "medeir"
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "sparse"
METADATA_KEY = "medeir"
METADATA_FORMAT = 1
BM25_K1 = 1.2
BM25_B = 0.75
BM25_AVG_TOKENS = 256
SPARSE_SCHEME = f"medeir-bm25-tf/v1 k1={BM25_K1} b={BM25_B} avg_tokens={BM25_AVG_TOKENS}"
POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "medeir-rag/qdrant-points")
MAX_TITLE_SHARE = 4  # a title longer than chunk_size / 4 tokens is stored but not embedded


class CollectionMismatchError(MedeirError, ValueError):
    """The collection was built with another model, vector size or sparse scheme."""


class CollectionNotFoundError(MedeirError, LookupError):
    """The collection does not exist (nothing has been indexed into it yet)."""


class ServerUnreachableError(MedeirError, ConnectionError):
    """The Qdrant server named by ``url`` does not answer."""


class StorageLockedError(MedeirError, RuntimeError):
    """Another client (process, notebook) has the embedded Qdrant folder open."""


# ----------------------------------------------------------------------------
# Clients, ids, fingerprints, sparse vectors


def require_qdrant_client() -> None:
    """Raise ``MissingDependencyError`` (with the extra to install) unless qdrant-client imports."""
    try:
        import qdrant_client  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"qdrant-client is not installed ({error}); install it with: pip install 'medeir_rag[qdrant]'"
        ) from error


def check_qdrant_path(path: str | os.PathLike[str] | None, *, create: bool = True) -> Path | None:
    """The embedded Qdrant folder as a ``Path`` (``None`` for ``":memory:"``), checked without opening it.

    Raises:
        NotAFolderError: ``path`` (or a parent of it) is a file.
        InvalidArgumentError: the folder cannot be created (permissions, read-only disk).
    """
    path = DEFAULT_QDRANT_PATH if path is None else path
    if str(path) == ":memory:":
        return None
    folder = Path(path).expanduser()
    for part in (folder, *folder.parents):
        if part.exists() and not part.is_dir():
            raise NotAFolderError(
                f"the Qdrant path {folder} is not a folder ({part} is a file); pass --qdrant-path a folder "
                "(it is created when missing)"
            )
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidArgumentError(f"cannot create the Qdrant folder {folder}: {error}") from error
    return folder


def open_client(path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None):
    """A ``QdrantClient``: a server at ``url``, else embedded at ``path`` (``":memory:"`` for RAM).

    Raises:
        MissingDependencyError: qdrant-client is not installed.
        NotAFolderError / InvalidArgumentError: see ``check_qdrant_path``.
        StorageLockedError: another client has the embedded folder open.
        ServerUnreachableError: the server at ``url`` does not answer.
    """
    require_qdrant_client()
    from qdrant_client import QdrantClient

    if url:
        client = QdrantClient(url=url, api_key=api_key)
        try:
            client.get_collections()  # one request, so a wrong URL fails here and not mid-run
        except Exception as error:  # connection refused, DNS, TLS, 401: all "not usable from here"
            client.close()
            raise ServerUnreachableError(
                f"cannot use the Qdrant server at {url} ({type(error).__name__}: {error}); "
                "check --qdrant-url (and --qdrant-api-key), or leave it out to use the embedded folder"
            ) from error
        return client
    folder = check_qdrant_path(path)
    if folder is None:
        return QdrantClient(location=":memory:")
    try:
        return QdrantClient(path=str(folder))
    except RuntimeError as error:
        if "already accessed" not in str(error):
            raise
        raise StorageLockedError(
            f"the Qdrant folder {path} is open in another process (another `medeir index`/`medeir query`, "
            "a notebook or a script); close it first, or run a Qdrant server and use --qdrant-url"
        ) from error


def _aliases(client: Any) -> dict[str, str]:
    """``{alias: collection}`` of the whole store."""
    return {a.alias_name: a.collection_name for a in client.get_aliases().aliases}


def collection_exists(client: Any, collection: str) -> bool:
    """Whether ``collection`` exists as a collection or as an alias (``index(recreate=True)`` leaves one)."""
    return client.collection_exists(collection) or collection in _aliases(client)


def _not_found(collection: str, location: str) -> CollectionNotFoundError:
    return CollectionNotFoundError(
        f"collection {collection!r} does not exist at {location}; "
        "index documents first (`medeir index PATH --collection NAME`)"
    )


def require_collection(client: Any, collection: str, location: str) -> None:
    """Raise ``CollectionNotFoundError`` unless ``collection`` exists (no model needed)."""
    if not collection_exists(client, collection):
        raise _not_found(collection, location)


def open_existing(
    collection: str, path: str | os.PathLike[str] | None = None, url: str | None = None, api_key: str | None = None
):
    """A client of a store that holds ``collection``, checked before any model is loaded.

    An embedded folder that does not exist is not created: the collection is simply not there.
    """
    if not url:
        folder = check_qdrant_path(path, create=False)
        if folder is not None and not folder.is_dir():
            raise _not_found(collection, str(path))
    client = open_client(path, url, api_key)
    try:
        require_collection(client, collection, url or str(path))
    except BaseException:
        client.close()
        raise
    return client


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
    """One retrieved chunk; ``text == document_text[start:end]``."""

    doc_id: str
    chunk_index: int
    score: float
    title: str
    text: str
    start: int
    end: int
    meta: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pending:
    doc: SourceDocument
    chunks: list[Chunk]
    embed_texts: list[str]
    key: str
    ids: list[str]


def _check_top_k(top_k: object) -> int:
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise TypeError(f"top_k must be an integer, got {type(top_k).__name__}")
    if top_k <= 0:
        raise InvalidArgumentError(f"top_k must be > 0, got {top_k}")
    return top_k


# ----------------------------------------------------------------------------
# The store


class MedeirVectorStore:
    """A medeir collection in Qdrant.

    Args:
        encoder: a loaded ``MedeirEncoder``, a model path, or ``None`` for the bundled model.
        collection: collection name.
        path: folder of the embedded Qdrant (``":memory:"`` for RAM); ignored with ``url``.
        url: a Qdrant server; the code path is the same as embedded mode.
        api_key: for a server that needs one.
        client: an existing ``QdrantClient`` (then ``path``/``url`` are ignored and the
            client is not closed by ``close()``).

    Use it as a context manager, or call ``close()``: the embedded client holds a lock
    on its folder until closed.
    """

    def __init__(
        self,
        encoder: MedeirEncoder | str | os.PathLike[str] | None = None,
        *,
        collection: str = DEFAULT_COLLECTION,
        path: str | os.PathLike[str] | None = DEFAULT_QDRANT_PATH,
        url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
    ) -> None:
        self.encoder = encoder if isinstance(encoder, MedeirEncoder) else MedeirEncoder(encoder)
        self.hybrid = load_hybrid_weights(self.encoder.path)  # the model's hybrid.json, read once
        self.collection = collection
        self.location = url or str(path)
        self._owns_client = client is None
        self.client = client if client is not None else open_client(path, url, api_key)
        self.server = bool(url)
        self._identity: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the client (releases the embedded folder's lock)."""
        if self._owns_client and self.client is not None:
            self.client.close()
        self.client = None

    def __enter__(self) -> MedeirVectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = model_identity(self.encoder)
        return self._identity

    def exists(self) -> bool:
        """Whether the collection (or an alias of that name, left by ``recreate``) exists."""
        return collection_exists(self.client, self.collection)

    def _aliases(self) -> dict[str, str]:
        return _aliases(self.client)

    def count(self) -> int:
        """Points in the collection (0 when it does not exist)."""
        if not self.exists():
            return 0
        return self.client.count(self.collection, exact=True).count

    # -- collection ---------------------------------------------------------

    def create(self, *, recreate: bool = False) -> None:
        """Create the collection if missing (or drop and recreate it), else check it matches.

        ``recreate=True`` drops the collection at once; ``index(..., recreate=True)`` instead
        keeps it until a complete replacement is ready.
        """
        from qdrant_client import models

        if recreate:
            self.drop()
        if self.exists():
            self.check()
            return
        self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(size=self.encoder.embedding_dimension, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={METADATA_KEY: self.identity},
        )
        if self.server:  # payload indexes do nothing in embedded mode (and warn there)
            self.client.create_payload_index(self.collection, "doc_id", models.PayloadSchemaType.KEYWORD)

    def drop(self) -> None:
        """Delete the collection (and, when the name is an alias, the collection behind it)."""
        from qdrant_client import models

        target = self._aliases().get(self.collection)
        if target is not None:
            self.client.update_collection_aliases(
                change_aliases_operations=[
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.collection))
                ]
            )
            self.client.delete_collection(target)
        elif self.client.collection_exists(self.collection):
            self.client.delete_collection(self.collection)

    def _swap_in(self, build: str) -> None:
        """Make ``build`` the collection: the name becomes an alias of it, the old data go."""
        from qdrant_client import models

        old = self._aliases().get(self.collection)
        operations: list[Any] = []
        if old is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.collection)))
        elif self.client.collection_exists(self.collection):
            # a plain collection cannot be renamed or replaced by an alias in one step; from
            # here to the alias below (milliseconds), the new points are only under `build`
            self.client.delete_collection(self.collection)
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=build, alias_name=self.collection))
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)
        if old is not None:
            self.client.delete_collection(old)

    def check(self) -> dict[str, Any]:
        """Raise unless the collection exists and was built with this model; returns its metadata."""
        require_collection(self.client, self.collection, self.location)
        config = self.client.get_collection(self.collection).config
        vectors = config.params.vectors
        dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        hint = "use the model it was built with, or rebuild it with `medeir index --recreate`"
        if dense is None or SPARSE_VECTOR not in (config.params.sparse_vectors or {}):
            raise CollectionMismatchError(
                f"collection {self.collection!r} at {self.location} was not created by medeir "
                f"(no '{DENSE_VECTOR}'/'{SPARSE_VECTOR}' vectors); pick another --collection or --recreate it"
            )
        if dense.size != self.encoder.embedding_dimension:
            raise CollectionMismatchError(
                f"collection {self.collection!r} holds {dense.size}-dimensional vectors but model "
                f"{self.encoder.path.name!r} gives {self.encoder.embedding_dimension} "
                f"(truncate_dim={self.encoder.truncate_dim}); {hint}"
            )
        stored = (config.metadata or {}).get(METADATA_KEY)
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
    ) -> IndexStats:
        """Chunk, embed and upsert documents; returns the counts.

        Args:
            documents: ``SourceDocument`` objects (``medeir_rag.documents.read_documents``).
            chunk_size: tokens per chunk including the title; ``None`` = the model window.
            chunk_overlap: tokens shared by consecutive chunks.
            batch_size: chunks embedded and upserted together (the unit of resumption).
            recreate: replace the collection by one holding exactly ``documents``: they are
                indexed into a new collection, swapped in only when all are in; on any
                error (or Ctrl-C) the new one is deleted and the old one is left as it was.
            embed_title: embed ``title + "\\n" + chunk`` (the title's tokens count against
                ``chunk_size``; titles over a quarter of it are not embedded).
            show_progress: tqdm bar over documents.

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
        settings = (chunk_size, chunk_overlap, batch_size, embed_title, show_progress)
        if not (recreate and self.exists()):
            self.create()
            return self._index(documents, *settings)
        final, build = self.collection, f"{self.collection}-rebuild-{uuid.uuid4().hex[:12]}"
        self.collection = build
        try:
            self.create()
            stats = self._index(documents, *settings)
        except BaseException:
            try:
                self.client.delete_collection(build)
            except Exception as error:  # the original error matters more; say what is left
                logger.warning("could not delete the unfinished rebuild %r: %s", build, error)
            raise
        finally:
            self.collection = final
        self._swap_in(build)
        return stats

    def _index(
        self,
        documents: Iterable[SourceDocument],
        chunk_size: int,
        chunk_overlap: int,
        batch_size: int,
        embed_title: bool,
        show_progress: bool,
    ) -> IndexStats:
        """``index`` into the existing ``self.collection``."""
        started = time.perf_counter()

        stats = IndexStats()
        seen: set[str] = set()
        pending: list[_Pending] = []
        pending_chunks = 0
        progress = tqdm(desc="Indexing", unit="doc", disable=not show_progress)
        iterator = iter(documents)
        try:
            while True:
                try:
                    doc = next(iterator)
                    stats.documents += 1
                    progress.update(1)
                    item = self._prepare(doc, stats, seen, chunk_size, chunk_overlap, embed_title)
                except StopIteration:
                    break
                except Exception:  # a bad record: store every document read before it, then stop
                    if pending:
                        self._flush(pending, stats, batch_size)
                    raise
                if item is None:
                    continue
                pending.append(item)
                pending_chunks += len(item.chunks)
                if pending_chunks >= batch_size:
                    self._flush(pending, stats, batch_size)
                    progress.set_postfix(chunks=stats.chunks, skipped=stats.skipped_existing)
                    pending, pending_chunks = [], 0
            if pending:
                self._flush(pending, stats, batch_size)
            progress.set_postfix(chunks=stats.chunks, skipped=stats.skipped_existing)
        finally:
            progress.close()
        stats.seconds = time.perf_counter() - started
        return stats

    def _prepare(
        self, doc: SourceDocument, stats: IndexStats, seen: set[str], chunk_size: int, chunk_overlap: int,
        embed_title: bool,
    ) -> _Pending | None:
        """Check and chunk one document; ``None`` (and a count in ``stats``) when it is skipped."""
        if not isinstance(doc, SourceDocument):
            raise TypeError(f"documents must be SourceDocument objects, got {type(doc).__name__}")
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
        tokenizer = self.encoder.tokenizer
        title = doc.title.strip() if embed_title else ""
        title_tokens = count_tokens(tokenizer, title) if title else 0
        if title_tokens > chunk_size // MAX_TITLE_SHARE or chunk_size - title_tokens <= chunk_overlap:
            title, title_tokens = "", 0
        chunks = chunk_text(doc.text, tokenizer, chunk_size, chunk_overlap, reserved_tokens=title_tokens)
        if not chunks:  # only characters the tokenizer drops (control characters)
            stats.skipped_empty += 1
            return None
        key_source = json.dumps([doc.title, doc.text, chunk_size, chunk_overlap, bool(title)])
        return _Pending(
            doc=doc,
            chunks=chunks,
            embed_texts=[f"{title}\n{c.text}" if title else c.text for c in chunks],
            key=hashlib.sha1(key_source.encode()).hexdigest()[:16],
            ids=[point_id(doc.id, c.index) for c in chunks],
        )

    def _flush(self, pending: list[_Pending], stats: IndexStats, batch_size: int) -> None:
        """Skip complete documents, delete stale chunks of changed ones, embed and upsert the rest."""
        from qdrant_client import models

        ids = [i for p in pending for i in p.ids]
        stored = self.client.retrieve(self.collection, ids=ids, with_payload=["doc_key"], with_vectors=False)
        stored_keys = {str(r.id): (r.payload or {}).get("doc_key") for r in stored}
        todo: list[_Pending] = []
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
            self.client.delete(
                self.collection,
                points_selector=models.FilterSelector(
                    filter=models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=stale))])
                ),
                wait=True,
            )
        if not todo:
            return
        texts = [t for p in todo for t in p.embed_texts]
        dense = self.encoder.encode_document(texts, overlong="error", show_progress=False)
        sparse = sparse_document_vectors(self.encoder.tokenizer, texts)
        points = []
        row = 0
        for p in todo:
            for chunk, pid in zip(p.chunks, p.ids, strict=True):
                indices, values = sparse[row]
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
                points.append(
                    models.PointStruct(
                        id=pid,
                        vector={
                            DENSE_VECTOR: dense[row].tolist(),
                            SPARSE_VECTOR: models.SparseVector(indices=indices, values=values),
                        },
                        payload=payload,
                    )
                )
                row += 1
        for start in range(0, len(points), batch_size):
            self.client.upsert(self.collection, points=points[start : start + batch_size], wait=True)
        stats.indexed += len(todo)
        stats.chunks += len(points)

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
    ) -> list[SearchHit]:
        """The ``top_k`` best chunks for ``query``.

        Args:
            query: the question; one longer than the model window is truncated to it, with a
                logged warning (the sparse part always uses every token).
            top_k: results to return (> 0).
            mode: ``"dense"``, ``"sparse"`` or ``"hybrid"`` (convex combination of both).
            candidates: hybrid only: results each side contributes before fusion; the
                scores are normalised over them (default ``max(top_k, 100)``, the depth
                ``medeir evaluate`` and ``medeir tune-hybrid`` use).
            query_filter: a ``qdrant_client.models.Filter`` on the payload.
            alpha: hybrid only: the dense side's weight in [0, 1] (default: the model's
                ``hybrid.json``, else 0.5).

        Raises:
            InvalidArgumentError: ``top_k <= 0``, an unknown mode, or an empty query.
            InvalidTextError: the query holds a lone surrogate.
            CollectionNotFoundError / CollectionMismatchError: see ``check``.
        """
        from qdrant_client import models

        if not isinstance(query, str):
            raise TypeError(f"query must be a string, got {type(query).__name__}")
        _check_top_k(top_k)
        if mode not in SEARCH_MODES:
            raise InvalidArgumentError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        if not query.strip():
            raise InvalidArgumentError("query is empty")
        check_text(query, "the query")
        self.check()
        candidates = candidates or max(top_k, HYBRID_CANDIDATES)

        def dense_vector() -> list[float]:
            return self.encoder.encode_query(query, overlong="truncate", show_progress=False).tolist()

        indices, values = sparse_query_vector(self.encoder.tokenizer, query)
        sparse = models.SparseVector(indices=indices, values=values)
        if mode == "dense":
            response = self.client.query_points(
                self.collection, query=dense_vector(), using=DENSE_VECTOR, limit=top_k,
                query_filter=query_filter, with_payload=True,
            )
        elif mode == "sparse":
            if not indices:
                return []
            response = self.client.query_points(
                self.collection, query=sparse, using=SPARSE_VECTOR, limit=top_k,
                query_filter=query_filter, with_payload=True,
            )
        else:
            return self._hybrid_search(dense_vector(), sparse, top_k, candidates, query_filter, alpha)
        return [_hit(p, p.score) for p in response.points]

    def _hybrid_search(
        self, dense: list[float], sparse: Any, top_k: int, candidates: int, query_filter: Any, alpha: float | None,
    ) -> list[SearchHit]:
        """Both candidate lists in one batch call, fused by ``convex_combination``."""
        from qdrant_client import models

        alpha = self.hybrid.alpha if alpha is None else HybridWeights(alpha=alpha).alpha
        requests = [models.QueryRequest(query=dense, using=DENSE_VECTOR, limit=candidates, filter=query_filter)]
        if sparse.indices:
            requests.append(models.QueryRequest(query=sparse, using=SPARSE_VECTOR, limit=candidates, filter=query_filter))
        responses = self.client.query_batch_points(self.collection, requests=requests)
        sides = [{str(p.id): float(p.score) for p in response.points} for response in responses]
        fused = convex_combination(sides[0], sides[1] if len(sides) > 1 else {}, alpha, top_k)
        points = {str(p.id): p for p in self.client.retrieve(self.collection, ids=list(fused), with_payload=True)}
        return [_hit(points[point_id], score) for point_id, score in fused.items() if point_id in points]


def _hit(point: Any, score: float) -> SearchHit:
    payload = point.payload
    return SearchHit(
        doc_id=payload["doc_id"], chunk_index=payload["chunk_index"], score=float(score),
        title=payload.get("title", ""), text=payload["text"], start=payload["start"], end=payload["end"],
        meta=payload.get("meta") or {}, id=str(point.id),
    )
