"""LlamaIndex over PubMed abstracts with medeir: token-window chunks, Qdrant, hybrid search, reranking.

Everything runs offline: the embedded Qdrant (in memory, or a folder with --qdrant-path),
the medeir embedding model and, when --reranker names a cross-encoder folder (none is
bundled), the medeir reranker. No LLM is called (`Settings.llm = None`,
`response_mode="no_text"`): the script prints the retrieved evidence; plug an LLM into
`Settings.llm` and drop `response_mode` to get synthesised answers. With --hybrid the Qdrant
collection also holds medeir's sparse vectors (IDF-weighted) and the query fuses both sides
with the model's alpha, as `medeir query --mode hybrid` does.

    python examples/llamaindex_pubmed.py                                   # 200 abstracts, bundled model
    python examples/llamaindex_pubmed.py --hybrid                          # dense + sparse, fused
    python examples/llamaindex_pubmed.py ../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz \
        --limit 1000 --model out/medeir-st --reranker out/medeir-reranker --query "naloxone and clonidine"

The input can be any file `medeir index` reads: JSON lines (title/text), NCBI PubMed XML
(`pubmed25n0001.xml.gz`), plain text, or a folder of them.
"""

# %%
import argparse
import io
import itertools
import sys

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from medeir_rag.integrations.llama_index import (
    DEFAULT_CHUNK_SIZE,
    MedeirEmbedding,
    MedeirRerank,
    MedeirTokenWindowSplitter,
    medeir_qdrant_vector_store,
)
from medeir_rag.rag.documents import read_documents, shared_pubmed_or_sample

DEFAULT_QUERY = "Which drugs lower blood pressure, and what reverses their effect?"


def default_data() -> str:
    """The shared PubMed file ($MEDEIR_DATA_DIR, else ../shared/data from here or beside the repository),
    else the sample corpus bundled with the package."""
    return str(shared_pubmed_or_sample())


DEFAULT_DATA = default_data()


