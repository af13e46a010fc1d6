"""LlamaIndex components on the tiny model: embedding, token-window splitter, reranker, Qdrant pipelines."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Settings, StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.node_parser import MetadataAwareTextSplitter
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import Document, MetadataMode, NodeRelationship, NodeWithScore, TextNode
from qdrant_client import QdrantClient, models

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.integrations.llama_index import (
    DEFAULT_CHUNK_SIZE,
    MedeirEmbedding,
    MedeirRerank,
    MedeirTokenWindowSplitter,
    medeir_hybrid_fusion_fn,
    medeir_qdrant_vector_store,
    medeir_sparse_doc_fn,
)
from medeir_rag.model.files import bundled_model_path
from medeir_rag.rag.chunking import chunk_text, count_tokens
from medeir_rag.rag.documents import SourceDocument, read_sample_corpus
from medeir_rag.rag.fusion import convex_combination
from medeir_rag.rag.store import MedeirVectorStore


@pytest.fixture(scope="module")
def embed_model(tiny_model_dir) -> MedeirEmbedding:
    return MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", embed_batch_size=8)


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return [
        Document(text=d.text, metadata={"title": d.title, "doc_id": d.id}, id_=d.id)
        for d in list(read_sample_corpus())[:16]
    ]


def test_embedding_matches_the_encoder_and_options(embed_model, tiny_model_dir):
    assert BaseEmbedding.__name__ in [c.__name__ for c in MedeirEmbedding.__mro__]
    assert MedeirEmbedding.class_name() == "MedeirEmbedding"
    assert (embed_model.query_instruction, embed_model.text_instruction) == ("query: ", "passage: ")
    texts = [f"Patient {i} has asthma and takes salbutamol." for i in range(19)]
    batch = np.array(embed_model.get_text_embedding_batch(texts))  # 3 calls of embed_batch_size=8
    encoder = MedeirEncoder(tiny_model_dir, device="cpu")
    np.testing.assert_allclose(batch, encoder.encode_document(texts), atol=1e-5)
    query = np.array(embed_model.get_query_embedding("asthma"))
    np.testing.assert_allclose(query, encoder.encode_query("asthma"), atol=1e-5)
    assert abs(np.linalg.norm(query) - 1) < 1e-5
    assert np.allclose(asyncio.run(embed_model.aget_query_embedding("asthma")), query, atol=1e-6)
    assert np.allclose(asyncio.run(embed_model.aget_text_embedding_batch(texts[:3])), batch[:3], atol=1e-5)

    small = MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", truncate_dim=16, query_instruction="")
    vector = np.array(small.get_query_embedding("asthma"))
    assert vector.shape == (16,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    raw = MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", normalize=False)
    assert abs(np.linalg.norm(raw.get_text_embedding("asthma")) - 1) > 1e-3
    with pytest.raises(ValueError, match="truncate_dim"):
        MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", truncate_dim=1000)
    payload = embed_model.to_dict()
    assert payload["class_name"] == "MedeirEmbedding" and payload["model_name"] == str(tiny_model_dir)


def test_splitter_counts_metadata_and_keeps_exact_offsets(tiny_model_dir, tiny_tokenizer):
    assert MetadataAwareTextSplitter.__name__ in [c.__name__ for c in MedeirTokenWindowSplitter.__mro__]
    splitter = MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=40, chunk_overlap=6)
    paragraph = "Asthma exacerbations were treated with inhaled corticosteroids. "
    doc = Document(text=paragraph * 12, metadata={"title": "Asthma care", "journal": "Chest"})
    nodes = splitter.get_nodes_from_documents([doc])
    metadata_tokens = count_tokens(tiny_tokenizer, doc.get_metadata_str(MetadataMode.EMBED))
    expected = chunk_text(doc.text, tiny_tokenizer, 40, 6, reserved_tokens=metadata_tokens)
    assert len(nodes) == len(expected) > 3
    for node, chunk in zip(nodes, expected, strict=True):
        assert (node.start_char_idx, node.end_char_idx) == (chunk.start, chunk.end)  # repeated text: no str.find
        assert doc.text[node.start_char_idx : node.end_char_idx] == node.text
        assert count_tokens(tiny_tokenizer, node.get_content(MetadataMode.EMBED)) <= 40
        assert node.metadata == doc.metadata and node.ref_doc_id == doc.doc_id
    assert nodes[1].relationships[NodeRelationship.PREVIOUS].node_id == nodes[0].node_id

    with pytest.raises(ValueError, match="Metadata length"):
        MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=5).get_nodes_from_documents([doc])
    assert MedeirTokenWindowSplitter(model_name=str(tiny_model_dir)).chunk_size == DEFAULT_CHUNK_SIZE == 512
    whole = MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=None).chunk_size
    assert whole == 8192 - 2 - count_tokens(tiny_tokenizer, "passage: ")  # the long window, on request
    with pytest.raises(ValueError, match="does not fit the model window"):
        MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=8192)
    assert MedeirTokenWindowSplitter().split_text("") == []


def test_rerank_scores_sorts_and_emits_events(tiny_reranker_dir):
    assert BaseNodePostprocessor.__name__ in [c.__name__ for c in MedeirRerank.__mro__]
    debug = LlamaDebugHandler()
    reranker = MedeirRerank(
        model=str(tiny_reranker_dir), top_n=2, device="cpu", keep_retrieval_score=True,
        callback_manager=CallbackManager([debug]),
    )

    class Collector(BaseEventHandler):
        events: list = []

        def handle(self, event, **kwargs):
            self.events.append(event.class_name())

    collector = Collector()
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        nodes = [NodeWithScore(node=TextNode(text=t), score=s) for t, s in
                 [("Gout and colchicine.", 0.1), ("Asthma inhalers.", 0.9), ("Measles vaccine.", 0.5), ("Stroke signs.", 0.3)]]
        ranked = reranker.postprocess_nodes(nodes, query_str="asthma")
    finally:
        root.event_handlers.remove(collector)
    assert len(ranked) == 2 and ranked[0].score >= ranked[1].score
    assert {n.node.metadata["retrieval_score"] for n in ranked} <= {0.1, 0.9, 0.5, 0.3}
    assert "ReRankStartEvent" in collector.events and "ReRankEndEvent" in collector.events
    assert len(debug.get_event_pairs(CBEventType.RERANKING)) == 1
    assert reranker.postprocess_nodes([], query_str="x") == []
    with pytest.raises(ValueError, match="query bundle"):
        reranker.postprocess_nodes(nodes)


def test_rerank_without_a_model_asks_for_one_when_none_is_bundled(monkeypatch, tmp_path):
    from medeir_rag.model import files as model_files

    monkeypatch.setattr(model_files, "BUNDLED_MODELS_DIR", tmp_path)  # no bundled reranker, whatever ships
    message = r"no reranker is bundled with medeir_rag; pass model=<path to a CrossEncoder folder> \(train one"
    with pytest.raises(FileNotFoundError, match=message):
        MedeirRerank(top_n=5)
    with pytest.raises(FileNotFoundError, match=message):
        MedeirRerank(model="medeir-small-reranker")  # the bundled name, spelled out


def test_ingestion_pipeline_and_query_engine_over_qdrant(embed_model, documents, tiny_model_dir, tiny_reranker_dir, tmp_path):
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    Settings.llm = None
    splitter = MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=128, chunk_overlap=8)
    client = QdrantClient(location=":memory:")
    try:
        store = QdrantVectorStore(client=client, collection_name="pubmed")
        nodes = IngestionPipeline(transformations=[splitter, embed_model], vector_store=store).run(documents=documents)
        assert len(nodes) > len(documents)
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        target = documents[3]
        # the query is the text one stored chunk was embedded from (its metadata included), so the
        # random tiny model must rank that chunk first (a whole document as the query ranked another
        # document first in one full-suite run of CI, and passed in every isolated run)
        first = next(n for n in nodes if n.ref_doc_id == target.doc_id)
        hits = index.as_retriever(similarity_top_k=3).retrieve(first.get_content(metadata_mode=MetadataMode.EMBED))
        assert hits[0].node.node_id == first.node_id and hits[0].node.ref_doc_id == target.doc_id
        engine = index.as_query_engine(
            similarity_top_k=6, response_mode="no_text",
            node_postprocessors=[MedeirRerank(model=str(tiny_reranker_dir), top_n=2, device="cpu")],
        )
        assert len(engine.query("what relieves asthma symptoms?").source_nodes) == 2
    finally:
        client.close()

    client = QdrantClient(path=str(tmp_path / "qdrant"))  # embedded, on disk
    try:
        store = QdrantVectorStore(client=client, collection_name="pubmed")
        index = VectorStoreIndex.from_documents(
            documents[:4], storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model, transformations=[splitter],
        )
        stored = index.as_retriever(similarity_top_k=1).retrieve(first.get_content(metadata_mode=MetadataMode.EMBED))
        assert stored[0].node.ref_doc_id == target.doc_id  # the on-disk store answers as the in-memory one
    finally:
        client.close()


def _one_line_error(error_type, call, match):
    with pytest.raises(error_type, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_unknown_options_and_bad_values_are_refused_by_name(embed_model, tiny_model_dir):
    model = str(tiny_model_dir)
    _one_line_error(InvalidArgumentError, lambda: MedeirEmbedding(model_name=model, embed_batchsize=8),
                    r"MedeirEmbedding got an unknown option 'embed_batchsize'; did you mean 'embed_batch_size'\?")
    _one_line_error(InvalidArgumentError, lambda: MedeirEmbedding(model_name=model, colour="red"), r"'colour'; known options:")
    _one_line_error(InvalidArgumentError, lambda: MedeirEmbedding(model_name=model, precision="fp8"),
                    r"precision must be one of \('auto', 'fp32', 'bf16', 'fp16', 'int8'\), got 'fp8'")
    _one_line_error(InvalidArgumentError, lambda: MedeirEmbedding(model_name=model, dtype="fp8"),
                    r"dtype must be one of \('float32', 'float16', 'bfloat16'\)")
    _one_line_error(InvalidArgumentError, lambda: MedeirEmbedding(model_name=model, overlong="drop"), "overlong must be")
    _one_line_error(InvalidArgumentError, lambda: MedeirRerank(model=model, precision="fp8"), "precision must be one of")
    _one_line_error(TypeError, lambda: MedeirTokenWindowSplitter(model_name=model, chunksize=64), "chunksize")
    # LlamaIndex's own serialisation still round-trips (its fields, e.g. num_workers, are known options)
    again = MedeirEmbedding.from_dict(embed_model.to_dict())
    assert again.embed_batch_size == 8 and again.model_name == model


def test_splitter_emits_chunking_events_and_checks_settings_chunk_size(tiny_model_dir):
    debug = LlamaDebugHandler()
    splitter = MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=32,
                                         callback_manager=CallbackManager([debug]))
    docs = [Document(text="Asthma exacerbations were treated with inhaled corticosteroids. " * 6),
            Document(text="Metformin lowers blood glucose. " * 4)]
    nodes = splitter.get_nodes_from_documents(docs)
    pairs = debug.get_event_pairs(CBEventType.CHUNKING)
    assert len(pairs) == 2  # one per document, as SentenceSplitter sends
    assert pairs[0][0].payload["chunks"] == [docs[0].text]
    assert [c for start, end in pairs for c in end.payload["chunks"]] == [n.text for n in nodes]

    previous = Settings._node_parser
    try:
        Settings.node_parser = splitter
        Settings.chunk_size = 100  # LlamaIndex assigns it on the node parser
        assert splitter.chunk_size == 100
        window = splitter._window.max_chunk_size
        _one_line_error(InvalidArgumentError, lambda: setattr(Settings, "chunk_size", window + 1),
                        rf"MedeirTokenWindowSplitter.chunk_size \(or Settings.chunk_size\): chunk_size={window + 1} "
                        rf"does not fit the model window.*leaves {window}")
        assert splitter.chunk_size == 100  # refused, not clamped
        _one_line_error(InvalidArgumentError, lambda: setattr(Settings, "chunk_overlap", 100), "chunk_overlap")
    finally:
        Settings._node_parser = previous


HYBRID_TEXTS = [
    "Colchicine relieves acute gout flares within a day.",
    "Salbutamol inhalers relieve asthma symptoms.",
    "Measles vaccination prevents infection in children.",
    "Metformin lowers blood glucose in type 2 diabetes.",
    "Warfarin needs regular INR monitoring.",
    "Statins lower LDL cholesterol and cardiovascular risk.",
]


def _sparse_by_doc(client, collection, vector_name):
    """``{doc_id: {token id: weight}}`` of every point's sparse vector, read back from Qdrant."""
    points, _ = client.scroll(collection, with_vectors=True, with_payload=True, limit=100)
    return {str(p.payload["doc_id"]): dict(zip(p.vector[vector_name].indices, p.vector[vector_name].values, strict=True))
            for p in points}


