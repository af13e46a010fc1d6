"""Where a ``MedeirVectorStore`` keeps its points: Qdrant Edge in a folder, or qdrant-client for a server.

Design choices:

- **A small backend interface** (``StoreBackend``): create, describe, drop and swap a
  collection; upsert, retrieve, delete a document's chunks, batch-query, count, scroll;
  payload indexes, ``optimize``, ``flush``, ``close``. Everything medeir decides (point ids,
  batching, resuming, the model check, hybrid fusion, recreate-and-swap) lives once in
  ``store.py`` above it. Points, queries and results cross the interface as plain
  dataclasses (``StoredPoint``, ``VectorQuery``, ``Record``) with ids as strings.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/store_backends.py``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medeir_rag.errors import InvalidArgumentError, MedeirError, MissingDependencyError, NotAFolderError

logger = logging.getLogger(__name__)

DEFAULT_QDRANT_PATH = Path(".medeir") / "qdrant"
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "sparse"
METADATA_KEY = "medeir"
EDGE_METADATA_FILE = "medeir.json"
EDGE_CONFIG_FILE = "edge_config.json"
READY_MARKER = "BUILD_COMPLETE"
LEGACY_BACKUP_SUFFIX = ".qdrant-client-backup"
PAYLOAD_INDEXES = {"doc_id": "keyword", "source": "keyword", "chunk_index": "integer"}
_EDGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,199}$")


# ----------------------------------------------------------------------------
# Errors


class CollectionMismatchError(MedeirError, ValueError):
    """The collection was built with another model, vector size or sparse scheme."""


class CollectionNotFoundError(MedeirError, LookupError):
    """The collection does not exist (nothing has been indexed into it yet)."""


class ServerUnreachableError(MedeirError, ConnectionError):
    """The Qdrant server named by ``url`` does not answer."""


class StorageLockedError(MedeirError, RuntimeError):
    """Another client (process, notebook) has the embedded Qdrant folder open."""


class LegacyStoreError(MedeirError, ValueError):
    """The folder was written by qdrant-client's local mode, which Qdrant Edge cannot read."""


# ----------------------------------------------------------------------------
# What crosses the interface


@dataclass
class StoredPoint:
    """One chunk as written: a dense vector, a sparse ``(indices, values)`` and its payload."""

    id: str
    dense: Sequence[float]
    sparse: tuple[Sequence[int], Sequence[float]]
    payload: dict[str, Any]


@dataclass
class VectorQuery:
    """One nearest-neighbour request against the ``dense`` or the ``sparse`` vector."""

    using: str
    vector: Any  # list[float] for dense, (indices, values) for sparse
    limit: int
    filter: Any = None
    with_payload: bool = False
    exact: bool = False
    hnsw_ef: int | None = None  # HNSW beam width at query time (None: the engine's default, ef_construct)


@dataclass
class Record:
    """A point read back: id (a string), score when it comes from a query, payload when asked."""

    id: str
    score: float | None = None
    payload: dict[str, Any] | None = None


@dataclass
class CollectionInfo:
    """What ``check`` compares: the dense width, whether a sparse vector exists, the model record."""

    dense_size: int | None
    has_sparse: bool
    identity: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)


def _sparse_pairs(indices: Sequence[int], values: Sequence[float]) -> tuple[list[int], list[float]]:
    return [int(i) for i in indices], [float(v) for v in values]


class StoreBackend:
    """The operations ``MedeirVectorStore`` needs from a Qdrant engine (one folder or one server)."""

    engine = "abstract"
    location = ""
    supports_payload_indexes = True

    def lock(self, collection: str) -> None:
        """Claim ``collection`` for this process (a no-op where the engine arbitrates)."""

    def check_name(self, collection: str) -> None:
        """Raise ``InvalidArgumentError`` when ``collection`` cannot be a collection name here."""

    def exists(self, collection: str) -> bool:
        raise NotImplementedError

    def collections(self) -> list[str]:
        raise NotImplementedError

    def create(self, collection: str, dimension: int, identity: dict[str, Any]) -> None:
        raise NotImplementedError

    def describe(self, collection: str) -> CollectionInfo:
        raise NotImplementedError

    def drop(self, collection: str) -> None:
        raise NotImplementedError

    def build_name(self, collection: str) -> str:
        """A fresh name to build a replacement of ``collection`` under (see ``swap_in``)."""
        return f"{collection}-rebuild-{uuid.uuid4().hex[:12]}"

    def swap_in(self, collection: str, build: str) -> None:
        """Make ``build`` the collection called ``collection``; the old data go."""
        raise NotImplementedError

    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        raise NotImplementedError

    def retrieve(self, collection: str, ids: Sequence[str], with_payload: bool | list[str] = True) -> list[Record]:
        raise NotImplementedError

    def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        raise NotImplementedError

    def query(self, collection: str, requests: Sequence[VectorQuery]) -> list[list[Record]]:
        raise NotImplementedError

    def count(self, collection: str) -> int:
        raise NotImplementedError

    def scroll(self, collection: str, *, with_payload: bool | list[str] = True, batch: int = 1000) -> Iterator[Record]:
        raise NotImplementedError

    def create_index(self, collection: str, field_name: str, schema: str) -> None:
        raise NotImplementedError

    def optimize(self, collection: str) -> bool:
        return False

    def flush(self, collection: str) -> None:
        """Write what is pending to disk."""

    def close(self) -> None:
        raise NotImplementedError

    def convert_filter(self, query_filter: Any) -> Any:
        raise NotImplementedError