# %%
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LlamaIndex over PubMed abstracts with medeir.")
    parser.add_argument("path", nargs="?", default=DEFAULT_DATA,
                        help=f"PubMed data (default: the shared PubMed file, else the bundled sample; here {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=200, help="abstracts to index (default: 200)")
    parser.add_argument("--model", default=None, help="medeir sentence-transformers directory (default: bundled)")
    parser.add_argument("--reranker", default=None, help="medeir cross-encoder directory (default: no reranking)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                        help=f"tokens per chunk (default: {DEFAULT_CHUNK_SIZE}; 0: the whole model window)")
    parser.add_argument("--hybrid", action="store_true",
                        help="dense + medeir sparse vectors, fused with the model's alpha (default: dense only)")
    parser.add_argument("--qdrant-path", default=":memory:", help="embedded Qdrant folder (default: in memory)")
    parser.add_argument("--query", default=DEFAULT_QUERY, help="the question")
    parser.add_argument("--top-k", type=int, default=3, help="passages to show (default: 3)")
    return parser


# %%
def load_documents(path: str, limit: int) -> list[Document]:
    """PubMed records as LlamaIndex Documents; the title is embedded with the text, the PMID is not."""
    documents = []
    for record in itertools.islice(read_documents(path), limit):
        if not record.text.strip():
            continue
        documents.append(
            Document(
                id_=record.id,
                text=record.text,
                metadata={"title": record.title, "pmid": record.meta.get("pmid", record.id)},
                excluded_embed_metadata_keys=["pmid"],
                excluded_llm_metadata_keys=["pmid"],
            )
        )
    return documents


# %%
def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args([] if argv is None and "ipykernel" in sys.modules else argv)
    Settings.llm = None  # retrieval only; no remote LLM is contacted
    documents = load_documents(args.path, args.limit)
    print(f"{len(documents)} abstracts from {args.path}")

    embed_model = MedeirEmbedding(model_name=args.model)
    splitter = MedeirTokenWindowSplitter(model_name=args.model, chunk_size=args.chunk_size or None)
    rerank = args.reranker is not None  # optional: no reranker is bundled

    client = QdrantClient(location=":memory:") if args.qdrant_path == ":memory:" else QdrantClient(path=args.qdrant_path)
    try:
        if args.hybrid:  # our sparse side, IDF modifier set, fusion with the model's alpha
            store = medeir_qdrant_vector_store(client, "pubmed", model_name=args.model)
        else:
            store = QdrantVectorStore(client=client, collection_name="pubmed")
        index = VectorStoreIndex.from_documents(
            documents,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
            transformations=[splitter],
        )
        depth = max(4 * args.top_k, 10) if rerank else args.top_k
        # hybrid: each side contributes 100 candidates before fusion (the store's depth), depth are kept
        search = {"vector_store_query_mode": "hybrid", "similarity_top_k": 100, "sparse_top_k": 100,
                  "hybrid_top_k": depth} if args.hybrid else {"similarity_top_k": depth}
        engine = index.as_query_engine(
            **search,
            node_postprocessors=[MedeirRerank(model=args.reranker, top_n=args.top_k)] if rerank else [],
            response_mode="no_text",
        )
        response = engine.query(args.query)
    finally:
        client.close()

    hits = []
    print(f"\nQ: {args.query}")
    for rank, hit in enumerate(response.source_nodes, start=1):
        node = hit.node
        hits.append({"rank": rank, "score": hit.score, "pmid": node.metadata["pmid"], "title": node.metadata["title"],
                     "text": node.get_content()})
        print(f"{rank}. [{hit.score:.3f}] PMID {node.metadata['pmid']}: {node.metadata['title']}")
        print(f"   {node.get_content()[:200]}...")
    return hits


# %%
def results_table(hits: list[dict]) -> str:
    """The hits as a Markdown table (rank, score, PMID, title, opening words)."""
    def cell(text: str, width: int) -> str:
        text = " ".join(str(text).split()).replace("|", "/")
        return text if len(text) <= width else text[: width - 1].rstrip() + "…"

    rows = ["| rank | score | PMID | title | passage |", "|---:|---:|---|---|---|"]
    rows += [f"| {h['rank']} | {h['score']:.3f} | {h['pmid']} | {cell(h['title'], 70)} | {cell(h['text'], 110)} |"
             for h in hits]
    return "\n".join(rows)


# %%
def embedding_space_png(qdrant_path: str, hits: list[dict], query: str, model: str | None = None) -> bytes:
    """A PNG: every chunk vector stored in Qdrant and the query, projected on their two principal axes."""
    import numpy as np
    from matplotlib.figure import Figure

    client = QdrantClient(path=qdrant_path)  # main() closed its client: the folder can be opened again
    try:
        points, offset = client.scroll("pubmed", with_vectors=True, limit=256)
        while offset is not None:
            more, offset = client.scroll("pubmed", with_vectors=True, limit=256, offset=offset)
            points += more
    finally:
        client.close()
    # a hybrid collection names its vectors: the dense one is "text-dense"
    vectors = np.array([p.vector["text-dense"] if isinstance(p.vector, dict) else p.vector for p in points],
                       dtype=np.float32)
    query_vector = np.array(MedeirEmbedding(model_name=model).get_query_embedding(query), dtype=np.float32)
    matrix = np.vstack([vectors, query_vector])
    centred = matrix - matrix.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ axes[:2].T
    rank_of = {h["pmid"]: h["rank"] for h in hits}
    ranks = [rank_of.get(p.payload.get("pmid")) for p in points]
    hit_rows = [i for i, r in enumerate(ranks) if r is not None]

    fig = Figure(figsize=(7, 5), dpi=100)
    ax = fig.add_subplot()
    ax.scatter(xy[:-1, 0], xy[:-1, 1], s=12, c="0.7", label=f"{len(points)} chunks")
    ax.scatter(xy[hit_rows, 0], xy[hit_rows, 1], s=40, c="tab:blue", label="retrieved")
    for i in hit_rows:
        ax.annotate(str(ranks[i]), xy[i], textcoords="offset points", xytext=(4, 4), color="tab:blue")
    ax.scatter(xy[-1, 0], xy[-1, 1], s=160, marker="*", c="tab:red", label="query")
    ax.set(title="Chunk embeddings (PCA of the vectors in Qdrant)", xlabel="PC 1", ylabel="PC 2")
    ax.legend(loc="best")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


# %%
if __name__ == "__main__":
    main()
