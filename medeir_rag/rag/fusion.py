"""Fusing a dense and a sparse ranking: convex combination (the hybrid mode) and RRF.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/fusion.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.model.files import ModelFileError

RRF_K = 60
HYBRID_CANDIDATES = 100  # per side, before fusion: the depth the store, evaluate and tune-hybrid normalise over
DEFAULT_ALPHA = 0.5
HYBRID_FILE = "hybrid.json"

Ranking = Mapping[str, float]


@dataclass(frozen=True)
class HybridWeights:
    """How the hybrid mode of one model fuses its dense and sparse rankings."""

    alpha: float = DEFAULT_ALPHA
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgumentError(f"hybrid alpha (the dense side's weight) must be in [0, 1], got {self.alpha}")

    @property
    def label(self) -> str:
        return f"convex, dense weight {self.alpha:g}"


def load_hybrid_weights(model_dir: str | os.PathLike[str] | None) -> HybridWeights:
    """The weights saved in ``model_dir/hybrid.json``; the default when the file is absent."""
    if model_dir is None or not (Path(model_dir) / HYBRID_FILE).is_file():
        return HybridWeights()
    path = Path(model_dir) / HYBRID_FILE
    try:
        data = json.loads(path.read_text())
        return HybridWeights(alpha=float(data["alpha"]), provenance=dict(data.get("provenance") or {}))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFileError(f"{path} is not a valid hybrid weights file: {error}") from error


def save_hybrid_weights(model_dir: str | os.PathLike[str], weights: HybridWeights) -> Path:
    """Write ``hybrid.json`` into a model folder (read back by ``load_hybrid_weights``)."""
    path = Path(model_dir) / HYBRID_FILE
    path.write_text(json.dumps({"alpha": weights.alpha, "provenance": weights.provenance}, indent=1) + "\n")
    return path


def _best_first(scores: Mapping[str, float], top_k: int | None) -> dict[str, float]:
    best = sorted(scores.items(), key=lambda item: (item[1], item[0]), reverse=True)
    return dict(best[:top_k] if top_k is not None else best)


def min_max(ranking: Ranking) -> dict[str, float]:
    """Scores mapped to [0, 1] over this list (all equal -> all 1)."""
    if not ranking:
        return {}
    low, high = min(ranking.values()), max(ranking.values())
    if high <= low:
        return {doc_id: 1.0 for doc_id in ranking}
    return {doc_id: (score - low) / (high - low) for doc_id, score in ranking.items()}


def convex_combination(dense: Ranking, sparse: Ranking, alpha: float = DEFAULT_ALPHA,
                       top_k: int | None = None) -> dict[str, float]:
    """``alpha * min_max(dense) + (1 - alpha) * min_max(sparse)``, best first."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dense_norm, sparse_norm = min_max(dense), min_max(sparse)
    fused = {d: alpha * dense_norm.get(d, 0.0) + (1 - alpha) * sparse_norm.get(d, 0.0)
             for d in dict.fromkeys([*dense_norm, *sparse_norm])}
    return _best_first(fused, top_k)


def reciprocal_rank_fusion(rankings: Sequence[Ranking], k: int = RRF_K, top_k: int | None = None) -> dict[str, float]:
    """Sum over rankings of ``1 / (k + rank)`` (rank 1 = best), best first."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(_best_first(ranking, None), start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return _best_first(fused, top_k)


def fuse_runs(
    runs: Sequence[Mapping[str, Ranking]], fuse: Callable[[Sequence[Ranking]], dict[str, float]],
) -> dict[str, dict[str, float]]:
    """Apply ``fuse`` (a list of one query's rankings -> fused ranking) to every query of whole runs."""
    query_ids = list(dict.fromkeys(q for run in runs for q in run))
    return {q: fuse([run.get(q, {}) for run in runs]) for q in query_ids}


def hybrid_runs(dense: Mapping[str, Ranking], sparse: Mapping[str, Ranking], alpha: float,
                top_k: int | None = None) -> dict[str, dict[str, float]]:
    """``convex_combination`` for every query of a dense and a sparse run."""
    return fuse_runs([dense, sparse], lambda pair: convex_combination(pair[0], pair[1], alpha, top_k))


def rrf_runs(runs: Sequence[Mapping[str, Ranking]], k: int = RRF_K,
             top_k: int | None = None) -> dict[str, dict[str, float]]:
    """``reciprocal_rank_fusion`` for every query of whole runs."""
    return fuse_runs(runs, lambda rankings: reciprocal_rank_fusion(rankings, k, top_k))
