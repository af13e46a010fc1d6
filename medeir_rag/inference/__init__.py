"""Running a saved model: the batching encode path, the encoder, the reranker, precisions,
ONNX export and runtime.

Imports only ``medeir_rag.model`` (and ``medeir_rag.errors``).
"""
