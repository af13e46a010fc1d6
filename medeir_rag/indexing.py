"""``medeir index``: chunk, embed and store documents in Qdrant (embedded by default, or a server).

Examples::

    medeir index                                   # the sample corpus shipped with the package
    medeir index ../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz --model out/st
    medeir index pubmed25n0001.xml.gz --qdrant-url http://localhost:6333 --collection pubmed
    medeir index notes/ --chunk-size 1024 --chunk-overlap 64

Inputs: JSON lines with ``title``/``text`` (``id``/``_id``/``pmid`` optional), plain text files,
NCBI PubMed XML (``PubmedArticle``), each optionally gzipped, or a folder of them. Empty and
whitespace-only documents are skipped and counted. Non-UTF-8 input stops with an error naming
the file unless ``--encoding-errors replace``. Re-running the same command is safe: documents
already stored unchanged are skipped, so an interrupted run resumes where it stopped, and
points stored before an error are kept. Nothing here opens a network connection unless
``--qdrant-url`` names a server (and ``--model`` a hub id not in the local cache).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence

from medeir_rag.vector_store import DEFAULT_COLLECTION, DEFAULT_QDRANT_PATH

DEFAULT_PUBMED_JSONL = "../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``medeir index`` and ``medeir query`` share: model and where the collection lives."""
    group = parser.add_argument_group("model and collection")
    group.add_argument("--model", default=None, help="sentence-transformers directory of a medeir model (default: the bundled model)")
    group.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    group.add_argument("--collection", default=DEFAULT_COLLECTION, help=f"collection name (default: {DEFAULT_COLLECTION})")
    group.add_argument(
        "--qdrant-path", default=str(DEFAULT_QDRANT_PATH),
        help=f"folder of the embedded Qdrant, no server needed (default: {DEFAULT_QDRANT_PATH})",
    )
    group.add_argument("--qdrant-url", default=None, help="a Qdrant server instead, e.g. http://localhost:6333")
    group.add_argument(
        "--qdrant-api-key", default=os.environ.get("QDRANT_API_KEY"),
        help="API key for --qdrant-url (default: $QDRANT_API_KEY)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medeir index",
        description="Index documents into a Qdrant collection (dense + medical sparse vectors).",
        epilog=f"Real PubMed data: `medeir index {DEFAULT_PUBMED_JSONL}` or an NCBI baseline file "
        "(pubmed25nXXXX.xml.gz from https://ftp.ncbi.nlm.nih.gov/pubmed/baseline/, downloaded beforehand).",
    )
    parser.add_argument(
        "path", nargs="?", default=None,
        help="a .jsonl(.gz), .txt, PubMed .xml(.gz) file or a folder of them (default: the sample corpus)",
    )
    parser.add_argument("--sample", action="store_true", help="index the sample corpus shipped with the package")
    add_store_arguments(parser)
    group = parser.add_argument_group("chunking and batching")
    group.add_argument("--chunk-size", type=int, default=None, help="tokens per chunk (default: the model's full window)")
    group.add_argument("--chunk-overlap", type=int, default=0, help="tokens shared by consecutive chunks (default: 0)")
    group.add_argument("--batch-size", type=int, default=32, help="chunks embedded and stored at once (default: 32)")
    group.add_argument("--no-title", action="store_true", help="embed chunk text only, not 'title + text'")
    group.add_argument("--limit", type=int, default=None, help="index only the first N documents read")
    parser.add_argument("--recreate", action="store_true", help="drop the collection first")
    parser.add_argument(
        "--encoding-errors", choices=("strict", "replace"), default="strict",
        help="non-UTF-8 input: stop with an error (strict, default) or replace bad bytes with U+FFFD",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _fail(message: str) -> int:
    print(f"medeir index: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.path is not None and args.sample:
        return _fail("give either PATH or --sample, not both")
    if args.limit is not None and args.limit <= 0:
        return _fail(f"--limit must be > 0, got {args.limit}")

    from medeir_rag.documents import DocumentReadError, list_files, read_documents, read_sample_corpus
    from medeir_rag.encoder import MedeirEncoder
    from medeir_rag.model_files import ModelFileError
    from medeir_rag.vector_store import CollectionMismatchError, MedeirVectorStore, StorageLockedError

    try:
        if args.path is None:
            source, documents = "the sample corpus", read_sample_corpus()
        else:
            list_files(args.path)  # a missing path fails before the model loads
            source, documents = args.path, read_documents(args.path, encoding_errors=args.encoding_errors)
        if args.limit is not None:
            documents = itertools.islice(documents, args.limit)
        encoder = MedeirEncoder(args.model, device=args.device)
    except (FileNotFoundError, NotADirectoryError, ModelFileError, ValueError) as error:
        return _fail(str(error))

    store = None
    try:
        store = MedeirVectorStore(
            encoder, collection=args.collection, path=args.qdrant_path, url=args.qdrant_url, api_key=args.qdrant_api_key
        )
        stats = store.index(
            documents,
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
            batch_size=args.batch_size,
            recreate=args.recreate,
            embed_title=not args.no_title,
            show_progress=not args.no_progress,
        )
        total = store.count()
    except KeyboardInterrupt:
        print("medeir index: interrupted; points stored so far are kept, rerun the command to resume", file=sys.stderr)
        return 130
    except (FileNotFoundError, DocumentReadError, CollectionMismatchError, StorageLockedError, ValueError) as error:
        return _fail(f"{error}\n(points stored before the error are kept; rerun the command to resume)")
    finally:
        if store is not None:
            store.close()

    where = args.qdrant_url or args.qdrant_path
    if args.json:
        print(json.dumps({**stats.as_dict(), "points": total, "collection": args.collection, "location": where,
                          "source": str(source)}))
    else:
        print(f"{stats.summary()}\ncollection {args.collection!r} at {where}: {total} points (from {source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
