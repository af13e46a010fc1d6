"""LlamaIndex over PubMed abstracts with medeir: token-window chunks, Qdrant, cross-encoder reranking.

Everything runs offline: the embedded Qdrant (in memory, or a folder with --qdrant-path),
the medeir embedding model and, when --reranker names a cross-encoder folder (none is
bundled), the medeir reranker. No LLM is called (`Settings.llm = None`,
`response_mode="no_text"`): the script prints the retrieved evidence; plug an LLM into
`Settings.llm` and drop `response_mode` to get synthesised answers.

    python examples/llamaindex_pubmed.py                                   # 200 abstracts, bundled model
    python examples/llamaindex_pubmed.py ../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz \
        --limit 1000 --model out/medeir-st --reranker out/medeir-reranker --query "naloxone and clonidine"

The input can be any file `medeir index` reads: JSON lines (title/text), NCBI PubMed XML
(`pubmed25n0001.xml.gz`), plain text, or a folder of them.
"""

# %%
import argparse
import itertools
import sys

from llama_index.core import Document, Settings, StorageContext, VectorStoreIndex
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from medeir_rag.documents import read_documents
from medeir_rag.integrations.llama_index import MedeirEmbedding, MedeirRerank, MedeirTokenWindowSplitter

DEFAULT_DATA = "../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz"
DEFAULT_QUERY = "Which drugs lower blood pressure, and what reverses their effect?"


# %%
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LlamaIndex over PubMed abstracts with medeir.")
    parser.add_argument("path", nargs="?", default=DEFAULT_DATA, help=f"PubMed data (default: {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=200, help="abstracts to index (default: 200)")
    parser.add_argument("--model", default=None, help="medeir sentence-transformers directory (default: bundled)")
    parser.add_argument("--reranker", default=None, help="medeir cross-encoder directory (default: no reranking)")
    parser.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: the model window)")
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
    args = build_parser().parse_args([] if "ipykernel" in sys.modules else argv)
    Settings.llm = None  # retrieval only; no remote LLM is contacted
    documents = load_documents(args.path, args.limit)
    print(f"{len(documents)} abstracts from {args.path}")

    embed_model = MedeirEmbedding(model_name=args.model)
    splitter = MedeirTokenWindowSplitter(model_name=args.model, chunk_size=args.chunk_size)
    rerank = args.reranker is not None  # optional: no reranker is bundled

    client = QdrantClient(location=":memory:") if args.qdrant_path == ":memory:" else QdrantClient(path=args.qdrant_path)
    try:
        store = QdrantVectorStore(client=client, collection_name="pubmed")
        index = VectorStoreIndex.from_documents(
            documents,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
            transformations=[splitter],
        )
        engine = index.as_query_engine(
            similarity_top_k=max(4 * args.top_k, 10) if rerank else args.top_k,
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
if __name__ == "__main__":
    main()
