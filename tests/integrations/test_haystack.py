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

from medeir_rag.errors import InvalidArgumentError, MissingPathError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.integrations.haystack import (
    MedeirDocumentEmbedder,
    MedeirDocumentSplitter,
    MedeirSimilarityRanker,
    MedeirSparseDocumentEmbedder,
    MedeirSparseTextEmbedder,
    MedeirTextEmbedder,
)
from medeir_rag.rag.chunking import DEFAULT_CHUNK_SIZE, count_tokens
from medeir_rag.rag.documents import read_sample_corpus

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
        assert (embedder.compute_precision, embedder.precision, embedder.backend) == ("auto", "float32", "torch")
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
                "compute_precision": "auto", "backend": "torch", "overlong": "truncate", **ST_DENSE,
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
                "compute_precision": "auto", "backend": "torch", "overlong": "truncate", "meta_fields_to_embed": ["title"],
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
        import medeir_rag.inference.encode as encode_module

        calls = []
        batcher = encode_module.batches_by_token_budget

        def spy(lengths, *args, **kwargs):
            batches = batcher(lengths, *args, **kwargs)
            calls.append((list(lengths), batches))
            return batches

        monkeypatch.setattr(encode_module, "batches_by_token_budget", spy)
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
        from medeir_rag.model import files as model_files

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
        assert splitter._length == DEFAULT_CHUNK_SIZE == 512
        whole = MedeirDocumentSplitter(model=str(tiny_model_dir), split_length=None)
        whole.warm_up()
        assert whole._length == 8192 - 2 - count_tokens(tiny_tokenizer, "passage: ")
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
    # the query is the text one stored chunk was embedded from (the document embedder's own join of
    # title and content), so the random tiny model must rank that chunk first; a whole document as the
    # query ranked another document's chunk first in one CI run (on another CPU) and passed here
    target = next(d for d in store.filter_documents() if d.meta["doc_id"] == corpus[4].id)
    question = indexing.get_component("embedder")._text(target)
    result = querying.run({"embedder": {"text": question}, "ranker": {"query": question}},
                          include_outputs_from={"retriever"})
    assert result["retriever"]["documents"][0].id == target.id
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


# ----------------------------------------------------------------------------
# Drop-in parity with sentence-transformers-haystack's init parameters


