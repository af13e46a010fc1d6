"""The store's contract, run against both backends: idempotent and resumable indexing, modes, identity checks.

``engine`` is a parameter of every test that takes it:

- ``edge``: Qdrant Edge on a temporary folder (``path=":memory:"`` is one too), the default
  for local paths.
- ``server``: the qdrant-client code path that ``url=`` takes, run through qdrant-client's
  own local mode (``":memory:"``, or ``path=`` where a test reopens the store) because no
  Qdrant server can be started here. That stand-in does **not** cover: the HTTP/gRPC
  transport and its errors and timeouts, API keys, payload indexes (local mode ignores
  them), the server's background optimiser and collection status, alias changes racing
  other clients, collection metadata on servers too old to keep it, and the distributed parts
  of a cluster (shards, replicas, write consistency).
"""

from __future__ import annotations

import logging
import shutil
import warnings

import pytest
import torch

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.rag.documents import SourceDocument, read_sample_corpus
from medeir_rag.rag.store import (
    CollectionMismatchError,
    CollectionNotFoundError,
    MedeirVectorStore,
    point_id,
    sparse_document_vectors,
    sparse_query_vector,
)

ENGINES = {"edge": "edge", "server": "qdrant-client"}


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> MedeirEncoder:
    return MedeirEncoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def corpus() -> list[SourceDocument]:
    return list(read_sample_corpus())


@pytest.fixture(params=list(ENGINES))
def engine(request) -> str:
    return ENGINES[request.param]


def open_store(encoder, engine: str, path=":memory:") -> MedeirVectorStore:
    return MedeirVectorStore(encoder, path=path, engine=engine)


def all_ids(store: MedeirVectorStore) -> list[str]:
    return sorted(r.id for r in store.scroll(with_payload=False))


def test_index_is_idempotent_and_survives_reopening(encoder, corpus, tmp_path, engine):
    with open_store(encoder, engine, tmp_path / "q") as store:
        stats = store.index(corpus, show_progress=False)
        assert stats.documents == stats.indexed == len(corpus) and stats.chunks == len(corpus)
        count = store.count()
        assert count == len(corpus)
        again = store.index(corpus, show_progress=False)
        assert again.skipped_existing == len(corpus) and again.chunks == 0
        assert store.count() == count
    with open_store(encoder, engine, tmp_path / "q") as store:  # persisted on disk
        assert store.engine == engine
        assert store.count() == count
        assert store.search("metformin", top_k=3, mode="sparse")[0].doc_id == "sample:metformin"


def test_interrupted_run_resumes_without_loss_or_duplicates(encoder, corpus, engine):
    corpus = corpus[:10]

    def interrupted():
        for number, doc in enumerate(corpus):
            if number == 6:
                raise KeyboardInterrupt
            yield doc

    with open_store(encoder, engine) as store:
        with pytest.raises(KeyboardInterrupt):
            store.index(interrupted(), chunk_size=32, chunk_overlap=4, batch_size=8, show_progress=False)
        partial = store.count()
        assert 0 < partial
        stats = store.index(corpus, chunk_size=32, chunk_overlap=4, batch_size=8, show_progress=False)
        assert stats.skipped_existing > 0
        resumed = all_ids(store)
    with open_store(encoder, engine) as fresh:
        fresh.index(corpus, chunk_size=32, chunk_overlap=4, batch_size=8, show_progress=False)
        assert resumed == all_ids(fresh)
        assert len(resumed) == len(set(resumed)) > len(corpus)


def test_failure_in_the_middle_of_a_batch_resumes(encoder, corpus, engine):
    corpus = corpus[:5]
    settings = {"chunk_size": 32, "batch_size": 4, "show_progress": False}
    with open_store(encoder, engine) as store:
        upsert, calls = store.backend.upsert, []

        def flaky_upsert(*args, **kwargs):  # the second write fails, leaving a document half stored
            calls.append(1)
            if len(calls) == 2:
                raise ConnectionError("simulated outage")
            return upsert(*args, **kwargs)

        store.backend.upsert = flaky_upsert
        with pytest.raises(ConnectionError):
            store.index(corpus, **settings)
        store.backend.upsert = upsert
        points = list(store.scroll(with_payload=["doc_id", "num_chunks"]))
        stored: dict[str, list[int]] = {}
        for point in points:
            stored.setdefault(point.payload["doc_id"], []).append(point.payload["num_chunks"])
        assert 0 < len(points) <= 4  # the first write (at most batch_size points) was kept
        assert any(len(chunks) < chunks[0] for chunks in stored.values())  # a document is half stored
        store.index(corpus, **settings)
        resumed = all_ids(store)
    with open_store(encoder, engine) as fresh:
        fresh.index(corpus, **settings)
        assert resumed == all_ids(fresh)


