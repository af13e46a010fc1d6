"""RAG framework integrations: ``medeir_rag.integrations.llama_index`` and ``medeir_rag.integrations.haystack``.

Nothing is imported here: each submodule imports its framework when it is imported itself,
and says which extra to install when the framework is missing.
"""