# ----------------------------------------------------------------------------
# Dependencies and folders


def require_qdrant_client() -> None:
    """Raise ``MissingDependencyError`` (with the extra to install) unless qdrant-client imports."""
    try:
        import qdrant_client  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"qdrant-client is not installed ({error}); install it with: pip install 'medeir_rag[qdrant]'"
        ) from error


def require_qdrant_edge() -> None:
    """Raise ``MissingDependencyError`` (with the extra to install) unless qdrant-edge-py imports."""
    try:
        import qdrant_edge  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(
            f"qdrant-edge-py (the embedded Qdrant engine) is not installed ({error}); install it with: "
            "pip install 'medeir_rag[qdrant]' (or pass --qdrant-url to use a Qdrant server)"
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
    _finish_migration(folder)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InvalidArgumentError(f"cannot create the Qdrant folder {folder}: {error}") from error
    return folder


def legacy_collections(folder: Path) -> list[str] | None:
    """The collections of a qdrant-client local-mode folder, ``None`` when it is not one.

    qdrant-client writes ``meta.json`` (and ``.lock``) on opening any folder; one that lists no
    collection holds nothing and does not count.
    """
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    names = sorted({*(data.get("collections") or {}), *(data.get("aliases") or {})})
    return names or None


def legacy_error(folder: Path, names: Sequence[str]) -> LegacyStoreError:
    return LegacyStoreError(
        f"the Qdrant folder {folder} was written by qdrant-client's local mode (collections: {', '.join(names)}), "
        "the embedded engine of medeir before it moved to Qdrant Edge, and Qdrant Edge cannot open it; "
        f"convert it without re-embedding with `medeir index --migrate --qdrant-path {folder}` (the old files "
        f"are kept as {folder}{LEGACY_BACKUP_SUFFIX}), or index your documents again into another folder: "
        "`medeir index PATH --qdrant-path NEW_FOLDER` (--recreate cannot replace a folder in the old format)"
    )


# ----------------------------------------------------------------------------
# Qdrant Edge


def _flock(path: Path):
    """An open file holding an exclusive ``flock`` on ``path``; ``None`` when another holder has it."""
    handle = open(path, "a+b")  # kept open while the lock is held
    try:
        import fcntl
    except ImportError:  # not POSIX: Edge's own WAL lock is the only guard
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _locked_message(folder: Any, collection: str) -> str:
    return (
        f"the Qdrant folder {folder} (collection {collection!r}) is open in another process (another "
        "`medeir index`/`medeir query`, a notebook or a script); close it first, or run a Qdrant server "
        "and use --qdrant-url"
    )


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (temp file, fsync, rename)."""
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _finish_migration(folder: Path) -> None:
    """A migration cut between its two renames leaves ``folder`` missing: finish it."""
    if folder.exists() or not folder.parent.is_dir():
        return
    for staging in sorted(folder.parent.glob(f".{folder.name}.edge-migration-*")):
        if (staging / READY_MARKER).is_file():
            os.rename(staging, folder)
            (folder / READY_MARKER).unlink(missing_ok=True)
            logger.warning("finished the interrupted migration of %s to Qdrant Edge", folder)
            return


class EdgeBackend(StoreBackend):
    """Collections as Qdrant Edge shards, one subfolder each, in one folder.

    Args:
        folder: the store folder (created when missing); ``None`` means a temporary folder
            deleted by ``close()`` (what ``path=":memory:"`` gives).
        create: create the folder when missing (``False``: a missing folder holds nothing).
    """

    engine = "edge"

    def __init__(self, folder: str | os.PathLike[str] | None, *, create: bool = True) -> None:
        require_qdrant_edge()
        import qdrant_edge

        self._edge = qdrant_edge
        self._temporary = folder is None
        if folder is None:
            self.root = Path(tempfile.mkdtemp(prefix="medeir-edge-"))
            self.location = ":memory:"
        else:
            self.root = Path(folder)
            self.location = str(folder)
            names = legacy_collections(self.root) if self.root.is_dir() else None
            if names:
                raise legacy_error(self.root, names)
            if create:
                self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, Any] = {}
        self._locks: dict[str, Any] = {}
        self._info: dict[str, CollectionInfo] = {}

    # -- names, locks and recovery -------------------------------------------

    def check_name(self, collection: str) -> None:
        if not isinstance(collection, str) or not _EDGE_NAME.match(collection) or collection in (".", ".."):
            raise InvalidArgumentError(
                f"collection name {collection!r} cannot be a folder name: use letters, digits and _ . @ + - "
                "(not starting with . or -), at most 200 characters"
            )

    @staticmethod
    def _owner(collection: str) -> str:
        """The user-facing collection a (hidden) build belongs to."""
        match = re.match(r"^\.(.+)\.build-[0-9a-f]+$", collection)
        return match.group(1) if match else collection

    def lock(self, collection: str) -> None:
        """Take ``collection``'s lock (raises ``StorageLockedError`` at once when it is held) and recover."""
        owner = self._owner(collection)
        if owner in self._locks:
            return
        self.check_name(owner)
        if not self.root.is_dir():
            return  # nothing stored, nothing to guard; ``create`` makes the folder and locks then
        handle = _flock(self.root / f".{owner}.lock")
        if handle is None:
            raise StorageLockedError(_locked_message(self.location, owner))
        self._locks[owner] = handle
        self._recover(owner)

    def _recover(self, collection: str) -> None:
        """Finish or undo a swap that a crash cut short; delete unfinished builds (lock held)."""
        final = self.root / collection
        builds = sorted(self.root.glob(f".{collection}.build-*"), key=lambda p: p.stat().st_mtime)
        olds = sorted(self.root.glob(f".{collection}.old-*"), key=lambda p: p.stat().st_mtime)
        trash = list(self.root.glob(f".{collection}.trash-*"))
        if not final.exists():
            ready = [b for b in builds if (b / READY_MARKER).is_file()]
            if ready:
                os.rename(ready[-1], final)
                (final / READY_MARKER).unlink(missing_ok=True)
                builds.remove(ready[-1])
                logger.warning("finished an interrupted swap: %s now holds the rebuilt collection", final)
            elif olds:
                os.rename(olds[-1], final)
                olds.remove(olds[-1])
                logger.warning("restored %s from before an interrupted swap", final)
        for leftover in (*builds, *olds, *trash):
            logger.warning("deleting %s, left by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)

    def _path(self, collection: str) -> Path:
        return self.root / collection

    def _load(self, collection: str) -> Any:
        """The open shard of ``collection`` (loaded on first use)."""
        shard = self._shards.get(collection)
        if shard is not None:
            return shard
        self.lock(collection)
        path = self._path(collection)
        if not (path / EDGE_CONFIG_FILE).is_file():
            raise CollectionNotFoundError(
                f"collection {collection!r} does not exist at {self.location}; "
                "index documents first (`medeir index PATH --collection NAME`)"
            )
        try:
            shard = self._edge.EdgeShard.load(str(path))
        except Exception as error:
            if "WouldBlock" in str(error):  # Edge's WAL lock: "Can't init WAL: Kind(WouldBlock)"
                raise StorageLockedError(_locked_message(self.location, self._owner(collection))) from error
            raise
        self._shards[collection] = shard
        return shard

    def _release(self, collection: str) -> None:
        shard = self._shards.pop(collection, None)
        self._info.pop(collection, None)
        if shard is not None:
            shard.flush()
            shard.close()

    # -- collections -----------------------------------------------------------

    def exists(self, collection: str) -> bool:
        return (self._path(collection) / EDGE_CONFIG_FILE).is_file()

    def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir()
            if not p.name.startswith(".") and (p / EDGE_CONFIG_FILE).is_file()
        )

    def create(self, collection: str, dimension: int, identity: dict[str, Any]) -> None:
        """A new shard with the dense and sparse (IDF) vectors, the model record and the payload indexes.

        A user-named collection is built under a hidden name and renamed into place, so a
        crash never leaves a collection without its model record.
        """
        edge = self._edge
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock(collection)
        owner = self._owner(collection)
        target = collection if owner != collection else self.build_name(collection)
        config = edge.EdgeConfig(
            vectors={DENSE_VECTOR: edge.EdgeVectorParams(size=int(dimension), distance=edge.Distance.Cosine)},
            sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        )
        path = self._path(target)
        shard = edge.EdgeShard.create(str(path), config)
        try:
            for name, schema in PAYLOAD_INDEXES.items():
                shard.update(edge.UpdateOperation.create_field_index(name, self._schema(schema)))
            shard.flush()
            _write_json(path / EDGE_METADATA_FILE, {METADATA_KEY: identity, "dimension": int(dimension)})
        except BaseException:
            shard.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        if target == collection:
            self._shards[collection] = shard
            return
        shard.close()
        (path / READY_MARKER).touch()
        self._rename_in(collection, path)

    def _schema(self, schema: str) -> Any:
        types = self._edge.PayloadSchemaType
        return {"keyword": types.Keyword, "integer": types.Integer, "float": types.Float, "bool": types.Bool,
                "text": types.Text, "datetime": types.Datetime, "uuid": types.Uuid}[schema]

    def describe(self, collection: str) -> CollectionInfo:
        info = self._info.get(collection)
        if info is not None:
            return info
        path = self._path(collection)
        try:
            config = json.loads((path / EDGE_CONFIG_FILE).read_text())
        except (OSError, ValueError) as error:
            raise CollectionNotFoundError(
                f"collection {collection!r} does not exist at {self.location} ({error}); "
                "index documents first (`medeir index PATH --collection NAME`)"
            ) from error
        dense = (config.get("vectors") or {}).get(DENSE_VECTOR) or {}
        try:
            record = json.loads((path / EDGE_METADATA_FILE).read_text()).get(METADATA_KEY)
        except (OSError, ValueError, AttributeError):
            record = None
        info = CollectionInfo(
            dense_size=dense.get("size"), has_sparse=SPARSE_VECTOR in (config.get("sparse_vectors") or {}),
            identity=record,
        )
        self._info[collection] = info
        return info

    def drop(self, collection: str) -> None:
        self.lock(collection)
        self._release(collection)
        path = self._path(collection)
        if path.exists():
            trash = self.root / f".{self._owner(collection)}.trash-{uuid.uuid4().hex[:12]}"
            os.rename(path, trash)  # gone at once; a delete cut short is finished by the next lock holder
            shutil.rmtree(trash, ignore_errors=True)

    def build_name(self, collection: str) -> str:
        return f".{collection}.build-{uuid.uuid4().hex[:12]}"

    def swap_in(self, collection: str, build: str) -> None:
        """Rename the finished ``build`` folder to ``collection`` (the old one is renamed away, then deleted)."""
        self.lock(collection)
        path = self._path(build)
        self._release(build)
        (path / READY_MARKER).touch()
        _fsync_dir(path)
        self._rename_in(collection, path)

    def _rename_in(self, collection: str, build: Path) -> None:
        final = self._path(collection)
        self._release(collection)
        old = None
        if final.exists():
            old = self.root / f".{collection}.old-{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
        os.rename(build, final)  # from here the new collection is in place
        (final / READY_MARKER).unlink(missing_ok=True)
        _fsync_dir(self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    # -- points ----------------------------------------------------------------

    def _point(self, point: StoredPoint) -> Any:
        edge = self._edge
        indices, values = _sparse_pairs(*point.sparse)
        return edge.Point(
            id=point.id,
            vector={DENSE_VECTOR: [float(x) for x in point.dense],
                    SPARSE_VECTOR: edge.SparseVector(indices=indices, values=values)},
            payload=point.payload,
        )

    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        if points:
            self._load(collection).update(self._edge.UpdateOperation.upsert_points([self._point(p) for p in points]))

    def retrieve(self, collection: str, ids: Sequence[str], with_payload: bool | list[str] = True) -> list[Record]:
        if not ids:
            return []
        records = self._load(collection).retrieve(list(ids), with_payload=with_payload, with_vector=False)
        return [Record(id=str(r.id), payload=r.payload) for r in records]

    def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        edge = self._edge
        condition = edge.Filter(must=[edge.FieldCondition(key="doc_id", match=edge.MatchAny(any=list(doc_ids)))])
        self._load(collection).update(edge.UpdateOperation.delete_points_by_filter(condition))

    def _request(self, query: VectorQuery) -> Any:
        edge = self._edge
        vector = query.vector
        if query.using == SPARSE_VECTOR:
            vector = edge.SparseVector(*_sparse_pairs(*vector))
        else:
            vector = [float(x) for x in vector]
        return edge.QueryRequest(
            query=edge.Query.Nearest(vector, using=query.using), limit=int(query.limit),
            filter=self.convert_filter(query.filter), with_payload=query.with_payload,
            params=edge.SearchParams(hnsw_ef=query.hnsw_ef, exact=query.exact)
            if query.exact or query.hnsw_ef else None,
        )

    def query(self, collection: str, requests: Sequence[VectorQuery]) -> list[list[Record]]:
        shard = self._load(collection)
        built = [self._request(r) for r in requests]
        results = shard.query_batch(self._edge.QueryBatchRequest(built)) if len(built) > 1 else [shard.query(built[0])]
        return [[Record(id=str(p.id), score=float(p.score), payload=p.payload) for p in points] for points in results]

    def count(self, collection: str) -> int:
        return int(self._load(collection).count(self._edge.CountRequest(exact=True)))

    def scroll(self, collection: str, *, with_payload: bool | list[str] = True, batch: int = 1000) -> Iterator[Record]:
        shard = self._load(collection)
        offset = None
        while True:
            records, offset = shard.scroll(
                self._edge.ScrollRequest(offset=offset, limit=batch, with_payload=with_payload, with_vector=False)
            )
            for r in records:
                yield Record(id=str(r.id), payload=r.payload)
            if offset is None:
                return

    def create_index(self, collection: str, field_name: str, schema: str) -> None:
        self._load(collection).update(self._edge.UpdateOperation.create_field_index(field_name, self._schema(schema)))

    def optimize(self, collection: str) -> bool:
        shard = self._load(collection)
        changed = bool(shard.optimize())
        shard.flush()
        return changed

    def flush(self, collection: str) -> None:
        shard = self._shards.get(collection)
        if shard is not None:
            shard.flush()

    def close(self) -> None:
        errors = []
        for name in list(self._shards):
            try:
                self._release(name)
            except Exception as error:  # close the others, then report
                errors.append(error)
        for handle in self._locks.values():
            handle.close()
        self._locks.clear()
        if self._temporary:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise errors[0]

    # -- filters ---------------------------------------------------------------

    def convert_filter(self, query_filter: Any) -> Any:
        """An Edge ``Filter`` from a dict, an Edge ``Filter`` or a ``qdrant_client.models.Filter``."""
        if query_filter is None:
            return None
        edge = self._edge
        if isinstance(query_filter, edge.Filter):
            return query_filter
        if isinstance(query_filter, Mapping):
            return edge.Filter(must=[self._match(key, value) for key, value in query_filter.items()])
        return _edge_condition(edge, query_filter)

    def _match(self, key: str, value: Any) -> Any:
        edge = self._edge
        if isinstance(value, list | tuple | set):
            return edge.FieldCondition(key=key, match=edge.MatchAny(any=list(value)))
        return edge.FieldCondition(key=key, match=edge.MatchValue(value=value))


def _edge_condition(edge: Any, condition: Any) -> Any:
    """Translate one ``qdrant_client.models`` filter or condition into its Edge twin."""
    kind = type(condition).__name__
    if kind == "Filter":
        def many(items: Any) -> list[Any] | None:
            if items is None:
                return None
            return [_edge_condition(edge, c) for c in (items if isinstance(items, list) else [items])]

        min_should = None
        if getattr(condition, "min_should", None) is not None:
            min_should = edge.MinShould(
                conditions=many(condition.min_should.conditions), min_count=condition.min_should.min_count
            )
        return edge.Filter(must=many(condition.must), should=many(condition.should),
                           must_not=many(condition.must_not), min_should=min_should)
    if kind == "FieldCondition":
        arguments: dict[str, Any] = {}
        if condition.match is not None:
            arguments["match"] = _edge_match(edge, condition.match)
        if condition.range is not None:
            bounds = {k: getattr(condition.range, k) for k in ("gt", "gte", "lt", "lte")}
            arguments["range"] = edge.RangeFloat(**{k: v for k, v in bounds.items() if v is not None})
        if condition.values_count is not None:
            counts = {k: getattr(condition.values_count, k) for k in ("gt", "gte", "lt", "lte")}
            arguments["values_count"] = edge.ValuesCount(**{k: v for k, v in counts.items() if v is not None})
        for flag in ("is_empty", "is_null"):
            if getattr(condition, flag, None) is not None:
                arguments[flag] = getattr(condition, flag)
        if not arguments or any(getattr(condition, g, None) is not None for g in ("geo_bounding_box", "geo_radius",
                                                                                    "geo_polygon")):
            raise InvalidArgumentError(f"this filter condition is not supported by the Qdrant Edge store: {condition}")
        return edge.FieldCondition(key=condition.key, **arguments)
    if kind == "HasIdCondition":
        return edge.HasIdCondition(point_ids={str(i) for i in condition.has_id})
    if kind == "IsEmptyCondition":
        return edge.IsEmptyCondition(key=condition.is_empty.key)
    if kind == "IsNullCondition":
        return edge.IsNullCondition(key=condition.is_null.key)
    if kind == "NestedCondition":
        return edge.NestedCondition(key=condition.nested.key, filter=_edge_condition(edge, condition.nested.filter))
    raise InvalidArgumentError(
        f"query_filter must be a dict, a qdrant_edge.Filter or a qdrant_client.models.Filter, got {kind}"
    )


def _edge_match(edge: Any, match: Any) -> Any:
    kind = type(match).__name__
    if kind == "MatchValue":
        return edge.MatchValue(value=match.value)
    if kind == "MatchAny":
        return edge.MatchAny(any=list(match.any))
    if kind == "MatchExcept":
        return edge.MatchExcept(except_=list(match.except_))
    if kind == "MatchText":
        return edge.MatchText(text=match.text)
    if kind == "MatchPhrase":
        return edge.MatchPhrase(phrase=match.phrase)
    if kind == "MatchTextAny":
        return edge.MatchTextAny(text_any=match.text_any)
    raise InvalidArgumentError(f"match {kind} is not supported by the Qdrant Edge store")


# ----------------------------------------------------------------------------
# qdrant-client: a server (or its local mode)


class _OneCallAtATime:
    """A qdrant-client ``QdrantClient`` whose method calls hold one lock: its local mode is not thread-safe.

    (A server is: its client is used as it is.) Searching while another thread indexes then
    waits for the upsert in progress instead of failing.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


class ServerBackend(StoreBackend):
    """Collections in a Qdrant server through qdrant-client (or in qdrant-client's local mode).

    Args:
        client: a ``QdrantClient``.
        location: how to name it in messages.
        owns_client: ``close()`` closes the client.
    """

    engine = "qdrant-client"

    def __init__(self, client: Any, *, location: str = "", owns_client: bool = True) -> None:
        # local mode ignores payload indexes (and warns); a server builds them
        local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"
        self.supports_payload_indexes = not local
        self.searches_exactly = local  # local mode is brute force: a beam width means nothing (and it warns)
        # local mode keeps points in numpy arrays that an upsert resizes under a running search
        # ("operands could not be broadcast together"): its calls are made one at a time
        self.client = _OneCallAtATime(client) if local else client
        self.location = location or "qdrant-client"
        self._owns_client = owns_client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None) -> ServerBackend:
        """A server at ``url``, checked with one request (a wrong URL fails here, not mid-run)."""
        require_qdrant_client()
        from qdrant_client import QdrantClient

        client = QdrantClient(url=url, api_key=api_key)
        try:
            client.get_collections()
        except Exception as error:  # connection refused, DNS, TLS, 401: all "not usable from here"
            client.close()
            raise ServerUnreachableError(
                f"cannot use the Qdrant server at {url} ({type(error).__name__}: {error}); "
                "check --qdrant-url (and --qdrant-api-key), or leave it out to use the embedded folder"
            ) from error
        return cls(client, location=url)

    @classmethod
    def local(cls, path: str | os.PathLike[str] | None = ":memory:") -> ServerBackend:
        """qdrant-client's local mode: in memory (``":memory:"``) or a folder (SQLite files)."""
        require_qdrant_client()
        from qdrant_client import QdrantClient

        folder = check_qdrant_path(path)
        if folder is None:
            return cls(QdrantClient(location=":memory:"), location=":memory:")
        try:
            return cls(QdrantClient(path=str(folder)), location=str(folder))
        except RuntimeError as error:
            if "already accessed" not in str(error):
                raise
            raise StorageLockedError(_locked_message(folder, "*")) from error

    def _aliases(self) -> dict[str, str]:
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def exists(self, collection: str) -> bool:
        return self.client.collection_exists(collection) or collection in self._aliases()

    def collections(self) -> list[str]:
        aliases = self._aliases()
        hidden = set(aliases.values())
        names = [c.name for c in self.client.get_collections().collections if c.name not in hidden]
        return sorted({*names, *aliases})

    def create(self, collection: str, dimension: int, identity: dict[str, Any]) -> None:
        from qdrant_client import models

        self.client.create_collection(
            collection,
            vectors_config={DENSE_VECTOR: models.VectorParams(size=int(dimension), distance=models.Distance.COSINE)},
            sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            metadata={METADATA_KEY: identity},
        )
        if self.supports_payload_indexes:
            for name, schema in PAYLOAD_INDEXES.items():
                self.create_index(collection, name, schema)

    def describe(self, collection: str) -> CollectionInfo:
        config = self.client.get_collection(collection).config
        vectors = config.params.vectors
        dense = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        return CollectionInfo(
            dense_size=None if dense is None else dense.size,
            has_sparse=SPARSE_VECTOR in (config.params.sparse_vectors or {}),
            identity=(config.metadata or {}).get(METADATA_KEY),
        )

    def drop(self, collection: str) -> None:
        from qdrant_client import models

        target = self._aliases().get(collection)
        if target is not None:
            self.client.update_collection_aliases(
                change_aliases_operations=[
                    models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=collection))
                ]
            )
            self.client.delete_collection(target)
        elif self.client.collection_exists(collection):
            self.client.delete_collection(collection)

    def swap_in(self, collection: str, build: str) -> None:
        """The name becomes an alias of ``build``; the old collection goes."""
        from qdrant_client import models

        old = self._aliases().get(collection)
        operations: list[Any] = []
        if old is not None:
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=collection)))
        elif self.client.collection_exists(collection):
            # a plain collection cannot be renamed or replaced by an alias in one step; from
            # here to the alias below (milliseconds), the new points are only under `build`
            self.client.delete_collection(collection)
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=build, alias_name=collection))
        )
        self.client.update_collection_aliases(change_aliases_operations=operations)
        if old is not None:
            self.client.delete_collection(old)

    def upsert(self, collection: str, points: Sequence[StoredPoint]) -> None:
        from qdrant_client import models

        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id,
                vector={DENSE_VECTOR: [float(x) for x in p.dense], SPARSE_VECTOR: models.SparseVector(
                    indices=indices, values=values)},
                payload=p.payload,
            )
            for p in points
            for indices, values in [_sparse_pairs(*p.sparse)]
        ]
        self.client.upsert(collection, points=structs, wait=True)

    def retrieve(self, collection: str, ids: Sequence[str], with_payload: bool | list[str] = True) -> list[Record]:
        if not ids:
            return []
        records = self.client.retrieve(collection, ids=list(ids), with_payload=with_payload, with_vectors=False)
        return [Record(id=str(r.id), payload=r.payload) for r in records]

    def delete_documents(self, collection: str, doc_ids: Sequence[str]) -> None:
        from qdrant_client import models

        self.client.delete(
            collection,
            points_selector=models.FilterSelector(
                filter=models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=list(doc_ids)))])
            ),
            wait=True,
        )

    def query(self, collection: str, requests: Sequence[VectorQuery]) -> list[list[Record]]:
        from qdrant_client import models

        built = []
        for r in requests:
            vector = r.vector
            if r.using == SPARSE_VECTOR:
                indices, values = _sparse_pairs(*vector)
                vector = models.SparseVector(indices=indices, values=values)
            built.append(models.QueryRequest(
                query=vector, using=r.using, limit=int(r.limit), filter=self.convert_filter(r.filter),
                with_payload=r.with_payload,
                params=self._search_params(r),
            ))
        responses = self.client.query_batch_points(collection, requests=built)
        return [[Record(id=str(p.id), score=float(p.score), payload=p.payload) for p in response.points]
                for response in responses]

    def _search_params(self, request: VectorQuery) -> Any:
        from qdrant_client import models

        hnsw_ef = None if self.searches_exactly else request.hnsw_ef
        return models.SearchParams(hnsw_ef=hnsw_ef, exact=request.exact) if request.exact or hnsw_ef else None

    def count(self, collection: str) -> int:
        return int(self.client.count(collection, exact=True).count)

    def scroll(self, collection: str, *, with_payload: bool | list[str] = True, batch: int = 1000) -> Iterator[Record]:
        offset = None
        while True:
            points, offset = self.client.scroll(collection, limit=batch, offset=offset, with_payload=with_payload,
                                                with_vectors=False)
            for p in points:
                yield Record(id=str(p.id), payload=p.payload)
            if offset is None:
                return

    def create_index(self, collection: str, field_name: str, schema: str) -> None:
        from qdrant_client import models

        if self.supports_payload_indexes:
            self.client.create_payload_index(collection, field_name, models.PayloadSchemaType(schema))

    def optimize(self, collection: str) -> bool:
        """A server optimises in the background on its own: nothing to run here."""
        return False

    def close(self) -> None:
        if self._owns_client and self.client is not None:
            self.client.close()
        self.client = None

    def convert_filter(self, query_filter: Any) -> Any:
        if query_filter is None:
            return None
        from qdrant_client import models

        if isinstance(query_filter, Mapping):
            conditions = [
                models.FieldCondition(key=k, match=models.MatchAny(any=list(v)) if isinstance(v, list | tuple | set)
                                      else models.MatchValue(value=v))
                for k, v in query_filter.items()
            ]
            return models.Filter(must=conditions)
        if isinstance(query_filter, models.Filter):
            return query_filter
        raise InvalidArgumentError(
            f"query_filter must be a dict or a qdrant_client.models.Filter for a Qdrant server, "
            f"got {type(query_filter).__name__}"
        )


