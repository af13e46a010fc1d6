"""Haystack components on the tiny models: init, exact to_dict, round trips, run contracts, Qdrant pipelines."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("haystack")

import itertools

from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack.core.errors import DeserializationError
from haystack.utils import ComponentDevice

from medeir_rag.chunking import count_tokens
from medeir_rag.documents import read_sample_corpus
from medeir_rag.encoder import MedeirEncoder
from medeir_rag.integrations.haystack import (
    MedeirDocumentEmbedder,
    MedeirDocumentSplitter,
    MedeirSimilarityRanker,
    MedeirTextEmbedder,
)

MODULE = "medeir_rag.integrations.haystack"
CPU = {"type": "single", "device": "cpu"}
TOKEN = {"type": "env_var", "env_vars": ["HF_API_TOKEN", "HF_TOKEN"], "strict": False}
# the init parameters of sentence-transformers-haystack's components, with their defaults
ST_LOADING = {"token": TOKEN, "trust_remote_code": False, "local_files_only": False, "model_kwargs": None,
              "tokenizer_kwargs": None, "config_kwargs": None, "revision": None}
ST_DENSE = {**ST_LOADING, "precision": "float32", "encode_kwargs": None, "quantization_ranges": None}


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> MedeirEncoder:
    return MedeirEncoder(tiny_model_dir, device="cpu")


class TestMedeirTextEmbedder:
    def test_init_default(self):
        embedder = MedeirTextEmbedder(device=ComponentDevice.from_str("cpu"))
        assert (embedder.model, embedder.prefix, embedder.suffix, embedder.batch_size) == ("medeir-small", "", "", 32)
        assert embedder.progress_bar and not embedder.normalize_embeddings
        assert (embedder.truncate_dim, embedder.prompt_name, embedder.overlong) == (None, "query", "truncate")
        assert (embedder.compute_precision, embedder.precision, embedder.backend) == ("fp32", "float32", "torch")
        assert embedder.encoder is None  # nothing is loaded before warm_up
        with pytest.raises(TypeError):
            MedeirTextEmbedder("positional-model")

    def test_to_dict_and_from_dict(self, tiny_model_dir):
        embedder = MedeirTextEmbedder(
            model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"), prefix="Q ", suffix=" ?",
            batch_size=4, progress_bar=False, normalize_embeddings=True, truncate_dim=16,
        )
        data = embedder.to_dict()
        assert data == {
            "type": f"{MODULE}.MedeirTextEmbedder",
            "init_parameters": {
                "model": str(tiny_model_dir), "device": CPU, "prefix": "Q ", "suffix": " ?", "batch_size": 4,
                "progress_bar": False, "normalize_embeddings": True, "truncate_dim": 16, "prompt_name": "query",
                "compute_precision": "fp32", "backend": "torch", "overlong": "truncate", **ST_DENSE,
            },
        }
        again = MedeirTextEmbedder.from_dict(data)
        assert again.to_dict() == data and isinstance(again.device, ComponentDevice)

    def test_run(self, tiny_model_dir, encoder):
        embedder = MedeirTextEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"),
                                      prefix="about ", progress_bar=False)
        embedding = embedder.run("asthma")["embedding"]  # warms up lazily
        assert isinstance(embedding, list) and len(embedding) == 64
        np.testing.assert_allclose(embedding, encoder.encode_query("about asthma"), atol=1e-5)
        short = MedeirTextEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"), truncate_dim=16)
        assert abs(np.linalg.norm(short.run("asthma")["embedding"]) - 1) < 1e-5
        assert short.encoder is embedder.encoder  # one model per process

    def test_run_wrong_input_format(self, tiny_model_dir):
        embedder = MedeirTextEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"))
        with pytest.raises(TypeError, match="MedeirDocumentEmbedder"):
            embedder.run([Document(content="x")])
        with pytest.raises(ValueError, match="no prompt named"):
            MedeirTextEmbedder(model=str(tiny_model_dir), prompt_name="nope").warm_up()


class TestMedeirDocumentEmbedder:
    def test_to_dict_and_from_dict(self):
        embedder = MedeirDocumentEmbedder(device=ComponentDevice.from_str("cpu"), meta_fields_to_embed=["title"],
                                          embedding_separator=" | ")
        data = embedder.to_dict()
        assert data == {
            "type": f"{MODULE}.MedeirDocumentEmbedder",
            "init_parameters": {
                "model": "medeir-small", "device": CPU, "prefix": "", "suffix": "", "batch_size": 32,
                "progress_bar": True, "normalize_embeddings": False, "truncate_dim": None, "prompt_name": "document",
                "compute_precision": "fp32", "backend": "torch", "overlong": "truncate", "meta_fields_to_embed": ["title"],
                "embedding_separator": " | ", **ST_DENSE,
            },
        }
        assert MedeirDocumentEmbedder.from_dict(data).to_dict() == data
        assert MedeirDocumentEmbedder().meta_fields_to_embed == []

    def test_run_returns_copies(self, tiny_model_dir, encoder):
        embedder = MedeirDocumentEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"),
                                          meta_fields_to_embed=["title", "missing"], batch_size=2, progress_bar=False)
        docs = [Document(content=f"Gout attack {i}.", meta={"title": f"Gout {i}"}) for i in range(5)]
        out = embedder.run(docs)["documents"]
        assert [d.id for d in out] == [d.id for d in docs] and all(d.embedding is None for d in docs)
        expected = encoder.encode_document([f"Gout {i}\nGout attack {i}." for i in range(5)])
        np.testing.assert_allclose([d.embedding for d in out], expected, atol=1e-5)
        assert out[0] is not docs[0] and out[0].meta == docs[0].meta
        assert embedder.run([])["documents"] == []

    def test_run_sorts_all_documents_by_length_before_batching(self, tiny_model_dir, encoder, monkeypatch):
        import medeir_rag.encode as encode_module

        calls = []
        batcher = encode_module._batches_by_token_budget

        def spy(lengths, *args, **kwargs):
            batches = batcher(lengths, *args, **kwargs)
            calls.append((list(lengths), batches))
            return batches

        monkeypatch.setattr(encode_module, "_batches_by_token_budget", spy)
        embedder = MedeirDocumentEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"),
                                          batch_size=2, progress_bar=False)
        long = "Chest radiography showed bilateral infiltrates consistent with pneumonia. " * 4
        texts = [long, "Gout.", long + "Asthma.", "Measles.", "Stroke signs."]
        out = embedder.run([Document(content=t) for t in texts])["documents"]
        # one batching over every text (before: one per slice of batch_size), at most batch_size per batch
        ((lengths, batches),) = calls
        assert len(lengths) == len(texts) and all(len(b) <= 2 for b in batches)
        assert {0, 2} in [set(b) for b in batches]  # the two long documents share a batch
        np.testing.assert_allclose([d.embedding for d in out], encoder.encode_document(texts), atol=1e-5)

    def test_run_wrong_input_format(self, tiny_model_dir):
        embedder = MedeirDocumentEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"))
        for bad in ("text", ["text"], [Document(content="x"), "y"]):
            with pytest.raises(TypeError, match="list of Documents"):
                embedder.run(bad)


class TestMedeirSimilarityRanker:
    def test_to_dict_and_from_dict(self):
        ranker = MedeirSimilarityRanker(device=ComponentDevice.from_str("cpu"), top_k=3, score_threshold=0.1)
        data = ranker.to_dict()
        assert data == {
            "type": f"{MODULE}.MedeirSimilarityRanker",
            "init_parameters": {
                "model": "medeir-small-reranker", "device": CPU, "top_k": 3, "query_prefix": "", "query_suffix": "",
                "document_prefix": "", "document_suffix": "", "meta_fields_to_embed": [], "embedding_separator": "\n",
                "scale_score": True, "score_threshold": 0.1, "batch_size": 16, "max_length": None,
                "precision": "fp32", "backend": "torch", "token": TOKEN, "trust_remote_code": False,
                "model_kwargs": None, "tokenizer_kwargs": None, "config_kwargs": None,
            },
        }
        assert MedeirSimilarityRanker.from_dict(data).to_dict() == data
        with pytest.raises(ValueError, match="top_k"):
            MedeirSimilarityRanker(top_k=0)

    def test_default_model_asks_for_a_path_when_no_reranker_is_bundled(self, monkeypatch, tmp_path):
        from medeir_rag import model_files

        monkeypatch.setattr(model_files, "BUNDLED_MODELS_DIR", tmp_path)  # no bundled reranker, whatever ships
        ranker = MedeirSimilarityRanker(device=ComponentDevice.from_str("cpu"))  # loads nothing yet
        message = r"no reranker is bundled with medeir_rag; pass model=<path to a CrossEncoder folder> \(train one"
        with pytest.raises(FileNotFoundError, match=message):
            ranker.warm_up()
        with pytest.raises(FileNotFoundError, match=message):
            ranker.run(query="asthma", documents=[Document(content="Asthma inhalers.")])

    def test_run(self, tiny_reranker_dir):
        ranker = MedeirSimilarityRanker(model=str(tiny_reranker_dir), device=ComponentDevice.from_str("cpu"), top_k=3)
        docs = [Document(content=t) for t in ("Gout.", "Asthma inhalers.", "Measles vaccine.", "Stroke signs.")]
        docs.append(Document(content="Gout.", score=0.5))  # same id as docs[0]: deduplicated
        out = ranker.run(query="asthma", documents=docs)["documents"]
        assert len(out) == 3 and len({d.id for d in out}) == 3
        assert all(0 <= d.score <= 1 for d in out) and out[0].score >= out[-1].score
        assert docs[1].score is None  # inputs untouched
        everything = ranker.run(query="asthma", documents=docs, top_k=10, scale_score=False)["documents"]
        assert len(everything) == 4
        cut = everything[1].score
        assert len(ranker.run(query="asthma", documents=docs, scale_score=False, score_threshold=cut)["documents"]) == 2
        assert ranker.run(query="asthma", documents=[])["documents"] == []
        with pytest.raises(ValueError, match="top_k"):
            ranker.run(query="asthma", documents=docs, top_k=0)
        with pytest.raises(TypeError):
            ranker.run(query="asthma", documents="Gout.")


class TestMedeirDocumentSplitter:
    def test_to_dict_and_from_dict(self, tiny_model_dir):
        splitter = MedeirDocumentSplitter(model=str(tiny_model_dir), split_length=64, split_overlap=8,
                                          meta_fields_to_embed=["title"])
        data = splitter.to_dict()
        assert data == {
            "type": f"{MODULE}.MedeirDocumentSplitter",
            "init_parameters": {
                "model": str(tiny_model_dir), "split_length": 64, "split_overlap": 8, "meta_fields_to_embed": ["title"],
                "embedding_separator": "\n", "skip_empty_documents": True, "boundary_fraction": 0.2,
            },
        }
        assert MedeirDocumentSplitter.from_dict(data).to_dict() == data
        with pytest.raises(ValueError, match="split_overlap"):
            MedeirDocumentSplitter(split_length=10, split_overlap=10)

    def test_chunk_contract(self, tiny_model_dir, tiny_tokenizer):
        splitter = MedeirDocumentSplitter(model=str(tiny_model_dir), split_length=30, split_overlap=5,
                                          meta_fields_to_embed=["title"])
        text = "Insulin resistance precedes diabetes.\fHypertension raises stroke risk. " * 6
        parent = Document(content=text, meta={"title": "Metabolic risk", "year": 2020})
        chunks = splitter.run([parent, Document(content=""), Document(content="  \n ")])["documents"]
        assert len(chunks) > 3
        for index, chunk in enumerate(chunks):
            meta = chunk.meta
            assert meta["source_id"] == parent.id and meta["split_id"] == index
            assert text[meta["split_idx_start"] : meta["split_idx_end"]] == chunk.content
            assert meta["page_number"] == text[: meta["split_idx_start"]].count("\f") + 1
            assert meta["title"] == "Metabolic risk" and meta["year"] == 2020
            assert count_tokens(tiny_tokenizer, "Metabolic risk\n" + chunk.content) <= 30
        for previous, current in itertools.pairwise(chunks):
            (link,) = [o for o in current.meta["_split_overlap"] if o["doc_id"] == previous.id]
            start, end = link["range"]
            assert current.content.startswith(previous.content[start:end]) and end > start
            assert any(o["doc_id"] == current.id for o in previous.meta["_split_overlap"])
        assert parent.meta == {"title": "Metabolic risk", "year": 2020}  # input untouched

    def test_defaults_and_errors(self, tiny_model_dir, tiny_tokenizer):
        splitter = MedeirDocumentSplitter(model=str(tiny_model_dir))
        splitter.warm_up()
        assert splitter._length == 8192 - 2 - count_tokens(tiny_tokenizer, "passage: ")
        doc = Document(content="Short text.")
        (chunk,) = splitter.run([doc])["documents"]
        assert chunk.content == "Short text." and "_split_overlap" not in chunk.meta
        kept = MedeirDocumentSplitter(model=str(tiny_model_dir), skip_empty_documents=False)
        assert [d.content for d in kept.run([Document(content="")])["documents"]] == [""]
        with pytest.raises(ValueError, match="does not fit the model window"):
            MedeirDocumentSplitter(model=str(tiny_model_dir), split_length=9000).warm_up()
        with pytest.raises(ValueError, match="content for document ID"):
            splitter.run([Document(content=None)])
        with pytest.raises(TypeError):
            splitter.run("text")


def test_qdrant_pipelines_run_and_serialise(tiny_model_dir, tiny_reranker_dir):
    from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    model, cpu = str(tiny_model_dir), ComponentDevice.from_str("cpu")
    store = QdrantDocumentStore(location=":memory:", embedding_dim=64, similarity="cosine", progress_bar=False)
    indexing = Pipeline()
    indexing.add_component("splitter", MedeirDocumentSplitter(model=model, split_length=96, meta_fields_to_embed=["title"]))
    indexing.add_component("embedder", MedeirDocumentEmbedder(model=model, device=cpu, meta_fields_to_embed=["title"],
                                                              progress_bar=False))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("splitter", "embedder")
    indexing.connect("embedder", "writer")
    corpus = list(read_sample_corpus())[:12]
    docs = [Document(content=d.text, meta={"title": d.title, "doc_id": d.id}) for d in corpus]
    written = indexing.run({"splitter": {"documents": docs}})["writer"]["documents_written"]
    assert written == store.count_documents() >= len(docs)

    querying = Pipeline()
    querying.add_component("embedder", MedeirTextEmbedder(model=model, device=cpu, progress_bar=False))
    querying.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=5))
    querying.add_component("ranker", MedeirSimilarityRanker(model=str(tiny_reranker_dir), device=cpu, top_k=2))
    querying.connect("embedder.embedding", "retriever.query_embedding")
    querying.connect("retriever.documents", "ranker.documents")
    question = corpus[4].text
    result = querying.run({"embedder": {"text": question}, "ranker": {"query": question}},
                          include_outputs_from={"retriever"})
    assert result["retriever"]["documents"][0].meta["doc_id"] == corpus[4].id
    assert len(result["ranker"]["documents"]) == 2

    for pipeline in (indexing, querying):
        yaml_text = pipeline.dumps()
        assert f"{MODULE}.Medeir" in yaml_text
        with pytest.raises(DeserializationError):
            Pipeline.loads(yaml_text)
        loaded, original = Pipeline.loads(yaml_text, allowed_modules=[MODULE]).to_dict(), pipeline.to_dict()
        assert loaded["components"] == original["components"]
        edges = sorted((c["sender"], c["receiver"]) for c in original["connections"])
        assert sorted((c["sender"], c["receiver"]) for c in loaded["connections"]) == edges
