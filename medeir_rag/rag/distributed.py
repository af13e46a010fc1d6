"""Corpus embedding on Ray Data: ``medeir index PATH --ray local|auto|ADDRESS`` (extra ``[distributed]``).

Design choices:

- **Ray embeds, the driver writes.** The pipeline is ``from_items(shards)`` -> ``flat_map``
  (one task per file, the readers of ``documents.py``) -> ``map_batches`` in an actor pool
  (one actor per GPU, else per CPU slot, the model loaded once per actor, one torch thread
  each) that chunks with the store's own code and embeds. The driver alone consumes the
  rows (``iter_rows``) and writes: Qdrant Edge is single-writer (flock), and for a server
  it is one writer feeding the cluster, which scales writes itself.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/distributed.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import socket
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medeir_rag.errors import InvalidArgumentError, MedeirError, MissingDependencyError, one_line

if TYPE_CHECKING:
    from medeir_rag.rag.documents import EncodingErrors, SourceDocument
    from medeir_rag.rag.store import IndexStats, MedeirVectorStore

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'medeir_rag[distributed]'"
PROBE_TIMEOUT_S = 5.0
LOCAL, AUTO = "local", "auto"
# Ray's switch (named for Windows/macOS) that makes every process of a new local instance use
# 127.0.0.1 instead of the machine's network address: Ray has no authentication, so a
# single-machine run over patient text should not listen on the network.
LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


class RayConnectionError(MedeirError, ConnectionError):
    """``--ray ADDRESS`` names no reachable Ray cluster."""


def require_ray() -> None:
    """Raise ``MissingDependencyError`` naming the extra when Ray Data is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise MissingDependencyError(f"--ray needs Ray Data, which is not installed ({error}); {INSTALL_HINT}") from None


# ----------------------------------------------------------------------------
# Connecting


