"""Haystack components for medeir models, drop-in replacements for the Sentence-Transformers ones.

| ours | replaces |
|---|---|
| ``MedeirTextEmbedder``, ``MedeirDocumentEmbedder`` | ``SentenceTransformersTextEmbedder``, ``...DocumentEmbedder`` |
| ``MedeirSparseTextEmbedder``, ``MedeirSparseDocumentEmbedder`` | ``SentenceTransformersSparseTextEmbedder``, ``...SparseDocumentEmbedder`` |
| ``MedeirSimilarityRanker`` | ``SentenceTransformersSimilarityRanker`` |
| ``MedeirDocumentSplitter`` | core ``DocumentSplitter(split_by="token")`` |

Same init parameters (each accepted with the built-in's meaning, or refused by name with the
reason: see ``_loading``), same sockets, same output metadata. One module per component; the
serialised ``type`` of each is ``medeir_rag.integrations.haystack.<Class>`` (the import path
users write, kept stable whatever module the class lives in), so ``Pipeline.loads(yaml,
allowed_modules=["medeir_rag"])`` loads them.

Usage example:

```python
from haystack import Document, Pipeline
from haystack.components.writers import DocumentWriter
from haystack_integrations.document_stores.qdrant import QdrantDocumentStore
from medeir_rag.integrations.haystack import MedeirDocumentEmbedder, MedeirDocumentSplitter

store = QdrantDocumentStore(location=":memory:", embedding_dim=768, similarity="cosine")
indexing = Pipeline()
indexing.add_component("splitter", MedeirDocumentSplitter(model="path/to/medeir-st", split_length=2048))
indexing.add_component("embedder", MedeirDocumentEmbedder(model="path/to/medeir-st"))
indexing.add_component("writer", DocumentWriter(document_store=store))
indexing.connect("splitter", "embedder")
indexing.connect("embedder", "writer")
indexing.run({"splitter": {"documents": [Document(content="Metformin lowers glucose.")]}})
```

Importing this package turns Haystack's telemetry off unless the user opted in (``_telemetry``).
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
