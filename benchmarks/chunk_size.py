"""Which chunk size gives a retriever the most of the passage it should find, in long documents?

The measurement behind ``MedeirTokenWindowSplitter``'s default ``chunk_size``, on data the
project may tune on: the shared PubMed abstracts (``pretrain/pubmed_abstracts_bionlp.jsonl.gz``),
never an evaluation corpus (SciFact and MedQuAD QA are reported zero-shot).

- **Long documents.** The first ``--abstracts`` records with a title and a text, shuffled
  with ``--seed``, are joined ``--per-section`` at a time (texts only, no titles, separated
  by a blank line) into sections of about 2,400 tokens, so a chunker has to cut them.
- **Chunks.** Each section is cut by the project's chunker (``medeir_rag.rag.chunking.chunk_text``,
  no overlap) at every ``--sizes`` value (0: the model's whole window) and embedded as a
  document with the model (default: the bundled one, dense only).
- **Queries.** Each abstract's title searches all chunks of all sections; its target is
  the character span of its own abstract.
- **Columns**, per size: chunks; top-1 and top-5 hit rate (a top chunk overlaps the
  target); the share of the target abstract carried by the top chunk (0 on a miss) and how
  often that share is at least 80%; the mean number of tokens in the top 5 chunks (the
  context a query engine hands its LLM at ``similarity_top_k=5``); seconds to encode.

Caveat: these abstracts are in the model's pre-training data, and titles are close
paraphrases of their abstracts, so absolute hit rates are higher than on unseen text; the
comparison between sizes is the point.

Usage (from the project root, beside ../shared; ``$MEDEIR_DATA_DIR`` overrides the folder)::

    nice -n 19 python benchmarks/chunk_size.py --markdown docs/results/chunk-size.md
    python benchmarks/chunk_size.py --abstracts 40 --sizes 256 512    # a quick check
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from medeir_rag.errors import MissingPathError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.model.files import bundled_model_path
from medeir_rag.rag.chunking import Chunk, chunk_text, count_tokens
from medeir_rag.rag.documents import SHARED_PUBMED_FILE, SourceDocument, default_data_dir, read_jsonl

DEFAULT_SIZES = (128, 256, 512, 1024, 0)
COVERED = 0.8  # "the top chunk holds the abstract": at least this share of its characters
TOP_K = 5


def default_data() -> Path:
    """``$MEDEIR_DATA_DIR``/the PubMed file, else ../shared/data from here or beside the repository."""
    return default_data_dir() / SHARED_PUBMED_FILE


@dataclass
class Corpus:
    """Long sections made of abstracts; ``targets[i]`` = (section, start, end) of abstract i."""

    sections: list[str]
    titles: list[str]
    targets: list[tuple[int, int, int]]


def build_corpus(docs: list[SourceDocument], per_section: int, seed: int) -> Corpus:
    """Shuffle the abstracts and join their texts ``per_section`` at a time."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    sections: list[str] = []
    titles: list[str] = []
    targets: list[tuple[int, int, int]] = []
    for start in range(0, len(docs), per_section):
        parts, pos = [], 0
        for doc in docs[start:start + per_section]:
            text = doc.text.strip()
            titles.append(doc.title.strip())
            targets.append((len(sections), pos, pos + len(text)))
            parts.append(text)
            pos += len(text) + 2
        sections.append("\n\n".join(parts))
    return Corpus(sections, titles, targets)


def overlap_share(section: int, chunk: Chunk, target: tuple[int, int, int]) -> float:
    """Share of the target abstract's characters inside ``chunk`` (0 in another section)."""
    target_section, begin, end = target
    if section != target_section:
        return 0.0
    return max(0, min(chunk.end, end) - max(chunk.start, begin)) / (end - begin)


