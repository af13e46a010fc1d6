"""Haystack components for medeir models, drop-in replacements for the Sentence-Transformers ones.

| ours | replaces |
|---|---|
| ``MedeirTextEmbedder``, ``MedeirDocumentEmbedder`` | ``SentenceTransformersTextEmbedder``, ``...DocumentEmbedder`` |
| ``MedeirSparseTextEmbedder``, ``MedeirSparseDocumentEmbedder`` | ``SentenceTransformersSparseTextEmbedder``, ``...SparseDocumentEmbedder`` |
| ``MedeirSimilarityRanker`` | ``SentenceTransformersSimilarityRanker`` |
| ``MedeirDocumentSplitter`` | core ``DocumentSplitter(split_by="token")`` |

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/integrations/haystack/__init__.py``.
"""

from medeir_rag.integrations.haystack import _telemetry  # noqa: F401  (first: before haystack is imported)
from medeir_rag.integrations.haystack.document_embedder import MedeirDocumentEmbedder
from medeir_rag.integrations.haystack.ranker import MedeirSimilarityRanker
from medeir_rag.integrations.haystack.sparse_embedders import (
    QDRANT_SPARSE_OPTIONS,
    MedeirSparseDocumentEmbedder,
    MedeirSparseTextEmbedder,
)
from medeir_rag.integrations.haystack.splitter import MedeirDocumentSplitter
from medeir_rag.integrations.haystack.text_embedder import MedeirTextEmbedder

__all__ = [
    "QDRANT_SPARSE_OPTIONS",
    "MedeirDocumentEmbedder",
    "MedeirDocumentSplitter",
    "MedeirSimilarityRanker",
    "MedeirSparseDocumentEmbedder",
    "MedeirSparseTextEmbedder",
    "MedeirTextEmbedder",
]
