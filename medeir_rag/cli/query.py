"""``medeir query``: search a collection built by ``medeir index``.

Examples::

    medeir query "first-line drug for type 2 diabetes"
    medeir query "asthma inhaler" --mode sparse --top-k 3 --json
    medeir query "stroke warning signs" --reranker runs/reranker-cpu/final --candidates 50

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/cli/query.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from medeir_rag.cli.index import add_store_arguments
from medeir_rag.rag.fusion import HYBRID_CANDIDATES
from medeir_rag.rag.store import DEFAULT_HNSW_EF, SEARCH_MODES

BUNDLED = "bundled"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medeir query", description="Search a medeir Qdrant collection.")
    parser.add_argument("query", help="the question or search text")
    parser.add_argument("--top-k", type=int, default=5, help="results to show (default: 5)")
    parser.add_argument("--mode", choices=SEARCH_MODES, default="hybrid", help="dense, sparse or hybrid (default)")
    parser.add_argument(
        "--reranker", "--rerank", dest="rerank", nargs="?", const=BUNDLED, default=None, metavar="PATH",
        help="rerank with a cross-encoder directory (default: no reranking; no PATH: the bundled "
        "reranker, which is not shipped today)",
    )
    parser.add_argument(
        "--candidates", type=int, default=None,
        help="chunks retrieved before reranking, and by each side before hybrid fusion "
        f"(default: max(4 * top-k, 20) with --rerank, else {HYBRID_CANDIDATES} per side)",
    )
    parser.add_argument(
        "--hnsw-ef", type=int, default=DEFAULT_HNSW_EF, metavar="N",
        help=f"HNSW beam width of the dense search (default: {DEFAULT_HNSW_EF}: recall@10 0.995 at a million "
        "chunks, against 0.922 at the engine's own default of about 100)",
    )
    parser.add_argument("--snippet-chars", type=int, default=240, help="characters of each chunk to print (default: 240)")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    add_store_arguments(parser)
    return parser


def _fail(message: str) -> int:
    print(f"medeir query: {message}", file=sys.stderr)
    return 1


def _snippet(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(limit - 1, 0)].rstrip() + "…"


def main(argv: Sequence[str] | None = None) -> int:
    """``medeir query``: a ``MedeirError`` is one line and exit 1, Ctrl-C exit 130 at any point."""
    from medeir_rag.errors import run_command

    return run_command("medeir query", lambda: _run(argv))


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k <= 0:
        return _fail(f"--top-k must be > 0, got {args.top_k}")
    if args.hnsw_ef <= 0:
        return _fail(f"--hnsw-ef must be > 0, got {args.hnsw_ef}")
    if args.candidates is not None and args.candidates < args.top_k:
        return _fail(f"--candidates ({args.candidates}) must be at least --top-k ({args.top_k})")
    if not args.query.strip():
        return _fail("the query is empty")

    from medeir_rag.errors import check_text
    from medeir_rag.inference.encoder import MedeirEncoder, resolve_device
    from medeir_rag.model.files import resolve_model_path
    from medeir_rag.rag.store import MedeirVectorStore, open_existing

    # the cheap checks, before any model loads: query text, model path, device, collection
    check_text(args.query, "the query")
    model_dir = resolve_model_path(args.model)
    resolve_device(args.device)
    backend = open_existing(args.collection, args.qdrant_path, args.qdrant_url, args.qdrant_api_key)
    try:
        reranker = None
        if args.rerank is not None:
            from medeir_rag.inference.rerank import (
                MedeirReranker,
                bundled_reranker_missing,
                no_bundled_reranker,
            )

            if args.rerank == BUNDLED and bundled_reranker_missing(None):
                return _fail(str(no_bundled_reranker("--reranker PATH, a CrossEncoder folder")))
            reranker = MedeirReranker(None if args.rerank == BUNDLED else args.rerank, device=args.device)
        encoder = MedeirEncoder(model_dir, device=args.device, precision=args.precision)
        store = MedeirVectorStore(encoder, collection=args.collection, backend=backend, hnsw_ef=args.hnsw_ef)
        hits = store.search(args.query, top_k=args.top_k, mode=args.mode, candidates=args.candidates,
                            reranker=reranker, rerank_top_k=args.candidates)
    finally:
        backend.close()

    results = [hit.as_dict() for hit in hits]
    for rank, result in enumerate(results, start=1):
        result["rank"] = rank

    where = args.qdrant_url or args.qdrant_path
    if args.json:
        print(json.dumps({
            "query": args.query, "mode": args.mode, "reranker": reranker.name if reranker else None,
            "collection": args.collection, "location": where, "results": results,
        }, ensure_ascii=False))
        return 0
    scored_by = f"reranked by {reranker.name}" if reranker else f"{args.mode} scores"
    print(f"{len(results)} results for {args.query!r} ({scored_by}; collection {args.collection!r} at {where})")
    for result in results:
        title = result["title"] or "(untitled)"
        print(f"{result['rank']:>2}. {result['score']:.4f}  {title}  [{result['doc_id']} #{result['chunk_index']}]")
        print(f"    {_snippet(result['text'], args.snippet_chars)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