def _probe(address: str) -> None:
    """Fail at once when nothing listens at ``address`` (``ray.init`` would retry for minutes)."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidArgumentError(
            f"--ray {address!r}: expected local, auto, HOST:PORT (the head's GCS, port 6379 by default) "
            "or ray://HOST:PORT (Ray Client)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise RayConnectionError(
            f"--ray {address!r}: no Ray cluster answers there ({error.strerror or error}); "
            "start one with `ray start --head` and pass the address it prints"
        ) from None


def _init_on_loopback(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init`` of a new local instance whose GCS, raylet, object store and workers all
    bind 127.0.0.1 (Ray resolves an explicit ``127.0.0.1`` back to the network address, so
    the switch is its loopback mode: an environment variable its child processes inherit,
    and the constant this process read when it imported Ray). Both are restored afterwards."""
    from ray._private import ray_constants

    before_env, before_flag = os.environ.get(LOOPBACK_ONLY_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(**kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_flag
        if before_env is None:
            os.environ.pop(LOOPBACK_ONLY_ENV, None)
        else:
            os.environ[LOOPBACK_ONLY_ENV] = before_env


class RaySession:
    """A connection to Ray for one ``medeir index`` run; ``close()`` shuts down only what it started."""

    def __init__(self, address: str, owns: bool) -> None:
        self.address = address
        self.owns = owns

    @classmethod
    def connect(cls, address: str) -> RaySession:
        """``local``: a new Ray instance on this machine; ``auto``: the cluster this
        machine belongs to (``ray start`` was run here, or ``$RAY_ADDRESS``); else ``HOST:PORT``
        or ``ray://HOST:PORT``. A process already connected (``ray.init`` done) is reused.
        """
        require_ray()
        import ray

        if ray.is_initialized():
            return cls(address, owns=False)
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address == LOCAL:
            kwargs.update(address=LOCAL, include_dashboard=False)
        else:
            if address != AUTO:
                _probe(address)
            kwargs["address"] = address
        try:
            if address == LOCAL:
                _init_on_loopback(ray, kwargs)
            else:
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise RayConnectionError(f"--ray {address!r}: {one_line(error)}") from None
        return cls(address, owns=True)

    def close(self) -> None:
        if self.owns:
            import ray

            ray.shutdown()
            self.owns = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------
# Rows: shards -> documents (read tasks) -> documents with vectors (actors)


def _shards(path: str | os.PathLike[str] | None) -> list[dict[str, Any]]:
    """One row per file: where a node opens it, the ``source`` the single-process reader would
    give, and a text file's id (its path relative to the folder, as ``read_documents`` names it)."""
    from medeir_rag.rag.documents import JSONL_SUFFIXES, SAMPLE_CORPUS, XML_SUFFIXES, _suffix, list_files

    if path is None:
        return [{"path": str(SAMPLE_CORPUS), "source": str(SAMPLE_CORPUS), "text_id": "", "sample": True}]
    root = Path(path).expanduser()
    rows = []
    for file in list_files(root):
        record_file = _suffix(file).removesuffix(".gz") in JSONL_SUFFIXES + XML_SUFFIXES
        text_id = "" if record_file else (file.name if file == root else file.relative_to(root).as_posix())
        rows.append({"path": str(file.resolve()), "source": str(file), "text_id": text_id, "sample": False})
    return rows


def _row(kind: str, item: Any) -> dict[str, Any]:
    return {"kind": kind, "item": pickle.dumps(item)}


def read_shard(
    shard: dict[str, Any], *, encoding_errors: EncodingErrors, skip_invalid: bool, limit: int | None
) -> Iterator[dict[str, Any]]:
    """The rows of one file: ``doc`` per document, ``invalid`` per skipped record, ``error`` for
    the record that stops the run (then nothing more from this file). ``limit`` bounds the
    documents one file sends (the driver cuts the exact first N)."""
    from medeir_rag.errors import MissingPathError
    from medeir_rag.rag.documents import SAMPLE_CORPUS, DocumentReadError, read_documents

    file = SAMPLE_CORPUS if shard["sample"] else Path(shard["path"])
    if not file.is_file():
        yield _row("error", MissingPathError(
            f"{file} is not on Ray node {socket.gethostname()}: every node needs the corpus at the same path"))
        return
    invalid: list[DocumentReadError] = []
    sent = reported = 0
    try:
        for doc in read_documents(file, encoding_errors=encoding_errors, skip_invalid=skip_invalid, invalid=invalid):
            for error in invalid[reported:]:
                yield _row("invalid", error)
            reported = len(invalid)
            if shard["text_id"]:
                doc.id, doc.meta = shard["text_id"], {"path": shard["text_id"]}
            doc.source = shard["source"]
            yield _row("doc", doc)
            sent += 1
            if limit is not None and sent >= limit:
                return
    except MedeirError as error:
        for skipped in invalid[reported:]:
            yield _row("invalid", skipped)
        yield _row("error", error)
        return
    for error in invalid[reported:]:
        yield _row("invalid", error)


def document_digest(doc_id: str, doc_key: str) -> bytes:
    """What identifies a stored document version: its id and ``doc_key`` (text and chunking)."""
    return hashlib.sha256(f"{doc_id}\x00{doc_key}".encode()).hexdigest()[:32].encode()


def completed_documents(store: MedeirVectorStore) -> np.ndarray:
    """Sorted digests of the documents whose every chunk is stored (one scroll of three payload fields)."""
    counts: Counter[tuple[str, str]] = Counter()
    expected: dict[tuple[str, str], int] = {}
    for record in store.scroll(with_payload=["doc_id", "doc_key", "num_chunks"]):
        payload = record.payload or {}
        key = (str(payload.get("doc_id")), str(payload.get("doc_key")))
        counts[key] += 1
        expected[key] = int(payload.get("num_chunks") or 0)
    digests = sorted(document_digest(*key) for key, n in counts.items() if n == expected[key])
    return np.array(digests, dtype="S32")


def _contains(sorted_digests: np.ndarray, digest: bytes) -> bool:
    at = int(np.searchsorted(sorted_digests, digest))
    return at < len(sorted_digests) and sorted_digests[at] == digest


class ChunkEmbedder:
    """A Ray actor: the model, loaded once; each call chunks a batch of documents (with the
    store's own ``prepare_document``) and embeds the chunks of those not stored yet."""

    def __init__(
        self, *, model: str | None, device: str, fingerprint: str, chunk_size: int, chunk_overlap: int,
        embed_title: bool, done: np.ndarray, threads: int, encoder_options: dict[str, Any],
    ) -> None:
        import torch

        from medeir_rag.inference.encoder import MedeirEncoder
        from medeir_rag.rag.store import model_fingerprint

        if device == "cpu":
            torch.set_num_threads(threads)
        # the driver encoder's replica_options: same backend, dimension, policy; "auto" precision per node
        self.encoder = MedeirEncoder(model, device=device, **encoder_options)
        mine = model_fingerprint(self.encoder.path)
        if mine != fingerprint:
            raise MedeirError(f"Ray node {socket.gethostname()} has another model at {self.encoder.path} "
                              f"(fingerprint {mine}, driver {fingerprint}); install the same model on every node")
        self.settings = (chunk_size, chunk_overlap, embed_title)
        self.done = done
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from medeir_rag.rag.store import IndexStats, prepare_document

        texts: list[str] = []
        spans: list[tuple[int, int]] = []
        for kind, item in zip(batch["kind"], batch["item"], strict=True):
            start = len(texts)
            if kind == "doc":
                doc = pickle.loads(item)
                try:  # a document the store refuses is refused again, in order, on the driver
                    prepared = prepare_document(doc, self.encoder.tokenizer, IndexStats(), set(), *self.settings)
                except (MedeirError, TypeError):
                    prepared = None
                if prepared is not None and not _contains(self.done, document_digest(doc.id, prepared.key)):
                    texts.extend(prepared.embed_texts)
            spans.append((start, len(texts)))
        dense = (self.encoder.encode_document(texts, overlong="error", show_progress=False) if texts
                 else np.zeros((0, self.encoder.embedding_dimension), dtype=np.float32))
        dense = np.ascontiguousarray(dense, dtype=np.float32)
        return {
            "kind": batch["kind"],
            "item": batch["item"],
            "texts": [json.dumps(texts[a:b]) for a, b in spans],
            "vectors": [dense[a:b].tobytes() for a, b in spans],
            "worker": [self.worker if b > a else "" for a, b in spans],
        }


# ----------------------------------------------------------------------------
# The driver


def _fed_encoder_class():
    from medeir_rag.inference.encoder import MedeirEncoder

    class FedEncoder(MedeirEncoder):
        """The driver's encoder during a Ray run: document vectors come from the actors.

        It is the real encoder (tokenizer, identity, prompts) with ``encode_document`` answered
        from the vectors fed in; it keeps those of the documents the store may still have
        pending (a suffix of fewer than ``batch_size`` chunks) and embeds any other text itself.
        """

        def __init__(self, encoder: MedeirEncoder, batch_size: int) -> None:  # no super(): reuses the loaded model
            self.__dict__.update(encoder.__dict__)
            self.inner = encoder
            self._window = batch_size
            self._vectors: dict[str, np.ndarray] = {}
            self._refs: Counter[str] = Counter()
            self._recent: deque[list[str]] = deque()
            self._recent_chunks = 0
            self.embedded_on_driver = 0

        def feed(self, texts: list[str], vectors: np.ndarray) -> None:
            while self._recent and self._recent_chunks >= self._window:  # done by the store: forget
                old = self._recent.popleft()
                self._recent_chunks -= len(old)
                for text in old:
                    self._refs[text] -= 1
                    if self._refs[text] <= 0:
                        del self._refs[text]
                        self._vectors.pop(text, None)
            for text, vector in zip(texts, vectors, strict=True):
                self._vectors[text] = vector
                self._refs[text] += 1
            self._recent.append(texts)
            self._recent_chunks += len(texts)

        def encode_document(self, texts, **kwargs) -> np.ndarray:
            texts = [texts] if isinstance(texts, str) else list(texts)
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
            local = dict(zip(missing, self.inner.encode_document(missing, **kwargs), strict=True)) if missing else {}
            self.embedded_on_driver += len(missing)
            return np.stack([self._vectors[t] if t in self._vectors else local[t] for t in texts])

    return FedEncoder


@dataclass
class RayIndexReport:
    """What the Ray side did: chunks whose actor-made vectors were used, per actor (``host:pid``), and
    chunks the driver had to embed itself (0 unless the store wanted a text no actor sent)."""

    actors: int = 0
    device: str = "cpu"
    chunks_per_worker: dict[str, int] = field(default_factory=dict)
    embedded_on_driver: int = 0


def _pool(device: str | None) -> tuple[int, dict[str, Any], str]:
    """Actors, their resources and device: one per GPU (``device`` cuda, or unset on a cluster
    with GPUs), else one per CPU slot."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if (device or "").startswith("cuda") or (device is None and gpus):
        if not gpus:
            raise InvalidArgumentError(f"--device {device}: the Ray cluster has no GPU ({cpus} CPUs); use --device cpu")
        return gpus, {"num_gpus": 1, "num_cpus": 1}, "cuda"
    if device not in (None, "cpu"):
        raise InvalidArgumentError(f"--device {device!r} with --ray: use cpu or cuda (one actor per CPU or GPU slot)")
    if cpus < 1:
        raise InvalidArgumentError(f"the Ray cluster has no CPU slot to embed on (resources: {resources})")
    return cpus, {"num_cpus": 1}, "cpu"


def _medeir_cause(error: BaseException) -> MedeirError | None:
    """The ``MedeirError`` behind a Ray error (a failed actor constructor, say), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, MedeirError) and type(error).__module__.startswith("medeir_rag"):
            return error
        error = getattr(error, "cause", None) or error.__cause__
    return None


def _documents(
    rows: Iterable[dict[str, Any]], fed: Any, report: RayIndexReport, invalid: list | None, limit: int | None,
) -> Iterator[SourceDocument]:
    """The documents of the rows, in order, after feeding their vectors to ``fed``."""
    seen: set[str] = set()
    sent = 0
    for row in rows:
        if limit is not None and sent >= limit:
            return
        item = pickle.loads(row["item"])
        if row["kind"] == "invalid":
            if invalid is not None:
                invalid.append(item)
            continue
        if row["kind"] == "error":
            raise item
        texts = json.loads(row["texts"])
        if item.id not in seen:  # a repeated id is skipped by the store: its vectors are never asked for
            seen.add(item.id)
            if texts:  # none for an empty document or one already stored
                fed.feed(texts, np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(texts), -1))
                report.chunks_per_worker[row["worker"]] = report.chunks_per_worker.get(row["worker"], 0) + len(texts)
        yield item
        sent += 1


