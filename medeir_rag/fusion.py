"""Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009).

Design choices:
- **Ranks, not scores.** A document's fused score is ``sum over rankings of 1 / (k + rank)``
  (rank 1 = best). BM25 scores and cosine similarities live on different scales; RRF
  needs no normalisation and no tuning beyond ``k`` (60, the paper's value and Qdrant's).
- A document missing from a ranking contributes nothing from it.
- Ties inside one ranking are ordered by document id (descending, as pytrec_eval does),
  so the fusion is deterministic.
- Plain dicts in and out (``{doc_id: score}``): usable for one query's hits in the RAG
  code and, through ``fuse_runs``, for whole evaluation runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

RRF_K = 60


def reciprocal_rank_fusion(
    rankings: Sequence[Mapping[str, float]], k: int = RRF_K, top_k: int | None = None
) -> dict[str, float]:
    """Fuse several ``{doc_id: score}`` rankings (higher score = better) into one.

    Returns ``{doc_id: rrf_score}`` sorted best first, cut to ``top_k`` when given.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        ordered = sorted(ranking.items(), key=lambda item: (item[1], item[0]), reverse=True)
        for rank, (doc_id, _) in enumerate(ordered, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    best = sorted(fused.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(best[:top_k] if top_k is not None else best)


def fuse_runs(
    runs: Sequence[Mapping[str, Mapping[str, float]]], k: int = RRF_K, top_k: int | None = None
) -> dict[str, dict[str, float]]:
    """RRF per query over whole runs ``{query_id: {doc_id: score}}``."""
    query_ids = list(dict.fromkeys(q for run in runs for q in run))
    return {q: reciprocal_rank_fusion([run.get(q, {}) for run in runs], k=k, top_k=top_k) for q in query_ids}
