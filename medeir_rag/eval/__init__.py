"""Benchmarks and analyses: BEIR loading, metrics, baselines, mteb tasks, the embedding cache.

May import ``model``, ``inference`` and ``rag``.
"""
