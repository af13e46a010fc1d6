"""One metric function for every row of the results table: a run dict in, scores out.

Design choices:
- **mteb's own scorer.** ``score_run`` calls the function ``AbsTaskRetrieval`` itself
  scores with (``mteb._evaluators.retrieval_metrics.calculate_retrieval_scores``:
  pytrec_eval for nDCG/MAP/recall/precision, mteb's own MRR with pytrec_eval's tie-break)
  and names the results with mteb's ``make_score_dict``. A dense row computed inside
  ``mteb.evaluate`` and a BM25, rerank or hybrid row computed here therefore get the same
  numbers for the same ranking (``evaluate`` checks this on every dense row). The module
  is private in mteb; this is the one place that imports it.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/metrics.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]

# mteb's AbsTaskRetrieval defaults; the table reports the six below.
K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 20, 100, 1000)
REPORTED_METRICS: tuple[str, ...] = (
    "ndcg_at_10", "map_at_10", "recall_at_10", "recall_at_100", "precision_at_10", "mrr_at_10",
)
METRIC_LABELS: dict[str, str] = {
    "ndcg_at_10": "nDCG@10", "map_at_10": "MAP@10", "recall_at_10": "R@10",
    "recall_at_100": "R@100", "precision_at_10": "P@10", "mrr_at_10": "MRR@10",
}


def top_k(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """The ``k`` best documents of each query (score descending, then doc id descending)."""
    return {
        query_id: dict(sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)[:k])
        for query_id, docs in run.items()
    }


def _prepare(run: Mapping[str, Mapping[str, float]], qrels: Qrels) -> tuple[Run, dict[str, dict[str, int]]]:
    """Plain str/float/int dicts over exactly the judged queries."""
    clean_qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items() if docs}
    clean_run = {q: {str(d): float(s) for d, s in run.get(q, {}).items()} for q in clean_qrels}
    return clean_run, clean_qrels


def score_run(
    run: Mapping[str, Mapping[str, float]], qrels: Qrels, k_values: Sequence[int] = K_VALUES
) -> dict[str, float]:
    """All of mteb's retrieval scores for a run: ``ndcg_at_10``, ``map_at_10``, ``recall_at_100``,
    ``precision_at_10``, ``mrr_at_10``, ``hit_rate_at_k`` ... at every k (fractions in [0, 1]).

    ``run`` is ``{query_id: {doc_id: score}}`` (higher is better); ``qrels`` is
    ``{query_id: {doc_id: grade}}``; queries with no qrels are ignored."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores, make_score_dict

    clean_run, clean_qrels = _prepare(run, qrels)
    if not clean_qrels:
        raise ValueError("no judged queries in qrels")
    result = calculate_retrieval_scores(clean_run, clean_qrels, list(k_values))
    scores = make_score_dict(
        ndcg=result.ndcg, _map=result.map, recall=result.recall, precision=result.precision,
        mrr=result.mrr, naucs=result.naucs, naucs_mrr=result.naucs_mrr, hit_rate=result.hit_rate,
        task_scores={},
    )
    # nAUC (abstention) scores are left out: they are not part of the table.
    return {key: float(value) for key, value in scores.items() if not key.startswith("nauc_")}


def reported(scores: Mapping[str, float]) -> dict[str, float]:
    """The six metrics of the results table."""
    return {name: float(scores[name]) for name in REPORTED_METRICS}
