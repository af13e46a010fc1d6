"""Documents in, ranked chunks out: reading, chunking, sparse weights, fusion, the Qdrant store.

Imports ``model`` and ``inference``; never ``eval``.
"""