def index_on_ray(
    store: MedeirVectorStore,
    path: str | os.PathLike[str] | None,
    *,
    model: str | os.PathLike[str] | None = None,
    device: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int = 0,
    batch_size: int = 32,
    recreate: bool = False,
    embed_title: bool = True,
    show_progress: bool = True,
    total: int | None = None,
    limit: int | None = None,
    encoding_errors: EncodingErrors = "strict",
    skip_invalid: bool = False,
    invalid: list | None = None,
    optimize: bool = True,
    report: RayIndexReport | None = None,
) -> IndexStats:
    """``store.index`` of the documents under ``path`` (``None``: the sample corpus), embedded on Ray.

    Ray must be connected (``RaySession.connect``). ``model`` is what each node loads: ``None``
    for its bundled model, else a path every node has; ``store.encoder`` must be the same
    model (checked by fingerprint in each actor). The other arguments are ``store.index``'s
    and ``read_documents``'s; ``report`` receives what the Ray side did.
    """
    import ray
    import ray.data

    from medeir_rag.rag.store import model_fingerprint

    report = report if report is not None else RayIndexReport()
    encoder = store.encoder
    chunk_size = store._window().resolve_chunk_size(chunk_size)
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise InvalidArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    done = np.array([], dtype="S32") if recreate or not store.exists() else completed_documents(store)
    actors, resources, actor_device = _pool(device)
    report.actors, report.device = actors, actor_device
    shards = _shards(path)
    worker_model = None if model is None else str(Path(encoder.path).resolve())

    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars,
             context.print_on_execution_start)
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the store's tqdm bar shows the run
    context.print_on_execution_start = False
    ray_data_logger = logging.getLogger("ray.data")
    saved_level = ray_data_logger.level
    ray_data_logger.setLevel(logging.WARNING)
    dataset = ray.data.from_items(shards, override_num_blocks=len(shards)).flat_map(
        read_shard, fn_kwargs={"encoding_errors": encoding_errors, "skip_invalid": skip_invalid, "limit": limit},
        num_cpus=0,  # reading is light; the CPU slots are the actors'
    ).map_batches(
        ChunkEmbedder,
        fn_constructor_kwargs={
            "model": worker_model, "device": actor_device, "fingerprint": model_fingerprint(encoder.path),
            "chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "embed_title": embed_title, "done": done,
            "threads": 1, "encoder_options": encoder.replica_options(),
        },
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), **resources,
    )
    fed = _fed_encoder_class()(encoder, batch_size)
    store.encoder = fed
    try:
        documents = _documents(dataset.iter_rows(), fed, report, invalid, limit)
        return store.index(documents, chunk_size=chunk_size, chunk_overlap=chunk_overlap, batch_size=batch_size,
                           recreate=recreate, embed_title=embed_title, show_progress=show_progress, total=total,
                           optimize=optimize)
    except Exception as error:
        cause = _medeir_cause(error)
        if cause is None or cause is error:
            raise
        raise cause from None
    finally:
        store.encoder = encoder
        report.embedded_on_driver = fed.embedded_on_driver
        (context.execution_options.preserve_order, context.enable_progress_bars,
         context.print_on_execution_start) = saved
        ray_data_logger.setLevel(saved_level)


__all__ = [
    "INSTALL_HINT",
    "ChunkEmbedder",
    "RayConnectionError",
    "RayIndexReport",
    "RaySession",
    "completed_documents",
    "document_digest",
    "index_on_ray",
    "read_shard",
    "require_ray",
]
