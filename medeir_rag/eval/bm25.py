"""BM25 rankings with ``bm25s``, over words or over the medical tokenizer's pieces.

Design choices:
- **bm25s, Lucene variant** (``k1=1.5, b=0.75``, Lucene IDF): the scoring Elasticsearch
  and Pyserini use, which the published BEIR BM25 numbers come from.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/bm25.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from medeir_rag.eval.metrics import Run

Tokenize = Callable[[Sequence[str]], list[list[str]]]


@dataclass
class SparseTokenizer:
    """A tokenize function plus the words that describe it in the results."""

    name: str
    description: str
    tokenize: Tokenize


def _english_stopwords() -> list[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return list(STOPWORDS_EN)


def snowball_stemmer() -> object | None:
    """PyStemmer's English Snowball stemmer, or ``None`` when PyStemmer is not installed."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


def word_tokenizer(stem: bool | None = None) -> SparseTokenizer:
    """bm25s' word tokenisation; ``stem=None`` stems when PyStemmer is installed."""
    import bm25s

    stemmer = snowball_stemmer() if stem is not False else None
    if stem and stemmer is None:
        raise ImportError("stemming needs PyStemmer: pip install PyStemmer")
    stopwords = _english_stopwords()

    def tokenize(texts: Sequence[str]) -> list[list[str]]:
        return bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=stemmer, return_ids=False,
                              show_progress=False)

    detail = "Snowball English stemmer" if stemmer is not None else "no stemming"
    return SparseTokenizer("words", f"bm25s words, Lucene English stopwords, {detail}", tokenize)


def medeir_tokenizer(tokenizer: object | None = None) -> SparseTokenizer:
    """Pieces of the medical WordPiece tokenizer (the shipped one by default)."""
    if tokenizer is None:
        from medeir_rag.model.tokenization import load_tokenizer

        tokenizer = load_tokenizer()
    special = set(tokenizer.all_special_tokens)
    stopwords = set(_english_stopwords())

    def keep(piece: str) -> bool:
        return piece not in special and piece not in stopwords and any(c.isalnum() for c in piece)

    def tokenize(texts: Sequence[str]) -> list[list[str]]:
        ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [[p for p in tokenizer.convert_ids_to_tokens(row) if keep(p)] for row in ids]

    return SparseTokenizer("medeir", "bm25s over medeir WordPiece pieces, Lucene English stopwords", tokenize)


def bm25_run(
    doc_ids: Sequence[str],
    doc_texts: Sequence[str],
    query_ids: Sequence[str],
    query_texts: Sequence[str],
    tokenizer: SparseTokenizer,
    *,
    k: int = 1000,
    k1: float = 1.5,
    b: float = 0.75,
    show_progress: bool = True,
) -> Run:
    """Rank the documents for every query with BM25: ``{query_id: {doc_id: score}}``."""
    import bm25s

    if not doc_ids:
        return {q: {} for q in query_ids}
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index(tokenizer.tokenize(doc_texts), show_progress=False)
    query_tokens = tokenizer.tokenize(query_texts)
    run: Run = {}
    batch = 256
    depth = min(k, len(doc_ids))
    for start in tqdm(range(0, len(query_ids), batch), desc=f"BM25 ({tokenizer.name})", disable=not show_progress):
        indices, scores = retriever.retrieve(query_tokens[start : start + batch], k=depth, show_progress=False)
        for row, query_id in enumerate(query_ids[start : start + batch]):
            run[query_id] = {doc_ids[i]: float(s) for i, s in zip(indices[row], scores[row], strict=True) if s > 0}
    return run
