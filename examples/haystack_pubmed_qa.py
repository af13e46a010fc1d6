"""Haystack question answering over PubMed abstracts with medeir: split, embed, store, retrieve, rerank.

Two pipelines, both offline: indexing (MedeirDocumentSplitter -> MedeirDocumentEmbedder ->
DocumentWriter into an embedded QdrantDocumentStore) and querying (MedeirTextEmbedder ->
QdrantEmbeddingRetriever -> PromptBuilder, with a MedeirSimilarityRanker after the retriever
when --reranker names a cross-encoder folder: none is bundled). With --hybrid the store also
holds medeir's sparse vectors (MedeirSparseDocumentEmbedder, Qdrant's IDF switched on with
QDRANT_SPARSE_OPTIONS) and a QdrantHybridRetriever fuses dense and sparse hits (Qdrant's RRF,
fed by MedeirTextEmbedder and MedeirSparseTextEmbedder). No LLM is called: the
script prints the ranked evidence and the prompt a generator would receive; connect any
Haystack chat generator to `prompt_builder.prompt` to get an answer. The query pipeline is
serialised to YAML and loaded back, as a deployment would do.

    python examples/haystack_pubmed_qa.py                                  # 200 abstracts, bundled model
    python examples/haystack_pubmed_qa.py --hybrid                         # dense + sparse over Qdrant
    python examples/haystack_pubmed_qa.py ../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz \
        --limit 1000 --model out/medeir-st --reranker out/medeir-reranker --question "Does naloxone block clonidine?"
"""

# %%
import argparse
import io
import itertools
import sys

from haystack import Document, Pipeline
from haystack.components.builders import PromptBuilder
from haystack.components.writers import DocumentWriter
from haystack_integrations.components.retrievers.qdrant import QdrantEmbeddingRetriever, QdrantHybridRetriever
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore

from medeir_rag.integrations.haystack import (
    QDRANT_SPARSE_OPTIONS,
    MedeirDocumentEmbedder,
    MedeirDocumentSplitter,
    MedeirSimilarityRanker,
    MedeirSparseDocumentEmbedder,
    MedeirSparseTextEmbedder,
    MedeirTextEmbedder,
)
from medeir_rag.model.files import DEFAULT_MODEL_NAME
from medeir_rag.rag.chunking import DEFAULT_CHUNK_SIZE
from medeir_rag.rag.documents import read_documents, shared_pubmed_or_sample

DEFAULT_QUESTION = "Does naloxone reverse the blood pressure effect of clonidine?"
TEMPLATE = """Answer the question using only these PubMed abstracts; cite PMIDs.
{% for doc in documents %}
[PMID {{ doc.meta.pmid }}] {{ doc.meta.title }}
{{ doc.content }}
{% endfor %}
Question: {{ question }}
Answer:"""


def default_data() -> str:
    """The shared PubMed file ($MEDEIR_DATA_DIR, else ../shared/data from here or beside the repository),
    else the sample corpus bundled with the package."""
    return str(shared_pubmed_or_sample())


DEFAULT_DATA = default_data()


# %%
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Haystack QA over PubMed abstracts with medeir.")
    parser.add_argument("path", nargs="?", default=DEFAULT_DATA,
                        help=f"PubMed data (default: the shared PubMed file, else the bundled sample; here {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=200, help="abstracts to index (default: 200)")
    parser.add_argument("--model", default=DEFAULT_MODEL_NAME, help="medeir sentence-transformers directory (default: bundled)")
    parser.add_argument("--reranker", default=None, help="medeir cross-encoder directory (default: no reranking)")
    parser.add_argument("--split-length", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"tokens per chunk (default {DEFAULT_CHUNK_SIZE}; 0 = the whole model window)")
    parser.add_argument("--qdrant-path", default=None, help="embedded Qdrant folder (default: in memory)")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="the question")
    parser.add_argument("--top-k", type=int, default=3, help="passages kept (default: 3)")
    parser.add_argument("--hybrid", action="store_true",
                        help="dense + medeir sparse vectors, fused by QdrantHybridRetriever (default: dense only)")
    return parser


# %%
def load_documents(path: str, limit: int) -> list[Document]:
    """PubMed records as Haystack Documents with `title` and `pmid` metadata."""
    return [
        Document(content=r.text, meta={"title": r.title, "pmid": r.meta.get("pmid", r.id)})
        for r in itertools.islice(read_documents(path), limit)
        if r.text.strip()
    ]