def test_hybrid_inside_llama_index_is_our_store_hybrid(embed_model, tiny_model_dir):
    model = str(tiny_model_dir)
    client = QdrantClient(":memory:")
    ours = None
    try:
        store = medeir_qdrant_vector_store(client, "li", model_name=model)
        index = VectorStoreIndex.from_documents(
            [Document(text=t, id_=f"d{i}") for i, t in enumerate(HYBRID_TEXTS)],
            storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model,
            transformations=[MedeirTokenWindowSplitter(model_name=model)],
        )
        sparse_config = client.get_collection("li").config.params.sparse_vectors[store.sparse_vector_name]
        assert sparse_config.modifier == models.Modifier.IDF  # LlamaIndex's default has no IDF

        ours = MedeirVectorStore(model, collection="ours", client=client)  # same engine, our own indexing
        ours.index([SourceDocument(id=f"d{i}", text=t) for i, t in enumerate(HYBRID_TEXTS)], show_progress=False)
        theirs = _sparse_by_doc(client, "li", store.sparse_vector_name)  # LlamaIndex's doc_id: the document id
        mine = _sparse_by_doc(client, "ours", "sparse")
        assert set(theirs) == set(mine) == {f"d{i}" for i in range(len(HYBRID_TEXTS))}
        for doc_id, weights in mine.items():
            assert theirs[doc_id].keys() == weights.keys()
            np.testing.assert_allclose([theirs[doc_id][k] for k in weights], list(weights.values()), rtol=1e-6)

        query = "colchicine for gout"
        depth = len(HYBRID_TEXTS)  # every point on both sides, as the store's 100 candidates here
        hybrid = index.as_retriever(vector_store_query_mode="hybrid", similarity_top_k=depth, sparse_top_k=depth,
                                    hybrid_top_k=3).retrieve(query)
        assert hybrid[0].node.ref_doc_id == "d0" and len(hybrid) == 3
        expected = ours.search(query, mode="hybrid", top_k=3)
        assert [h.node.ref_doc_id for h in hybrid] == [h.doc_id for h in expected]
        np.testing.assert_allclose([h.score for h in hybrid], [h.score for h in expected], atol=1e-5)

        dense = index.as_retriever(similarity_top_k=depth).retrieve(query)
        sparse = index.as_retriever(vector_store_query_mode="sparse", sparse_top_k=depth).retrieve(query)
        fused = convex_combination({h.node.node_id: h.score for h in dense}, {h.node.node_id: h.score for h in sparse},
                                   alpha=0.5, top_k=3)  # the tiny model has no hybrid.json: alpha 0.5
        assert [h.node.node_id for h in hybrid] == list(fused)
        assert sparse[0].node.ref_doc_id == "d0"

        reopened = medeir_qdrant_vector_store(client, "li", model_name=model, alpha=1.0)  # dense only
        dense_only = VectorStoreIndex.from_vector_store(reopened, embed_model=embed_model).as_retriever(
            vector_store_query_mode="hybrid", similarity_top_k=depth, sparse_top_k=depth, hybrid_top_k=depth,
        ).retrieve(query)
        assert [h.node.node_id for h in dense_only] == [h.node.node_id for h in dense]
    finally:
        if ours is not None:
            ours.close()
        client.close()