# ----------------------------------------------------------------------------
# Opening


def open_backend(
    path: str | os.PathLike[str] | None = None,
    url: str | None = None,
    api_key: str | None = None,
    *,
    collection: str | None = None,
    create: bool = True,
    engine: str = "edge",
) -> StoreBackend:
    """The backend for ``url`` (a server) or ``path`` (a folder; ``":memory:"`` for a temporary one).

    Args:
        collection: lock this collection now (Edge), so a second process fails here, before
            any model loads.
        create: create a missing folder (``False`` for reading: nothing is created).
        engine: ``"edge"`` (default) or ``"qdrant-client"`` (its local mode, for comparisons).

    Raises:
        MissingDependencyError: qdrant-edge-py (or, for ``url``, qdrant-client) is not installed.
        NotAFolderError / InvalidArgumentError: see ``check_qdrant_path``.
        LegacyStoreError: the folder was written by qdrant-client's local mode.
        StorageLockedError: another process has the collection open.
        ServerUnreachableError: the server at ``url`` does not answer.
    """
    if url:
        return ServerBackend.connect(url, api_key)
    if engine == "qdrant-client":
        return ServerBackend.local(path)
    if engine != "edge":
        raise InvalidArgumentError(f"engine must be 'edge' or 'qdrant-client', got {engine!r}")
    require_qdrant_edge()
    folder = check_qdrant_path(path, create=create)
    backend = EdgeBackend(folder, create=create)
    if collection is not None:
        try:
            backend.lock(collection)
        except BaseException:
            backend.close()
            raise
    return backend