# %%
def build_pipelines(args: argparse.Namespace) -> tuple[Pipeline, Pipeline]:
    doc_embedder = MedeirDocumentEmbedder(model=args.model, meta_fields_to_embed=["title"], progress_bar=False)
    location = {"path": args.qdrant_path} if args.qdrant_path else {"location": ":memory:"}
    sparse = QDRANT_SPARSE_OPTIONS if args.hybrid else {}  # sparse vectors with Qdrant's IDF modifier
    store = QdrantDocumentStore(**location, embedding_dim=doc_embedder.embedding_dimension, similarity="cosine",
                                recreate_index=True, progress_bar=False, **sparse)

    indexing = Pipeline()
    indexing.add_component("splitter", MedeirDocumentSplitter(model=args.model, split_length=args.split_length or None,
                                                              meta_fields_to_embed=["title"]))
    indexing.add_component("embedder", doc_embedder)
    indexing.add_component("writer", DocumentWriter(document_store=store))
    indexing.connect("splitter.documents", "embedder.documents")
    if args.hybrid:
        indexing.add_component("sparse_embedder", MedeirSparseDocumentEmbedder(
            model=args.model, meta_fields_to_embed=["title"], progress_bar=False))
        indexing.connect("embedder.documents", "sparse_embedder.documents")
        indexing.connect("sparse_embedder.documents", "writer.documents")
    else:
        indexing.connect("embedder.documents", "writer.documents")

    querying = Pipeline()
    querying.add_component("embedder", MedeirTextEmbedder(model=args.model, progress_bar=False))
    candidates = max(4 * args.top_k, 10) if args.reranker else args.top_k
    if args.hybrid:
        querying.add_component("sparse_embedder", MedeirSparseTextEmbedder(model=args.model))
        querying.add_component("retriever", QdrantHybridRetriever(document_store=store, top_k=candidates))
        querying.connect("sparse_embedder.sparse_embedding", "retriever.query_sparse_embedding")
    else:
        querying.add_component("retriever", QdrantEmbeddingRetriever(document_store=store, top_k=candidates))
    querying.add_component("prompt_builder", PromptBuilder(template=TEMPLATE, required_variables=["question", "documents"]))
    querying.connect("embedder.embedding", "retriever.query_embedding")
    if args.reranker:  # optional: no reranker is bundled
        querying.add_component("ranker", MedeirSimilarityRanker(model=args.reranker, top_k=args.top_k,
                                                                meta_fields_to_embed=["title"]))
        querying.connect("retriever.documents", "ranker.documents")
        querying.connect("ranker.documents", "prompt_builder.documents")
    else:
        querying.connect("retriever.documents", "prompt_builder.documents")
    return indexing, querying


# %%
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args([] if argv is None and "ipykernel" in sys.modules else argv)
    documents = load_documents(args.path, args.limit)
    indexing, querying = build_pipelines(args)
    written = indexing.run({"splitter": {"documents": documents}})["writer"]["documents_written"]
    print(f"{len(documents)} abstracts from {args.path} -> {written} chunks in Qdrant")

    # Pipelines serialise to YAML and load back; medeir components must be allowed explicitly.
    # (The loaded copy is not run here: an embedded Qdrant store allows one open client at a time.)
    yaml_text = querying.dumps()
    Pipeline.loads(yaml_text, allowed_modules=["medeir_rag"])

    question = args.question
    last = "ranker" if args.reranker else "retriever"
    inputs = {"embedder": {"text": question}, "prompt_builder": {"question": question}}
    if args.hybrid:
        inputs["sparse_embedder"] = {"text": question}
    if args.reranker:
        inputs["ranker"] = {"query": question}
    result = querying.run(inputs, include_outputs_from={last})
    print(f"\nQ: {question}")
    for rank, doc in enumerate(result[last]["documents"], start=1):
        print(f"{rank}. [{doc.score:.3f}] PMID {doc.meta['pmid']}: {doc.meta['title']}")
    print("\nPrompt for a generator:\n" + result["prompt_builder"]["prompt"][:1200])
    store = indexing.get_component("writer").document_store
    return {"documents": result[last]["documents"], "prompt": result["prompt_builder"]["prompt"], "yaml": yaml_text,
            "question": question, "document_store": store}


# %%
def results_table(documents: list[Document]) -> str:
    """The ranked documents as a Markdown table (rank, score, PMID, title, opening words)."""
    def cell(text: str, width: int) -> str:
        text = " ".join(str(text).split()).replace("|", "/")
        return text if len(text) <= width else text[: width - 1].rstrip() + "…"

    rows = ["| rank | score | PMID | title | passage |", "|---:|---:|---|---|---|"]
    rows += [f"| {rank} | {doc.score:.3f} | {doc.meta['pmid']} | {cell(doc.meta['title'], 70)} | {cell(doc.content, 110)} |"
             for rank, doc in enumerate(documents, start=1)]
    return "\n".join(rows)


# %%
def score_histogram_png(result: dict, model: str = DEFAULT_MODEL_NAME) -> bytes:
    """A PNG: the cosine score of every stored chunk for the question, with the retrieved ones marked."""
    import numpy as np
    from matplotlib.figure import Figure

    stored = result["document_store"].filter_documents()  # every chunk, with its embedding
    chunks = np.array([doc.embedding for doc in stored], dtype=np.float32)
    embedder = MedeirTextEmbedder(model=model, progress_bar=False)
    embedder.warm_up()
    query = np.array(embedder.run(text=result["question"])["embedding"], dtype=np.float32)
    scores = (chunks / np.linalg.norm(chunks, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.hist(scores, bins=30, color="0.7", label=f"{len(stored)} chunks")
    for rank, doc in enumerate(result["documents"], start=1):
        ax.axvline(doc.score, color="tab:blue", linestyle="--", linewidth=1, label="retrieved" if rank == 1 else None)
        ax.annotate(str(rank), (doc.score, ax.get_ylim()[1] * 0.95), color="tab:blue", ha="right")
    ax.set(title="Cosine similarity of every chunk to the question", xlabel="cosine similarity", ylabel="chunks")
    ax.legend(loc="upper left")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


# %%
if __name__ == "__main__":
    main()