def test_hybrid_store_sets_idf_on_an_existing_collection_and_refuses_its_own_options(tiny_model_dir, caplog):
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    model = str(tiny_model_dir)
    client = QdrantClient(":memory:")
    try:
        client.create_collection("plain", vectors_config={"text-dense": models.VectorParams(size=4, distance=models.Distance.COSINE)},
                                 sparse_vectors_config={"text-sparse-new": models.SparseVectorParams()})
        store = medeir_qdrant_vector_store(client, "plain", model_name=model)
        assert isinstance(store, QdrantVectorStore) and store.enable_hybrid
        sparse = client.get_collection("plain").config.params.sparse_vectors["text-sparse-new"]
        assert sparse.modifier == models.Modifier.IDF and "setting Modifier.IDF" in caplog.text
        client.create_collection("dense", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
        _one_line_error(InvalidArgumentError, lambda: medeir_qdrant_vector_store(client, "dense", model_name=model),
                        "collection 'dense' has no sparse vector 'text-sparse-new'")
        _one_line_error(InvalidArgumentError, lambda: medeir_qdrant_vector_store(client, "x", sparse_doc_fn=print),
                        "sets sparse_doc_fn itself")
    finally:
        client.close()
    doc_fn = medeir_sparse_doc_fn(model)
    indices, values = doc_fn(["gout gout colchicine", ""])
    assert len(indices[0]) == len(values[0]) > 0 and indices[1] == values[1] == []
    _one_line_error(InvalidArgumentError, lambda: doc_fn("gout"), r"pass medeir_sparse_doc_fn\(model_name\)")
    assert medeir_hybrid_fusion_fn(model).alpha == 0.5 and medeir_hybrid_fusion_fn(alpha=0.3).alpha == 0.3
    bundled = json.loads((bundled_model_path() / "hybrid.json").read_text())
    assert medeir_hybrid_fusion_fn().alpha == bundled["alpha"]  # the bundled model's own hybrid.json
    assert medeir_hybrid_fusion_fn().normalization == bundled.get("normalization", "min-max")
    assert medeir_hybrid_fusion_fn(alpha=0.3).normalization == medeir_hybrid_fusion_fn().normalization
