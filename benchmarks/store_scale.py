"""The vector store at scale: Qdrant Edge against qdrant-client's local mode, in one run.

For each size N (default 10,000 and 100,000; ``--million`` adds 1,000,000):

- **data**: N points at the bundled model's width (256), dense vectors drawn around 1,000
  random centres (so neighbourhoods exist, as in real embeddings) and unit-normalised; a
  sparse vector per point of realistic length, 80 token draws from a 32k vocabulary with a
  Zipf (Zipf-Mandelbrot, s = 1.07) distribution (about 60 distinct ids), weighted with the
  store's own BM25 term-frequency formula. Queries: a perturbed stored vector, and 4 to 10
  Zipf-drawn tokens of weight 1 (the store's query weights). Generated chunk by chunk from
  a seed, so a million points never sit in memory at once.
- **upsert** throughput in batches of ``--batch`` (what ``medeir index`` writes), through
  the store's backends (``medeir_rag.store_backends``), then **optimize** time (Edge builds
  HNSW here; local mode has nothing to build).
- **p50/p99 latency** of one query at a time, top 10: dense, sparse, and hybrid, the store's
  own fusion (``vector_store.hybrid_search``: the convex combination of the dense and the
  sparse top 100, alpha 0.5, then the payloads of the fused ids).
- **recall@10** of the dense search against exact search: Edge with
  ``SearchParams(exact=True)`` (checked against numpy brute force on the first queries).
- Local mode stops above ``--local-max`` points (default 20,000): it keeps every point in
  Python and SQLite and searches by brute force, so 100k points take many minutes and the
  comparison is already clear. The output says where it stopped.

Prints one Markdown table per size with the ratio Edge vs local mode (> 1: Edge is better).

Usage::

    python benchmarks/store_scale.py                       # 10k and 100k points
    python benchmarks/store_scale.py --sizes 2000           # a quick check
    python benchmarks/store_scale.py --million --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from medeir_rag.store_backends import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    StoredPoint,
    VectorQuery,
    open_backend,
)
from medeir_rag.vector_store import BM25_AVG_TOKENS, BM25_B, BM25_K1, hybrid_search

DIMENSION = 256
VOCABULARY = 32_000
TOKEN_DRAWS = 80
ZIPF_S = 1.07
ZIPF_Q = 2.7
CENTRES = 1_000
CHUNK = 10_000  # points generated per seeded chunk
TOP_K = 10
CANDIDATES = 100
ALPHA = 0.5
ENGINES = {"edge": "Qdrant Edge", "qdrant-client": "qdrant-client local mode"}
COLLECTION = "bench"


# ----------------------------------------------------------------------------
# Synthetic data


class Synthetic:
    """Dense and sparse vectors, regenerated identically from ``seed`` chunk by chunk."""

    def __init__(self, seed: int = 0, dimension: int = DIMENSION) -> None:
        self.seed = seed
        self.dimension = dimension
        self.centres = np.random.default_rng(seed).standard_normal((CENTRES, dimension)).astype(np.float32)
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        weights = 1.0 / (ranks + ZIPF_Q) ** ZIPF_S
        self.cumulative = np.cumsum(weights / weights.sum())

    def _tokens(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cumulative, rng.random(shape)), VOCABULARY - 1)

    def dense(self, start: int, stop: int) -> np.ndarray:
        """Unit vectors of points ``start..stop`` (any range: chunks are regenerated as needed)."""
        parts = []
        for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            vectors = self._chunk_dense(chunk)
            lo, hi = max(start, chunk * CHUNK) - chunk * CHUNK, min(stop, (chunk + 1) * CHUNK) - chunk * CHUNK
            parts.append(vectors[lo:hi])
        return np.concatenate(parts)

    def _chunk_dense(self, chunk: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 1, chunk])
        centre = self.centres[rng.integers(0, CENTRES, CHUNK)]
        vectors = centre + 0.6 * rng.standard_normal((CHUNK, self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def sparse(self, start: int, stop: int) -> list[tuple[list[int], list[float]]]:
        rows = []
        for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            rng = np.random.default_rng([self.seed, 2, chunk])
            draws = self._tokens(rng, (CHUNK, TOKEN_DRAWS))
            lo, hi = max(start, chunk * CHUNK) - chunk * CHUNK, min(stop, (chunk + 1) * CHUNK) - chunk * CHUNK
            for row in draws[lo:hi]:
                ids, counts = np.unique(row, return_counts=True)
                norm = BM25_K1 * (1 - BM25_B + BM25_B * TOKEN_DRAWS / BM25_AVG_TOKENS)
                rows.append((ids.tolist(), (counts * (BM25_K1 + 1) / (counts + norm)).tolist()))
        return rows

    def queries(self, n: int, size: int) -> tuple[np.ndarray, list[tuple[list[int], list[float]]]]:
        rng = np.random.default_rng([self.seed, 3, size])
        picks = rng.integers(0, size, n)
        dense = np.stack([self.dense(int(i), int(i) + 1)[0] for i in picks])
        dense = dense + 0.02 * rng.standard_normal(dense.shape).astype(np.float32)  # noise of norm ~0.3
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        sparse = []
        for _ in range(n):
            ids = sorted(set(self._tokens(rng, (int(rng.integers(4, 11)),)).tolist()))
            sparse.append((ids, [1.0] * len(ids)))
        return dense, sparse

    def exact_top(self, queries: np.ndarray, size: int, k: int = TOP_K) -> list[list[int]]:
        """numpy brute force: the ``k`` nearest stored points (by cosine) of each query."""
        best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_ids = np.zeros((len(queries), k), dtype=np.int64)
        for start in range(0, size, CHUNK):
            block = self.dense(start, min(size, start + CHUNK))
            scores = queries @ block.T
            ids = np.broadcast_to(np.arange(start, start + len(block)), scores.shape)
            scores = np.concatenate([best_scores, scores], axis=1)
            ids = np.concatenate([best_ids, ids], axis=1)
            top = np.argsort(-scores, axis=1)[:, :k]
            best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        return best_ids.tolist()


def point_key(i: int) -> str:
    """A point id (Qdrant wants an unsigned integer or a UUID): the uuid of integer ``i``."""
    return f"00000000-0000-0000-0000-{i:012d}"


def index_of(key: str) -> int:
    return int(key.rsplit("-", 1)[1])


# ----------------------------------------------------------------------------
# Measuring one engine at one size


@dataclass
class Result:
    engine: str
    size: int
    upsert_seconds: float = 0.0
    optimize_seconds: float = 0.0
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # mode -> (p50, p99)
    recall_at_10: float | None = None
    exact_vs_numpy: float | None = None
    disk_mb: float | None = None
    note: str = ""

    @property
    def points_per_second(self) -> float:
        return self.size / self.upsert_seconds if self.upsert_seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def folder_mb(path: Path) -> float:
    """Space allocated on disk (Edge preallocates 32 MB WAL files sparsely: their length is not their size)."""
    return sum(getattr(p.stat(), "st_blocks", 0) * 512 or p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_engine(engine: str, size: int, data: Synthetic, queries, exact: list[list[int]] | None, args,
               workdir: Path) -> tuple[Result, list[list[int]] | None]:
    """Upsert, optimize, query; returns the result and (Edge) the exact top-10 ids of each query."""
    result = Result(engine, size)
    folder = workdir / f"{engine}-{size}"
    backend = open_backend(folder, engine=engine, collection=COLLECTION)
    edge_exact = None
    try:
        backend.create(COLLECTION, data.dimension, {"benchmark": "store_scale", "size": size})
        began = time.perf_counter()
        for start in range(0, size, args.batch):
            stop = min(size, start + args.batch)
            dense, sparse = data.dense(start, stop), data.sparse(start, stop)
            backend.upsert(COLLECTION, [
                StoredPoint(id=point_key(i), dense=dense[i - start], sparse=sparse[i - start],
                            payload={"doc_id": f"d{i}", "chunk_index": 0})
                for i in range(start, stop)
            ])
            if args.verbose and (stop // args.batch) % 40 == 0:
                print(f"  {ENGINES[engine]}: {stop:,}/{size:,} points, {time.perf_counter() - began:.0f} s",
                      file=sys.stderr)
        result.upsert_seconds = time.perf_counter() - began
        began = time.perf_counter()
        backend.optimize(COLLECTION)
        backend.flush(COLLECTION)
        result.optimize_seconds = time.perf_counter() - began

        dense_queries, sparse_queries = queries
        warm = min(5, len(dense_queries))
        timings: dict[str, list[float]] = {"dense": [], "sparse": [], "hybrid": []}
        found: list[list[int]] = []
        for number, (dense, sparse) in enumerate(zip(dense_queries, sparse_queries, strict=True)):
            vector = dense.tolist()
            t0 = time.perf_counter()
            (hits,) = backend.query(COLLECTION, [VectorQuery(DENSE_VECTOR, vector, TOP_K)])
            t1 = time.perf_counter()
            backend.query(COLLECTION, [VectorQuery(SPARSE_VECTOR, sparse, TOP_K)])
            t2 = time.perf_counter()
            hybrid_search(backend, COLLECTION, vector, sparse, TOP_K, alpha=ALPHA, candidates=CANDIDATES)
            t3 = time.perf_counter()
            if number >= warm:
                timings["dense"].append(t1 - t0)
                timings["sparse"].append(t2 - t1)
                timings["hybrid"].append(t3 - t2)
            found.append([index_of(h.id) for h in hits])
        result.latency_ms = {mode: (1000 * statistics.median(v), 1000 * percentile(v, 0.99))
                             for mode, v in timings.items() if v}
        if engine == "edge":
            edge_exact = []
            for dense in dense_queries:
                (hits,) = backend.query(COLLECTION, [VectorQuery(DENSE_VECTOR, dense.tolist(), TOP_K, exact=True)])
                edge_exact.append([index_of(h.id) for h in hits])
            checked = min(len(edge_exact), args.numpy_check)
            numpy_top = data.exact_top(dense_queries[:checked], size)
            result.exact_vs_numpy = recall(edge_exact[:checked], numpy_top)
            exact = edge_exact
        if exact is not None:
            result.recall_at_10 = recall(found, exact)
    finally:
        backend.close()
    result.disk_mb = folder_mb(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return result, edge_exact


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return statistics.mean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t)


# ----------------------------------------------------------------------------
# Report


def ratio(edge: float | None, local: float | None, higher_is_better: bool) -> str:
    if not edge or not local:
        return "–"
    return f"{(edge / local) if higher_is_better else (local / edge):.1f}×"


def table(size: int, results: dict[str, Result]) -> str:
    edge, local = results.get("edge"), results.get("qdrant-client")

    def cell(result: Result | None, value) -> str:
        return "–" if result is None or value is None else value

    rows = [("upsert (points/s)", lambda r: r.points_per_second, "{:,.0f}", True),
            ("upsert time (s)", lambda r: r.upsert_seconds, "{:.1f}", False),
            ("optimize (s)", lambda r: r.optimize_seconds, "{:.1f}", None)]
    for mode in ("dense", "sparse", "hybrid"):
        rows.append((f"{mode} query p50 (ms)", lambda r, m=mode: r.latency_ms.get(m, (None, None))[0], "{:.2f}", False))
        rows.append((f"{mode} query p99 (ms)", lambda r, m=mode: r.latency_ms.get(m, (None, None))[1], "{:.2f}", False))
    rows.append(("dense recall@10 vs exact", lambda r: r.recall_at_10, "{:.3f}", None))
    rows.append(("size on disk (MB)", lambda r: r.disk_mb, "{:.1f}", None))
    lines = [f"### {size:,} points", "", "| | Qdrant Edge | qdrant-client local mode | Edge vs local |", "|---|---:|---:|---:|"]
    for name, get, form, better in rows:
        e = get(edge) if edge else None
        lo = get(local) if local else None
        ratio_text = "–" if better is None else ratio(e, lo, better)
        lines.append(f"| {name} | {cell(edge, None if e is None else form.format(e))} | "
                     f"{cell(local, None if lo is None else form.format(lo))} | {ratio_text} |")
    notes = [r.note for r in results.values() if r.note]
    if edge and edge.exact_vs_numpy is not None:
        notes.append(f"Edge exact search agrees with numpy brute force on {edge.exact_vs_numpy:.3f} of the top-10 ids.")
    return "\n".join([*lines, "", *notes])


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="points per run (default: 10000 100000)")
    parser.add_argument("--million", action="store_true", help="add a 1,000,000-point run")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--local-max", type=int, default=20_000,
                        help="largest size run in qdrant-client local mode (default: 20000)")
    parser.add_argument("--queries", type=int, default=200, help="queries per size (default: 200; 5 more warm up)")
    parser.add_argument("--batch", type=int, default=256, help="points per upsert (default: 256)")
    parser.add_argument("--numpy-check", type=int, default=50, help="queries whose exact top 10 numpy re-checks")
    parser.add_argument("--dimension", type=int, default=DIMENSION, help=f"dense width (default: {DIMENSION})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the stores are written (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--verbose", action="store_true", help="upsert progress on stderr")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes + ([1_000_000] if args.million else [])))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medeir-store-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = Synthetic(args.seed, args.dimension)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"# Vector store at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n")
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, load average {load[0]:.2f} at start" if load else platform.platform())
    print(f"qdrant-edge-py {package_version('qdrant-edge-py')}, qdrant-client {package_version('qdrant-client')}, "
          f"{args.dimension}-d dense + sparse (~60 of {VOCABULARY:,} ids, Zipf), batches of {args.batch}, "
          f"{args.queries} queries, top {TOP_K}; hybrid = the store's fusion over {CANDIDATES} per side, alpha {ALPHA}\n")
    everything = []
    try:
        for size in sizes:
            queries = data.queries(args.queries + 5, size)
            results: dict[str, Result] = {}
            notes: list[str] = []
            exact = None
            for engine in sorted(args.engines, key=lambda e: e != "edge"):  # Edge first: its exact search is the truth
                if engine == "qdrant-client" and size > args.local_max:
                    notes.append(
                        f"qdrant-client local mode stopped here: {size:,} points is above --local-max "
                        f"{args.local_max:,} (it keeps every point in Python and SQLite and searches by brute force)."
                    )
                    print(f"({notes[-1]})", file=sys.stderr)
                    continue
                if engine != "edge" and exact is None:
                    exact = data.exact_top(queries[0], size)  # no Edge run: numpy is the truth
                print(f"{ENGINES[engine]}: {size:,} points ...", file=sys.stderr)
                result, edge_exact = run_engine(engine, size, data, queries, exact, args, workdir)
                exact = edge_exact if edge_exact is not None else exact
                results[engine] = result
            print("\n".join([table(size, results), *notes]) + "\n", flush=True)
            everything.extend(results.values())
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps([
            {**r.__dict__, "points_per_second": r.points_per_second} for r in everything
        ], indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
