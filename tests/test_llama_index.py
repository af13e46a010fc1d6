"""LlamaIndex components on the tiny model: embedding, token-window splitter, reranker, Qdrant pipelines."""

from __future__ import annotations

import asyncio

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
from qdrant_client import QdrantClient

from medeir_rag.chunking import chunk_text, count_tokens
from medeir_rag.documents import read_sample_corpus
from medeir_rag.encoder import MedeirEncoder
from medeir_rag.integrations.llama_index import (
    MedeirEmbedding,
    MedeirRerank,
    MedeirTokenWindowSplitter,
)


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
    default = MedeirTokenWindowSplitter(model_name=str(tiny_model_dir)).chunk_size
    assert default == 8192 - 2 - count_tokens(tiny_tokenizer, "passage: ")  # the long window, not 512
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
    from medeir_rag import model_files

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
        hits = index.as_retriever(similarity_top_k=3).retrieve(target.text)
        assert hits[0].node.ref_doc_id == target.doc_id
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
        assert index.as_retriever(similarity_top_k=1).retrieve(documents[2].text)[0].node.ref_doc_id == documents[2].doc_id
    finally:
        client.close()