def test_changed_document_replaces_its_old_chunks(encoder, engine):
    long_doc = SourceDocument(id="d1", title="Asthma", text="Asthma causes wheeze and cough at night. " * 20)
    with open_store(encoder, engine) as store:
        store.index([long_doc], chunk_size=30, show_progress=False)
        assert store.count() > 3
        store.index([SourceDocument(id="d1", title="Asthma", text="Short now.")], chunk_size=30, show_progress=False)
        assert all_ids(store) == [point_id("d1", 0)]


def test_empty_whitespace_and_duplicate_documents_are_counted(encoder, engine):
    docs = [
        SourceDocument(id="a", text="Gout affects the big toe."),
        SourceDocument(id="b", text=""),
        SourceDocument(id="c", text="   \n\t "),
        SourceDocument(id="a", text="Another text with a reused id."),
    ]
    with open_store(encoder, engine) as store:
        stats = store.index(docs, show_progress=False)
        assert (stats.documents, stats.indexed, stats.skipped_empty, stats.skipped_duplicate) == (4, 1, 2, 1)
        assert store.count() == 1


def test_search_modes_find_exact_text(encoder, corpus, engine):
    with open_store(encoder, engine) as store:
        corpus = corpus[::2]
        store.index(corpus, embed_title=False, show_progress=False)
        for doc in corpus[:: len(corpus) // 4]:
            for mode in ("dense", "sparse", "hybrid"):
                hits = store.search(doc.text, top_k=3, mode=mode)
                assert hits[0].doc_id == doc.id, mode
                assert doc.text[hits[0].start : hits[0].end] == hits[0].text
        hits = store.search("asthma inhaler", top_k=5, mode="hybrid")
        assert len(hits) == 5 and len({h.id for h in hits}) == 5
        assert hits[0].score >= hits[-1].score


def test_hnsw_ef_reaches_the_engine_and_keeps_the_results(encoder, corpus, tmp_path, engine):
    """A query-time beam width (``hnsw_ef``) on an optimised collection: same hits as the
    default on this small collection, on both engines; a bad value names the argument."""
    with open_store(encoder, engine, tmp_path / "q") as store:
        store.index(corpus, show_progress=False)  # optimised when indexing ends
    query = "inhaled corticosteroids for asthma"
    found = {}
    for ef in (None, 8, 512):
        with MedeirVectorStore(encoder, path=tmp_path / "q", engine=engine, hnsw_ef=ef) as store:
            assert store.hnsw_ef == ef
            with warnings.catch_warnings():  # local mode is exact: it must not be sent a beam width it warns about
                warnings.simplefilter("error", UserWarning)
                found[ef] = {mode: [h.id for h in store.search(query, top_k=5, mode=mode)]
                             for mode in ("dense", "hybrid")}
    assert found[8] == found[None] == found[512]
    with pytest.raises(InvalidArgumentError, match="hnsw_ef"):
        MedeirVectorStore(encoder, path=tmp_path / "other", engine=engine, hnsw_ef=0)


def test_hybrid_is_the_convex_combination_of_both_sides(encoder, corpus, tmp_path, engine):
    from qdrant_client import models

    from medeir_rag.rag.fusion import HybridWeights, convex_combination, save_hybrid_weights

    with open_store(encoder, engine) as store:
        store.index(corpus, show_progress=False)
        query = "inhaled corticosteroids for asthma"
        dense = {h.id: h.score for h in store.search(query, top_k=100, mode="dense")}
        sparse = {h.id: h.score for h in store.search(query, top_k=100, mode="sparse")}
        for alpha in (0.0, 0.3, 1.0):
            hits = store.search(query, top_k=5, mode="hybrid", alpha=alpha)
            expected = convex_combination(dense, sparse, alpha, top_k=5)
            assert [h.id for h in hits] == list(expected), alpha
            assert [h.score for h in hits] == pytest.approx(list(expected.values()))
        assert [h.id for h in store.search(query, top_k=5, mode="hybrid", alpha=1.0)] == list(dense)[:5]
        with pytest.raises(ValueError, match="alpha"):
            store.search(query, mode="hybrid", alpha=1.5)
        only = corpus[3].id
        condition = models.Filter(must=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=only))])
        assert {h.doc_id for h in store.search(query, top_k=5, mode="hybrid", query_filter=condition)} == {only}
        assert {h.doc_id for h in store.search(query, top_k=5, mode="dense", query_filter={"doc_id": only})} == {only}
        two = [corpus[1].id, corpus[2].id]
        assert {h.doc_id for h in store.search(query, top_k=5, mode="sparse", query_filter={"doc_id": two})} <= set(two)
    # The model folder's hybrid.json sets the default alpha.
    model = tmp_path / "model"
    shutil.copytree(encoder.path, model)
    save_hybrid_weights(model, HybridWeights(alpha=1.0))
    with open_store(MedeirEncoder(model, device="cpu"), engine) as store:
        store.index(corpus, show_progress=False)
        dense_order = [h.id for h in store.search("asthma inhaler", top_k=5, mode="dense")]
        assert [h.id for h in store.search("asthma inhaler", top_k=5, mode="hybrid")] == dense_order
    # ... and how each side is normalised, whatever alpha a search asks for
    save_hybrid_weights(model, HybridWeights(alpha=0.4, normalization="max"))
    with open_store(MedeirEncoder(model, device="cpu"), engine) as store:
        store.index(corpus, show_progress=False)
        dense = {h.id: h.score for h in store.search(query, top_k=100, mode="dense")}
        sparse = {h.id: h.score for h in store.search(query, top_k=100, mode="sparse")}
        for alpha in (None, 0.3):
            expected = convex_combination(dense, sparse, 0.4 if alpha is None else alpha, 5, "max")
            hits = store.search(query, top_k=5, mode="hybrid", alpha=alpha)
            assert [h.id for h in hits] == list(expected) and [h.score for h in hits] == pytest.approx(
                list(expected.values())), alpha