# ----------------------------------------------------------------------------
# Copying a store folder


def _data_regions(descriptor: int, size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the parts of a file that hold data (``SEEK_DATA``/``SEEK_HOLE``; all of it without)."""
    if not hasattr(os, "SEEK_DATA"):
        return [(0, size)]
    regions, offset = [], 0
    try:
        while offset < size:
            start = os.lseek(descriptor, offset, os.SEEK_DATA)
            end = os.lseek(descriptor, start, os.SEEK_HOLE)
            regions.append((start, end))
            offset = end
    except OSError as error:  # ENXIO: no data after offset; other errors: copy everything
        if error.errno != errno.ENXIO:
            return [(0, size)]
    return regions


def _copy_sparse(source: str, target: str) -> None:
    """Copy one file, leaving its holes (and all-zero 64 KiB blocks) as holes."""
    block = 1 << 16
    with open(source, "rb") as reader, open(target, "wb") as writer:
        size = os.fstat(reader.fileno()).st_size
        for start, end in _data_regions(reader.fileno(), size):
            reader.seek(start)
            writer.seek(start)
            while start < end:
                chunk = reader.read(min(block, end - start))
                if not chunk:
                    break
                if chunk.count(0) == len(chunk):
                    writer.seek(len(chunk), os.SEEK_CUR)
                else:
                    writer.write(chunk)
                start += len(chunk)
        writer.truncate(size)
    shutil.copystat(source, target)


def copy_store(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Copy a closed store folder (a backup, a test fixture) without filling in its sparse files.

    Qdrant Edge preallocates its files as holes (two 32 MB write-ahead-log files, 32 MB
    vector and payload pages, ...): an empty collection is about 190 MB long but under 1 MB
    on disk. ``shutil.copytree`` writes the holes out in full; this does not. ``cp -r``
    (GNU, ``--sparse=auto``) and ``rsync -S`` keep them holes too.
    """
    return Path(shutil.copytree(source, target, copy_function=_copy_sparse))


# ----------------------------------------------------------------------------
# Converting a qdrant-client local-mode folder


def migrate_local_store(path: str | os.PathLike[str], *, batch: int = 256, show_progress: bool = True) -> dict[str, int]:
    """Convert a qdrant-client local-mode folder to Qdrant Edge in place; returns points per collection.

    The stored vectors and payloads are copied (nothing is re-embedded). The new store is
    built beside the folder and renamed into place only when every collection is in; the
    old folder is kept as ``<path>.qdrant-client-backup``. Every collection must carry a
    medeir model record (a LlamaIndex or Haystack folder is refused, not converted). An
    alias (what ``recreate`` left) becomes the collection's name.
    """
    from tqdm.auto import tqdm

    require_qdrant_client()
    require_qdrant_edge()
    folder = Path(path)
    names = legacy_collections(folder) if folder.is_dir() else None
    if not names:
        raise InvalidArgumentError(f"{folder} is not a qdrant-client local-mode folder (no meta.json listing collections)")
    backup = folder.with_name(folder.name + LEGACY_BACKUP_SUFFIX)
    if backup.exists():
        raise InvalidArgumentError(f"{backup} already exists; move it away before migrating {folder}")
    source = ServerBackend.local(folder)
    staging = folder.with_name(f".{folder.name}.edge-migration-{uuid.uuid4().hex[:12]}")
    target = None
    counts: dict[str, int] = {}
    try:
        aliases = source._aliases()
        behind = {real: alias for alias, real in aliases.items()}
        real = [c.name for c in source.client.get_collections().collections]
        for name in real:
            info = source.describe(name)
            if info.identity is None or info.dense_size is None or not info.has_sparse:
                raise InvalidArgumentError(
                    f"collection {name!r} in {folder} was not built by medeir (no model record or no dense/sparse "
                    "vectors); nothing was converted"
                )
        target = EdgeBackend(staging)
        for name in real:
            new_name = behind.get(name, name)
            info = source.describe(name)
            target.create(new_name, info.dense_size, info.identity)
            total = source.count(name)
            offset, done = None, 0
            with tqdm(total=total, desc=f"Migrating {new_name}", unit="pt", disable=not show_progress) as bar:
                while True:
                    points, offset = source.client.scroll(name, limit=batch, offset=offset, with_payload=True,
                                                          with_vectors=True)
                    target.upsert(new_name, [
                        StoredPoint(id=str(p.id), dense=p.vector[DENSE_VECTOR],
                                    sparse=(p.vector[SPARSE_VECTOR].indices, p.vector[SPARSE_VECTOR].values),
                                    payload=p.payload or {})
                        for p in points
                    ])
                    done += len(points)
                    bar.update(len(points))
                    if offset is None:
                        break
            target.optimize(new_name)
            counts[new_name] = done
        target.close()
        target = None
        source.close()
        source = None
        (staging / READY_MARKER).touch()
        os.rename(folder, backup)
        os.rename(staging, folder)  # a crash between the two renames is finished by check_qdrant_path
        (folder / READY_MARKER).unlink(missing_ok=True)
    except BaseException:
        if target is not None:
            target.close()
        if source is not None:
            source.close()
        if staging.exists() and not (staging / READY_MARKER).is_file():
            shutil.rmtree(staging, ignore_errors=True)
        raise
    return counts


__all__ = [
    "DEFAULT_QDRANT_PATH",
    "CollectionInfo",
    "CollectionMismatchError",
    "CollectionNotFoundError",
    "EdgeBackend",
    "LegacyStoreError",
    "Record",
    "ServerBackend",
    "ServerUnreachableError",
    "StorageLockedError",
    "StoreBackend",
    "StoredPoint",
    "VectorQuery",
    "check_qdrant_path",
    "copy_store",
    "migrate_local_store",
    "open_backend",
    "require_qdrant_client",
    "require_qdrant_edge",
]