class TestSentenceTransformersParity:
    def test_every_st_init_parameter_is_accepted(self, tiny_model_dir):
        import inspect

        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersSparseDocumentEmbedder,
            SentenceTransformersSparseTextEmbedder,
            SentenceTransformersTextEmbedder,
        )
        from haystack_integrations.components.rankers.sentence_transformers import (
            SentenceTransformersSimilarityRanker,
        )

        pairs = [(SentenceTransformersTextEmbedder, MedeirTextEmbedder),
                 (SentenceTransformersDocumentEmbedder, MedeirDocumentEmbedder),
                 (SentenceTransformersSparseTextEmbedder, MedeirSparseTextEmbedder),
                 (SentenceTransformersSparseDocumentEmbedder, MedeirSparseDocumentEmbedder),
                 (SentenceTransformersSimilarityRanker, MedeirSimilarityRanker)]
        for theirs, ours in pairs:
            missing = set(inspect.signature(theirs.__init__).parameters) - set(inspect.signature(ours.__init__).parameters)
            assert not missing, (ours.__name__, missing)
            ours_params = inspect.signature(ours.__init__).parameters
            assert all(p.kind is p.KEYWORD_ONLY for name, p in ours_params.items() if name != "self")

    def test_options_our_model_cannot_honour_are_refused_by_name(self, tiny_model_dir):
        model = str(tiny_model_dir)
        refused = [
            ({"revision": "main"}, "revision='main' applies to hub models only"),
            ({"model_kwargs": {"torch_dtype": "bfloat16"}}, r"model_kwargs keys \['torch_dtype'\].*compute_precision"),
            ({"tokenizer_kwargs": {"model_max_length": 128}}, r"tokenizer_kwargs keys \['model_max_length'\]"),
            ({"config_kwargs": {"hidden_dropout_prob": 0.0}}, r"config_kwargs keys"),
            ({"encode_kwargs": {"convert_to_tensor": True}}, r"encode_kwargs keys \['convert_to_tensor'\]"),
            ({"precision": "bf16"}, "use compute_precision='bf16'"),
            ({"precision": "int8"}, "needs quantization_ranges.*compute_precision='int8'"),
            ({"backend": "openvino"}, "backend must be one of"),
            ({"compute_precision": "q4"}, "compute_precision must be one of"),
        ]
        for kwargs, message in refused:
            with pytest.raises(InvalidArgumentError, match=message) as caught:
                MedeirTextEmbedder(model=model, **kwargs)
            assert "\n" not in str(caught.value)
        with pytest.raises(InvalidArgumentError, match="model_kwargs"):
            MedeirSparseDocumentEmbedder(model=model, model_kwargs={"torch_dtype": "auto"})
        with pytest.raises(InvalidArgumentError, match=r"model_kwargs keys \['x'\].*use precision="):
            MedeirSimilarityRanker(model=model, model_kwargs={"x": 1})
        # accepted, with the meaning they have here (no remote code runs; empty dicts are no options)
        MedeirDocumentEmbedder(model=model, trust_remote_code=True, local_files_only=True, model_kwargs={},
                               tokenizer_kwargs={}, config_kwargs={}, token=None)

    def test_hub_options_go_to_the_hub_download(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        embedder = MedeirTextEmbedder(model="hf:medeir/not-cached", revision="v1", local_files_only=True)
        with pytest.raises(MissingPathError, match=r"hub model 'medeir/not-cached'.*revision='v1'"):
            embedder.warm_up()

    def test_output_precision_is_haystacks(self, tiny_model_dir, encoder):
        from sentence_transformers.quantization import quantize_embeddings

        model, cpu = str(tiny_model_dir), ComponentDevice.from_str("cpu")
        floats = np.asarray(MedeirTextEmbedder(model=model, device=cpu, progress_bar=False).run("asthma")["embedding"])
        binary = MedeirTextEmbedder(model=model, device=cpu, precision="ubinary", progress_bar=False)
        packed = binary.run("asthma")["embedding"]
        assert len(packed) == 64 // 8 and all(isinstance(v, int) for v in packed)
        assert packed == quantize_embeddings(floats[None], precision="ubinary")[0].tolist()
        ranges = [[-0.5] * 64, [0.5] * 64]
        int8 = MedeirTextEmbedder(model=model, device=cpu, precision="int8", quantization_ranges=ranges,
                                  progress_bar=False)
        values = int8.run("asthma")["embedding"]
        assert values == quantize_embeddings(floats[None], precision="int8", ranges=np.asarray(ranges))[0].tolist()
        data = int8.to_dict()
        assert data["init_parameters"]["quantization_ranges"] == ranges
        assert MedeirTextEmbedder.from_dict(data).to_dict() == data
        no_prompt = MedeirTextEmbedder(model=model, device=cpu, encode_kwargs={"prompt": ""}, progress_bar=False)
        np.testing.assert_allclose(no_prompt.run("asthma")["embedding"], encoder.encode(["asthma"])[0], atol=1e-5)

    def test_compute_precision_and_old_pipeline_files(self, tiny_model_dir):
        embedder = MedeirTextEmbedder(model=str(tiny_model_dir), compute_precision="int8")
        data = embedder.to_dict()
        assert data["init_parameters"]["compute_precision"] == "int8"
        assert data["init_parameters"]["precision"] == "float32"
        old = {**data, "init_parameters": {k: v for k, v in data["init_parameters"].items()
                                           if k in ("model", "prompt_name", "backend")}}
        old["init_parameters"]["precision"] = "int8"  # a file written when precision was the compute precision
        with pytest.warns(DeprecationWarning, match="now named compute_precision"):
            loaded = MedeirTextEmbedder.from_dict(old)
        assert (loaded.compute_precision, loaded.precision) == ("int8", "float32")
        with pytest.warns(DeprecationWarning, match="use compute_precision='fp16'"):
            assert MedeirTextEmbedder(model=str(tiny_model_dir), dtype="float16").compute_precision == "fp16"


# ----------------------------------------------------------------------------
# Sparse embedders: the store's own weights, with Qdrant's IDF


class TestSparseEmbedders:
    def test_to_dict_and_from_dict(self, tiny_model_dir):
        text = MedeirSparseTextEmbedder(model=str(tiny_model_dir), device=ComponentDevice.from_str("cpu"), prefix="q ")
        assert text.to_dict() == {
            "type": f"{MODULE}.MedeirSparseTextEmbedder",
            "init_parameters": {"model": str(tiny_model_dir), "device": CPU, "prefix": "q ", "suffix": "",
                                "backend": "torch", **ST_LOADING},
        }
        documents = MedeirSparseDocumentEmbedder(device=ComponentDevice.from_str("cpu"), meta_fields_to_embed=["title"])
        assert documents.to_dict() == {
            "type": f"{MODULE}.MedeirSparseDocumentEmbedder",
            "init_parameters": {"model": "medeir-small", "device": CPU, "prefix": "", "suffix": "", "batch_size": 32,
                                "progress_bar": True, "meta_fields_to_embed": ["title"], "embedding_separator": "\n",
                                "backend": "torch", **ST_LOADING},
        }
        for component in (text, documents):
            assert type(component).from_dict(component.to_dict()).to_dict() == component.to_dict()
        assert documents.tokenizer is None  # nothing loaded before warm_up

    def test_vectors_are_the_stores(self, tiny_model_dir, encoder):
        from haystack.dataclasses import SparseEmbedding

        from medeir_rag.rag.store import sparse_document_vectors, sparse_query_vector

        embedder = MedeirSparseDocumentEmbedder(model=str(tiny_model_dir), meta_fields_to_embed=["title"],
                                                embedding_separator=" ", batch_size=2, progress_bar=False)
        docs = [Document(content=f"Gout attack {i} treated with colchicine.", meta={"title": f"Gout {i}"})
                for i in range(5)]
        out = embedder.run(docs)["documents"]
        expected = sparse_document_vectors(encoder.tokenizer, [f"Gout {i} Gout attack {i} treated with colchicine."
                                                               for i in range(5)])
        assert [(d.sparse_embedding.indices, d.sparse_embedding.values) for d in out] == expected
        assert all(d.sparse_embedding is None for d in docs) and embedder.run([])["documents"] == []
        query = MedeirSparseTextEmbedder(model=str(tiny_model_dir)).run("colchicine for gout")["sparse_embedding"]
        assert isinstance(query, SparseEmbedding)
        assert (query.indices, query.values) == sparse_query_vector(encoder.tokenizer, "colchicine for gout")
        with pytest.raises(TypeError, match="MedeirSparseDocumentEmbedder"):
            MedeirSparseTextEmbedder(model=str(tiny_model_dir)).run([Document(content="x")])
        with pytest.raises(TypeError, match="MedeirSparseTextEmbedder"):
            embedder.run("text")


def test_hybrid_pipeline_over_qdrant_matches_the_stores_sparse_scores(tiny_model_dir):
    from haystack_integrations.components.retrievers.qdrant import (
        QdrantHybridRetriever,
        QdrantSparseEmbeddingRetriever,
    )
    from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

    from medeir_rag.integrations.haystack import QDRANT_SPARSE_OPTIONS
    from medeir_rag.rag.documents import SourceDocument
    from medeir_rag.rag.store import MedeirVectorStore

    model, cpu = str(tiny_model_dir), ComponentDevice.from_str("cpu")
    corpus = list(read_sample_corpus())[:10]
    store = QdrantDocumentStore(location=":memory:", embedding_dim=64, similarity="cosine", progress_bar=False,
                                **QDRANT_SPARSE_OPTIONS)
    indexing = Pipeline()
    indexing.add_component("dense", MedeirDocumentEmbedder(model=model, device=cpu, progress_bar=False))
    indexing.add_component("sparse", MedeirSparseDocumentEmbedder(model=model, progress_bar=False))
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("dense", "sparse")
    indexing.connect("sparse", "writer")
    indexing.run({"dense": {"documents": [Document(content=d.text, meta={"doc_id": d.id}) for d in corpus]}})
    sparse_config = store._client.get_collection(store.index).config.params.sparse_vectors
    assert [v.modifier.value for v in sparse_config.values()] == ["idf"]  # Qdrant adds the IDF half of BM25

    querying = Pipeline()
    querying.add_component("dense", MedeirTextEmbedder(model=model, device=cpu, progress_bar=False))
    querying.add_component("sparse", MedeirSparseTextEmbedder(model=model))
    querying.add_component("retriever", QdrantHybridRetriever(document_store=store, top_k=3))
    querying.connect("dense.embedding", "retriever.query_embedding")
    querying.connect("sparse.sparse_embedding", "retriever.query_sparse_embedding")
    question = corpus[6].text
    top = querying.run({"dense": {"text": question}, "sparse": {"text": question}})["retriever"]["documents"]
    assert top[0].meta["doc_id"] == corpus[6].id

    loaded = Pipeline.loads(querying.dumps(), allowed_modules=["medeir_rag"])
    assert loaded.to_dict()["components"] == querying.to_dict()["components"]

    # the sparse side scores exactly as our own store's sparse search
    query_words = " ".join(corpus[3].title.split()[:4])
    sparse_query = MedeirSparseTextEmbedder(model=model).run(query_words)["sparse_embedding"]
    theirs = QdrantSparseEmbeddingRetriever(document_store=store, top_k=5, scale_score=False).run(
        query_sparse_embedding=sparse_query)["documents"]
    ours_store = MedeirVectorStore(MedeirEncoder(tiny_model_dir, device="cpu"), collection="parity", path=":memory:")
    try:
        ours_store.index([SourceDocument(id=d.id, text=d.text) for d in corpus], show_progress=False)
        ours = ours_store.search(query_words, mode="sparse", top_k=5)
    finally:
        ours_store.close()
    assert [d.meta["doc_id"] for d in theirs] == [h.doc_id for h in ours]
    np.testing.assert_allclose([d.score for d in theirs], [h.score for h in ours], rtol=1e-5)


def test_pubmed_example_hybrid(tiny_model_dir):
    import runpy
    from pathlib import Path

    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    from medeir_rag.rag.documents import SAMPLE_CORPUS

    example = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "haystack_pubmed_qa.py"))
    corpus = list(read_sample_corpus())[:12]
    result = example["main"]([str(SAMPLE_CORPUS), "--limit", "12", "--model", str(tiny_model_dir), "--top-k", "3",
                              "--hybrid", "--question", corpus[5].text])
    try:
        assert result["documents"][0].meta["title"] == corpus[5].title
        assert "QdrantHybridRetriever" in result["yaml"] and f"{MODULE}.MedeirSparseTextEmbedder" in result["yaml"]
        store = result["document_store"]
        sparse_config = store._client.get_collection(store.index).config.params.sparse_vectors
        assert [v.modifier.value for v in sparse_config.values()] == ["idf"]
    finally:
        result["document_store"].close()