def test_search_rejects_bad_arguments(encoder, corpus, engine):
    with open_store(encoder, engine) as store:
        with pytest.raises(CollectionNotFoundError, match="medeir index"):
            store.search("anything")
        store.index(corpus[:3], show_progress=False)
        for bad in (0, -1):
            with pytest.raises(ValueError, match="top_k"):
                store.search("diabetes", top_k=bad)
        with pytest.raises(ValueError, match="mode"):
            store.search("diabetes", mode="fuzzy")
        with pytest.raises(ValueError, match="empty"):
            store.search("   ")
        with pytest.raises(TypeError):
            store.search(["diabetes"])


def test_query_longer_than_the_window_is_truncated_with_a_warning(tiny_model_dir, caplog, engine):
    encoder = MedeirEncoder(tiny_model_dir, device="cpu")
    encoder.max_length = 32
    with open_store(encoder, engine) as store:
        store.index([SourceDocument(id="x", text="Statins lower cholesterol.")], show_progress=False)
        with caplog.at_level(logging.WARNING):
            hits = store.search("statins lower cholesterol " * 40, mode="hybrid")
        assert hits[0].doc_id == "x"
        assert "exceed the 32-token window" in caplog.text


def test_other_model_or_dimension_is_refused(encoder, tiny_model_dir, tiny_tokenizer, tiny_config, tmp_path, engine):
    from medeir_rag import MedeirModel
    from medeir_rag.model.export import save_sentence_transformer

    with open_store(encoder, engine, tmp_path / "q") as store:
        store.index([SourceDocument(id="x", text="Tetanus vaccine boosters.")], show_progress=False)
    truncated = MedeirEncoder(tiny_model_dir, device="cpu", truncate_dim=32)
    with open_store(truncated, engine, tmp_path / "q") as store, pytest.raises(
        CollectionMismatchError, match="64-dimensional vectors"
    ):
        store.search("tetanus")
    torch.manual_seed(1)
    other_dir = save_sentence_transformer(MedeirModel(tiny_config), tiny_tokenizer, tmp_path / "other")
    with open_store(MedeirEncoder(other_dir, device="cpu"), engine, tmp_path / "q") as store:
        with pytest.raises(CollectionMismatchError, match="fingerprint"):
            store.search("tetanus")
        with pytest.raises(CollectionMismatchError, match="--recreate"):
            store.index([SourceDocument(id="y", text="More.")], show_progress=False)
        stats = store.index([SourceDocument(id="y", text="More.")], recreate=True, show_progress=False)
        assert stats.indexed == 1 and store.count() == 1
        assert store.backend.collections() == ["medeir"]
    with open_store(MedeirEncoder(other_dir, device="cpu"), engine, tmp_path / "q") as store:
        assert [h.doc_id for h in store.search("more", mode="sparse")] == ["y"]  # the swap persisted


def test_sparse_vectors_use_the_medical_tokenizer(encoder):
    tokenizer = encoder.tokenizer
    (indices, values), = sparse_document_vectors(tokenizer, ["insulin insulin diabetes"])
    assert indices == sorted(indices) and len(indices) == len(values) >= 2
    assert not set(indices) & set(tokenizer.all_special_ids)
    query_indices, query_values = sparse_query_vector(tokenizer, "insulin insulin")
    assert set(query_indices) <= set(indices) and query_values == [1.0] * len(query_indices)