def measure(encoder: MedeirEncoder, corpus: Corpus, query_vectors: np.ndarray, size: int) -> dict[str, float]:
    """Chunk every section at ``size`` tokens, search with every title, score the top chunks."""
    tokenizer = encoder.tokenizer
    chunks = [(i, c) for i, s in enumerate(corpus.sections) for c in chunk_text(s, tokenizer, size, 0)]
    started = time.perf_counter()
    document_vectors = encoder.encode_document([c.text for _, c in chunks], show_progress=False)
    seconds = time.perf_counter() - started
    chunk_tokens = np.array([count_tokens(tokenizer, c.text) for _, c in chunks])
    scores = query_vectors @ document_vectors.T
    hit1 = hit5 = covered = 0
    shares, context = [], []
    for row, target in enumerate(corpus.targets):
        top = np.argsort(-scores[row])[:TOP_K]
        top_shares = [overlap_share(*chunks[k], target) for k in top]
        hit1 += top_shares[0] > 0
        hit5 += any(share > 0 for share in top_shares)
        shares.append(top_shares[0])
        covered += top_shares[0] >= COVERED
        context.append(int(chunk_tokens[top].sum()))
    n = len(corpus.targets)
    return dict(chunks=len(chunks), hit_at_1=hit1 / n, hit_at_5=hit5 / n, share_at_1=float(np.mean(shares)),
                covered_at_1=covered / n, top5_context_tokens=float(np.mean(context)), seconds=seconds)


def markdown_table(results: dict[int, dict[str, float]], window: int) -> str:
    lines = ["| chunk_size | chunks | top-1 hit | top-5 hit | share of the abstract in the top chunk "
             f"| top chunk holds >= {COVERED:.0%} | top-5 context tokens | encode s |",
             "|---|---|---|---|---|---|---|---|"]
    for size, r in results.items():
        label = f"{size:,}" if size != window else f"{size:,} (window)"
        lines.append(f"| {label} | {r['chunks']:,} | {r['hit_at_1']:.3f} | {r['hit_at_5']:.3f} | "
                     f"**{r['share_at_1']:.3f}** | {r['covered_at_1']:.1%} | {r['top5_context_tokens']:,.0f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help=f"PubMed JSONL (default: {SHARED_PUBMED_FILE} under $MEDEIR_DATA_DIR, else ../shared/data)")
    parser.add_argument("--model", default=None, help="medeir sentence-transformers directory (default: bundled)")
    parser.add_argument("--abstracts", type=int, default=300, help="abstracts to join and query (default: 300)")
    parser.add_argument("--per-section", type=int, default=10,
                        help="abstracts per section (default: 10, about 2,400 tokens)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES),
                        help="chunk sizes in tokens; 0 is the whole window (default: 128 256 512 1024 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table and setup here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data = args.data or default_data()
    if not data.is_file():
        raise MissingPathError(f"--data: {data} does not exist (set MEDEIR_DATA_DIR or pass --data)")
    docs = list(itertools.islice((d for d in read_jsonl(data) if d.title.strip() and d.text.strip()), args.abstracts))
    corpus = build_corpus(docs, args.per_section, args.seed)
    model = args.model or bundled_model_path()
    encoder = MedeirEncoder(model, device="cpu")
    window = encoder.max_length - 2 - count_tokens(encoder.tokenizer, encoder.document_prompt)
    section_tokens = np.mean([count_tokens(encoder.tokenizer, s) for s in corpus.sections])
    setup = (f"{len(docs)} PubMed abstracts from {data.name} (texts only) joined {args.per_section} at a time into "
             f"{len(corpus.sections)} sections of {section_tokens:,.0f} tokens on average; each title searches "
             f"all chunks (dense, model {Path(model).name}, chunk overlap 0, seed {args.seed}).")
    print(setup, flush=True)
    query_vectors = encoder.encode_query(corpus.titles, show_progress=False)
    results: dict[int, dict[str, float]] = {}
    for size in args.sizes:
        size = window if size == 0 else min(size, window)
        results[size] = measure(encoder, corpus, query_vectors, size)
        print(size, {k: round(v, 3) for k, v in results[size].items()}, flush=True)
    table = markdown_table(results, window)
    print(table)
    if args.markdown:
        command = "python benchmarks/chunk_size.py " + " ".join(argv if argv is not None else sys.argv[1:])
        args.markdown.write_text(
            f"# Chunk size on long PubMed sections\n\n`{command.strip()}`\n\n{setup}\n\n{table}\n\n"
            "Share: of the target abstract's characters inside the top chunk, 0 when the top chunk "
            "misses it. Top-5 context: tokens in the five best chunks, what a query engine hands "
            "its LLM at `similarity_top_k=5`. The abstracts are in the model's pre-training data "
            "and titles paraphrase their abstracts: compare the rows, not the absolute rates.\n",
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
