"""Fusing a dense and a sparse ranking: convex combination (the hybrid mode) and RRF.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/fusion.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.model.files import ModelFileError

RRF_K = 60
HYBRID_CANDIDATES = 100  # per side, before fusion: the depth the store, evaluate and tune-hybrid normalise over
DEFAULT_ALPHA = 0.5
HYBRID_FILE = "hybrid.json"
NORMALIZATIONS = ("min-max", "max")  # how each side's scores are put on one scale (see normalize)
DEFAULT_NORMALIZATION = "min-max"  # a hybrid.json without the field was tuned with it

Ranking = Mapping[str, float]


@dataclass(frozen=True)
class HybridWeights:
    """How the hybrid mode of one model fuses its dense and sparse rankings."""

    alpha: float = DEFAULT_ALPHA
    normalization: str = DEFAULT_NORMALIZATION
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise InvalidArgumentError(f"hybrid alpha (the dense side's weight) must be in [0, 1], got {self.alpha}")
        if self.normalization not in NORMALIZATIONS:
            raise InvalidArgumentError(f"hybrid normalization must be one of {', '.join(NORMALIZATIONS)}, "
                                       f"got {self.normalization!r}")

    @property
    def label(self) -> str:
        scale = "" if self.normalization == DEFAULT_NORMALIZATION else f", {self.normalization}-scaled"
        return f"convex, dense weight {self.alpha:g}{scale}"

    def with_alpha(self, alpha: float | None) -> HybridWeights:
        """These weights with another dense weight (``None``: unchanged); the scale stays the model's."""
        return self if alpha is None else replace(self, alpha=alpha)


def load_hybrid_weights(model_dir: str | os.PathLike[str] | None) -> HybridWeights:
    """The weights saved in ``model_dir/hybrid.json``; the default when the file is absent."""
    if model_dir is None or not (Path(model_dir) / HYBRID_FILE).is_file():
        return HybridWeights()
    path = Path(model_dir) / HYBRID_FILE
    try:
        data = json.loads(path.read_text())
        return HybridWeights(alpha=float(data["alpha"]),
                             normalization=str(data.get("normalization", DEFAULT_NORMALIZATION)),
                             provenance=dict(data.get("provenance") or {}))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFileError(f"{path} is not a valid hybrid weights file: {error}") from error


def save_hybrid_weights(model_dir: str | os.PathLike[str], weights: HybridWeights) -> Path:
    """Write ``hybrid.json`` into a model folder (read back by ``load_hybrid_weights``)."""
    path = Path(model_dir) / HYBRID_FILE
    path.write_text(json.dumps({"alpha": weights.alpha, "normalization": weights.normalization,
                                "provenance": weights.provenance}, indent=1) + "\n")
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


def max_scaled(ranking: Ranking) -> dict[str, float]:
    """Scores divided by the list's best: min-max with the theoretical minimum, 0, in place of the
    list's own (Bruch et al.'s TMM; BM25 is never below 0, and a cosine below 0 is no match).

    Why: min-max stretches every list to [0, 1], so a query whose BM25 candidates are all
    weak gets as strong a sparse side as one with a near-exact match. Dividing by the best
    keeps how far the candidates fall behind it.
    """
    if not ranking:
        return {}
    high = max(ranking.values())
    if high <= 0:
        return {doc_id: 1.0 for doc_id in ranking}
    return {doc_id: score / high for doc_id, score in ranking.items()}


def normalize(ranking: Ranking, normalization: str = DEFAULT_NORMALIZATION) -> tuple[dict[str, float], float]:
    """One side on its [0, 1] scale, and what a document missing from it scores there.

    A missing document scored below every candidate, so it gets the bottom of the scale:
    0 for min-max, the last candidate's value for max-scaled.
    """
    if normalization == "min-max":
        return min_max(ranking), 0.0
    if normalization == "max":
        scaled = max_scaled(ranking)
        return scaled, min(scaled.values(), default=0.0)
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")


def convex_combination(dense: Ranking, sparse: Ranking, alpha: float = DEFAULT_ALPHA,
                       top_k: int | None = None, normalization: str = DEFAULT_NORMALIZATION) -> dict[str, float]:
    """``alpha * norm(dense) + (1 - alpha) * norm(sparse)``, best first (``norm``: ``normalize``)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dense_norm, dense_floor = normalize(dense, normalization)
    sparse_norm, sparse_floor = normalize(sparse, normalization)
    fused = {d: alpha * dense_norm.get(d, dense_floor) + (1 - alpha) * sparse_norm.get(d, sparse_floor)
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
