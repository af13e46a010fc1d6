"""``medeir index``: chunk, embed and store documents in Qdrant (Qdrant Edge in a folder by default, or a server).

Examples::

    medeir index                                   # the sample corpus shipped with the package
    medeir index ../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz --model out/st
    medeir index pubmed25n0001.xml.gz --qdrant-url http://localhost:6333 --collection pubmed
    medeir index notes/ --chunk-size 1024 --chunk-overlap 64
    medeir index shards/ --ray auto --qdrant-url http://qdrant:6333    # embedding on a Ray cluster
    medeir index --migrate --qdrant-path old-store/    # a folder written by qdrant-client's local mode

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/cli/index.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Sequence

from medeir_rag.inference.precision import DEFAULT_PRECISION, PRECISIONS
from medeir_rag.rag.store import DEFAULT_COLLECTION, DEFAULT_QDRANT_PATH

DEFAULT_PUBMED_JSONL = "../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz"


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``medeir index`` and ``medeir query`` share: model and where the collection lives."""
    group = parser.add_argument_group("model and collection")
    group.add_argument("--model", default=None, help="sentence-transformers directory of a medeir model (default: the bundled model)")
    group.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    group.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
        help="compute precision of the embedder (default: auto = bf16 where this machine runs it faster, else fp32)",
    )
    group.add_argument("--collection", default=DEFAULT_COLLECTION, help=f"collection name (default: {DEFAULT_COLLECTION})")
    group.add_argument(
        "--qdrant-path", default=str(DEFAULT_QDRANT_PATH),
        help=f"folder of the embedded Qdrant Edge store, no server needed (default: {DEFAULT_QDRANT_PATH})",
    )
    group.add_argument(
        "--qdrant-url", default=None, help="a Qdrant server or cluster instead, e.g. http://localhost:6333"
    )
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
    parser.add_argument(
        "--recreate", action="store_true",
        help="replace the collection by one built from this input (the old one is kept until the run succeeds)",
    )
    parser.add_argument(
        "--skip-invalid", action="store_true",
        help="skip records that cannot be read (bad JSON, bad encoding, ...) and report them, instead of stopping",
    )
    parser.add_argument(
        "--encoding-errors", choices=("strict", "replace"), default="strict",
        help="non-UTF-8 input: stop with an error (strict, default) or replace bad bytes with U+FFFD",
    )
    parser.add_argument(
        "--migrate", action="store_true",
        help="convert the --qdrant-path folder written by qdrant-client's local mode (medeir before Qdrant Edge) "
        "to Qdrant Edge, copying the stored vectors (no model needed), then exit",
    )
    parser.add_argument(
        "--ray", metavar="local|auto|ADDRESS", default=None,
        help="embed on Ray Data actors (one per CPU or GPU slot) and write from here: local starts Ray on this "
        "machine, auto joins its cluster, ADDRESS is a head (HOST:6379 or ray://HOST:10001); extra [distributed]",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _fail(message: str) -> int:
    print(f"medeir index: {message}", file=sys.stderr)
    return 1


def _where(error) -> str:
    return f"{error.path}:{error.line}" if error.line is not None else str(error.path)


def _migrate(args: argparse.Namespace) -> int:
    from medeir_rag.rag.store_backends import check_qdrant_path, migrate_local_store

    folder = check_qdrant_path(args.qdrant_path, create=False)
    counts = migrate_local_store(folder, show_progress=not args.no_progress)
    if args.json:
        print(json.dumps({"migrated": counts, "location": str(folder)}))
    else:
        done = ", ".join(f"{name!r}: {n} points" for name, n in counts.items())
        print(f"converted {folder} to Qdrant Edge ({done}); the old files are in {folder}.qdrant-client-backup")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``medeir index``: a ``MedeirError`` is one line and exit 1, Ctrl-C exit 130 at any point."""
    args = build_parser().parse_args(argv)
    from medeir_rag.errors import InvalidArgumentError, MedeirError, one_line

    state = {"indexing": False}
    try:
        if args.migrate:
            if args.path is not None or args.sample or args.qdrant_url or args.recreate:
                raise InvalidArgumentError("--migrate takes only --qdrant-path (no PATH, --sample, --recreate or --qdrant-url)")
            return _migrate(args)
        return _run(args, state)
    except KeyboardInterrupt:
        if not state["indexing"]:
            message = "interrupted before indexing started; nothing was changed"
        elif args.recreate:
            message = "interrupted; the collection is as it was (the unfinished rebuild was deleted)"
        else:
            message = "interrupted; points stored so far are kept, rerun the command to resume"
        print(f"medeir index: {message}", file=sys.stderr)
        return 130
    except MedeirError as error:
        from medeir_rag.rag.documents import DocumentReadError

        message = one_line(error)
        if isinstance(error, DocumentReadError) and not args.skip_invalid:
            message += " (--skip-invalid skips such records and indexes the rest)"
        if state["indexing"]:
            message += (
                "; the collection is as it was (the unfinished rebuild was deleted)" if args.recreate
                else "; points stored before the error are kept, rerun the command to resume"
            )
        return _fail(message)


def _run(args: argparse.Namespace, state: dict[str, bool]) -> int:
    from medeir_rag.errors import InvalidArgumentError

    if args.path is not None and args.sample:
        raise InvalidArgumentError("give either PATH or --sample, not both")
    for flag, value, minimum in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                                 ("--chunk-size", args.chunk_size, 1), ("--chunk-overlap", args.chunk_overlap, 0)):
        if value is not None and value < minimum:
            raise InvalidArgumentError(f"{flag} must be {'> 0' if minimum else '>= 0'}, got {value}")

    from medeir_rag.inference.encoder import MedeirEncoder, resolve_device
    from medeir_rag.model.files import resolve_model_path
    from medeir_rag.rag.chunking import load_token_window
    from medeir_rag.rag.documents import (
        DocumentReadError,
        count_records,
        list_files,
        read_documents,
        read_sample_corpus,
    )
    from medeir_rag.rag.store import MedeirVectorStore, open_backend

    # the cheap checks, before any model loads: input, model path, device, Qdrant folder and lock
    invalid: list[DocumentReadError] = []
    if args.path is None:
        source, documents = "the sample corpus", read_sample_corpus()
    else:
        list_files(args.path)
        source = args.path
        documents = read_documents(
            args.path, encoding_errors=args.encoding_errors, skip_invalid=args.skip_invalid, invalid=invalid
        )
    first = next(documents, None)  # a file that is bad from its first record fails here
    documents = itertools.chain([] if first is None else [first], documents)
    if args.limit is not None:
        documents = itertools.islice(documents, args.limit)
    model_dir = resolve_model_path(args.model)
    device = resolve_device(args.device if args.ray is None else "cpu")  # with --ray, --device is the actors'
    if args.chunk_size is not None or args.chunk_overlap:  # the tokenizer only, not the weights
        chunk_size = load_token_window(model_dir).resolve_chunk_size(args.chunk_size)
        if args.chunk_overlap >= chunk_size:
            raise InvalidArgumentError(
                f"--chunk-overlap must be below the chunk size ({chunk_size}), got {args.chunk_overlap}"
            )
    backend = open_backend(args.qdrant_path, args.qdrant_url, args.qdrant_api_key, collection=args.collection)
    ray_session = None
    try:
        if args.ray is not None:  # before the model loads: Ray is installed and the cluster answers
            from medeir_rag.rag.distributed import RaySession

            ray_session = RaySession.connect(args.ray)
        total = None
        if not args.no_progress:
            total = count_records(args.path)
            if args.limit is not None:
                total = args.limit if total is None else min(total, args.limit)
        encoder = MedeirEncoder(model_dir, device=str(device), precision=args.precision)
        store = MedeirVectorStore(encoder, collection=args.collection, backend=backend)
        state["indexing"] = True
        options = {"chunk_size": args.chunk_size, "chunk_overlap": args.chunk_overlap, "batch_size": args.batch_size,
                   "recreate": args.recreate, "embed_title": not args.no_title, "show_progress": not args.no_progress,
                   "total": total}
        if ray_session is None:
            stats = store.index(documents, **options)
        else:  # the readers and the embedding run on Ray; the store writes here (medeir_rag.rag.distributed)
            from medeir_rag.rag.distributed import index_on_ray

            stats = index_on_ray(store, args.path, model=args.model, device=args.device, limit=args.limit,
                                 encoding_errors=args.encoding_errors, skip_invalid=args.skip_invalid,
                                 invalid=invalid, **options)
        total = store.count()
    finally:
        backend.close()
        if ray_session is not None:
            ray_session.close()

    where = args.qdrant_url or args.qdrant_path
    if args.json:
        print(json.dumps({**stats.as_dict(), "points": total, "collection": args.collection, "location": where,
                          "source": str(source), "skipped_invalid": len(invalid),
                          "invalid": [{"path": e.path, "line": e.line, "error": str(e)} for e in invalid]}))
    else:
        print(f"{stats.summary()}\ncollection {args.collection!r} at {where}: {total} points (from {source})")
        if invalid:
            shown = ", ".join(_where(e) for e in invalid[:10]) + (", ..." if len(invalid) > 10 else "")
            print(f"skipped {len(invalid)} invalid record(s) (--skip-invalid): {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
