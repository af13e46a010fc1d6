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
  the store's backends (``medeir_rag.rag.store_backends``); only the time inside the upsert
  calls counts, not the data generation. Then **optimize** time (Edge builds HNSW here;
  local mode has nothing to build).
- **p50/p99 latency** of one query at a time, top 10: dense, sparse, and hybrid, the store's
  own fusion (``store.hybrid_search``: the convex combination of the dense and the
  sparse top 100, alpha 0.5, then the payloads of the fused ids).
- **recall@10** of the dense search against exact search by numpy (one matmul per chunk of
  stored vectors, the best 10 kept by ``argpartition``), the same truth for both engines.
- Local mode stops above ``--local-max`` points (default 20,000, the size Qdrant names as
  its limit): it keeps every point in Python and SQLite and searches by brute force. The
  table says where it stopped.

Prints one Markdown table per size with the ratio Edge vs local mode (> 1: Edge is better),
both measured in the same run; ``--json`` and ``--markdown`` are rewritten after every size,
and ``--append`` adds sizes to an earlier run's files.

Usage::

    python benchmarks/store_scale.py                       # 10k and 100k points
    python benchmarks/store_scale.py --sizes 2000           # a quick check
    python benchmarks/store_scale.py --sizes 1000000 --engines edge --append \\
        --json docs/results/store-scale.json --markdown docs/results/store-scale.md
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from medeir_rag.rag.store import BM25_AVG_TOKENS, BM25_B, BM25_K1, hybrid_search
from medeir_rag.rag.store_backends import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    StoredPoint,
    VectorQuery,
    open_backend,
)

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
WARM_UP = 5  # queries run first and not timed


# ----------------------------------------------------------------------------
# Synthetic data


class Synthetic:
    """Dense and sparse vectors, regenerated identically from ``seed`` chunk by chunk.

    Every chunk of ``CHUNK`` points has its own generator (seeded by ``seed`` and the chunk
    number), so a chunk comes out the same whoever asks and in whatever order: the upserts,
    the queries and the exact search all see the same points without keeping them.
    """

    def __init__(self, seed: int = 0, dimension: int = DIMENSION) -> None:
        self.seed = seed
        self.dimension = dimension
        self.centres = np.random.default_rng(seed).standard_normal((CENTRES, dimension), dtype=np.float32)
        ranks = np.arange(1, VOCABULARY + 1, dtype=np.float64)
        weights = 1.0 / (ranks + ZIPF_Q) ** ZIPF_S
        self.cumulative = np.cumsum(weights / weights.sum())

    def _tokens(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cumulative, rng.random(shape)), VOCABULARY - 1)

    def chunk_dense(self, chunk: int) -> np.ndarray:
        """Unit vectors of chunk ``chunk`` (``CHUNK`` x ``dimension``, float32)."""
        rng = np.random.default_rng([self.seed, 1, chunk])
        vectors = self.centres[rng.integers(0, CENTRES, CHUNK)]
        vectors += 0.6 * rng.standard_normal((CHUNK, self.dimension), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def chunk_sparse(self, chunk: int) -> list[tuple[list[int], list[float]]]:
        """Sparse vectors of chunk ``chunk``: the distinct token ids and their BM25 term-frequency weights."""
        rng = np.random.default_rng([self.seed, 2, chunk])
        norm = BM25_K1 * (1 - BM25_B + BM25_B * TOKEN_DRAWS / BM25_AVG_TOKENS)
        rows = []
        for row in self._tokens(rng, (CHUNK, TOKEN_DRAWS)):
            ids, counts = np.unique(row, return_counts=True)
            rows.append((ids.tolist(), (counts * (BM25_K1 + 1) / (counts + norm)).tolist()))
        return rows

    def batches(self, size: int, batch: int) -> Iterator[tuple[int, np.ndarray, list[tuple[list[int], list[float]]]]]:
        """``(start, dense, sparse)`` for points ``0..size`` in batches, each chunk generated once."""
        for chunk in range(0, -(-size // CHUNK)):
            dense, sparse = self.chunk_dense(chunk), self.chunk_sparse(chunk)
            base, stop = chunk * CHUNK, min(size, (chunk + 1) * CHUNK)
            for start in range(base, stop, batch):
                end = min(stop, start + batch)
                yield start, dense[start - base:end - base], sparse[start - base:end - base]

    def queries(self, n: int, size: int) -> tuple[np.ndarray, list[tuple[list[int], list[float]]]]:
        """``n`` queries: perturbed stored vectors (each chunk generated once) and 4-10 Zipf tokens of weight 1."""
        rng = np.random.default_rng([self.seed, 3, size])
        picks = rng.integers(0, size, n)
        dense = np.empty((n, self.dimension), dtype=np.float32)
        for chunk in np.unique(picks // CHUNK):
            rows = np.flatnonzero(picks // CHUNK == chunk)
            dense[rows] = self.chunk_dense(int(chunk))[picks[rows] - chunk * CHUNK]
        dense += 0.02 * rng.standard_normal(dense.shape, dtype=np.float32)  # noise of norm ~0.3
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        sparse = []
        for _ in range(n):
            ids = sorted(set(self._tokens(rng, (int(rng.integers(4, 11)),)).tolist()))
            sparse.append((ids, [1.0] * len(ids)))
        return dense, sparse

    def exact_top(self, queries: np.ndarray, size: int, k: int = TOP_K) -> list[list[int]]:
        """Exact search by numpy: the ``k`` best cosines of each query, one matmul per chunk."""
        best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        best_ids = np.zeros((len(queries), k), dtype=np.int64)
        for chunk in range(0, -(-size // CHUNK)):
            block = self.chunk_dense(chunk)[: size - chunk * CHUNK]
            scores = np.concatenate([best_scores, queries @ block.T], axis=1)
            ids = np.concatenate([best_ids, np.broadcast_to(np.arange(len(block)) + chunk * CHUNK,
                                                            (len(queries), len(block)))], axis=1)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            best_scores, best_ids = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        order = np.argsort(-best_scores, axis=1)
        return np.take_along_axis(best_ids, order, 1).tolist()


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
    upsert_seconds: float = 0.0  # time inside the store's upsert calls only (not the data generation)
    optimize_seconds: float = 0.0
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # mode -> [p50, p99]
    recall_at_10: float | None = None
    by_hnsw_ef: dict[int, dict[str, float]] = field(default_factory=dict)  # ef -> dense p50/p99 ms, recall@10
    disk_mb: float | None = None
    load_before: float | None = None  # 1-minute load average when this engine's run began / ended
    load_after: float | None = None
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


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_engine(engine: str, size: int, data: Synthetic, queries, exact: list[list[int]], args,
               workdir: Path) -> Result:
    """Upsert, optimize, then time the queries of one engine at one size."""
    result = Result(engine, size, load_before=load_average())
    folder = workdir / f"{engine}-{size}"
    backend = open_backend(folder, engine=engine, collection=COLLECTION)
    try:
        backend.create(COLLECTION, data.dimension, {"benchmark": "store_scale", "size": size})
        began = time.perf_counter()
        for start, dense, sparse in data.batches(size, args.batch):
            points = [StoredPoint(id=point_key(start + j), dense=dense[j], sparse=sparse[j],
                                  payload={"doc_id": f"d{start + j}", "chunk_index": 0}) for j in range(len(dense))]
            t0 = time.perf_counter()
            backend.upsert(COLLECTION, points)
            result.upsert_seconds += time.perf_counter() - t0
            stop = start + len(dense)
            if args.verbose and (stop // args.batch) % 200 == 0:
                print(f"  {ENGINES[engine]}: {stop:,}/{size:,} points, {time.perf_counter() - began:.0f} s",
                      file=sys.stderr, flush=True)
        began = time.perf_counter()
        backend.optimize(COLLECTION)
        backend.flush(COLLECTION)
        result.optimize_seconds = time.perf_counter() - began

        dense_queries, sparse_queries = queries
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
            if number >= WARM_UP:
                timings["dense"].append(t1 - t0)
                timings["sparse"].append(t2 - t1)
                timings["hybrid"].append(t3 - t2)
                found.append([index_of(h.id) for h in hits])
        result.latency_ms = {mode: [1000 * statistics.median(v), 1000 * percentile(v, 0.99)]
                             for mode, v in timings.items() if v}
        result.recall_at_10 = recall(found, exact[WARM_UP:])
        if engine == "edge":  # local mode searches exactly: the beam width means nothing there
            for ef in args.hnsw_ef:
                result.by_hnsw_ef[ef] = dense_at_ef(backend, dense_queries, exact, ef)
    finally:
        backend.close()
    result.disk_mb = folder_mb(folder)
    result.load_after = load_average()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def dense_at_ef(backend, dense_queries, exact: list[list[int]], ef: int) -> dict[str, float]:
    """Dense top 10 with the query-time HNSW beam width ``ef`` on the same built index."""
    times: list[float] = []
    found: list[list[int]] = []
    for number, dense in enumerate(dense_queries):
        t0 = time.perf_counter()
        (hits,) = backend.query(COLLECTION, [VectorQuery(DENSE_VECTOR, dense.tolist(), TOP_K, hnsw_ef=ef)])
        if number >= WARM_UP:
            times.append(time.perf_counter() - t0)
            found.append([index_of(h.id) for h in hits])
    return {"p50_ms": 1000 * statistics.median(times), "p99_ms": 1000 * percentile(times, 0.99),
            "recall_at_10": recall(found, exact[WARM_UP:])}


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return statistics.mean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True) if t)


# ----------------------------------------------------------------------------
# Report


def ratio(edge: float | None, local: float | None, higher_is_better: bool) -> str:
    if not edge or not local:
        return "–"
    return f"{(edge / local) if higher_is_better else (local / edge):.1f}×"


def table(size: int, results: dict[str, Result]) -> str:
    """One size's Markdown table: both engines and the ratio Edge vs local mode (> 1: Edge is better)."""
    edge, local = results.get("edge"), results.get("qdrant-client")
    rows = [("upsert (points/s)", lambda r: r.points_per_second, "{:,.0f}", True),
            ("upsert time (s)", lambda r: r.upsert_seconds, "{:.1f}", False),
            ("optimize / HNSW build (s)", lambda r: r.optimize_seconds, "{:.1f}", None)]
    for mode in ("dense", "sparse", "hybrid"):
        rows.append((f"{mode} query p50 (ms)", lambda r, m=mode: (r.latency_ms.get(m) or [None])[0], "{:.2f}", False))
        rows.append((f"{mode} query p99 (ms)", lambda r, m=mode: (r.latency_ms.get(m) or [None, None])[1], "{:.2f}", False))
    rows += [("dense recall@10 vs exact (numpy)", lambda r: r.recall_at_10, "{:.3f}", None)]
    for ef in sorted({ef for r in results.values() for ef in r.by_hnsw_ef}):
        rows += [(f"dense p50 / p99 (ms), hnsw_ef={ef}",
                  lambda r, e=ef: (r.by_hnsw_ef[e]["p50_ms"], r.by_hnsw_ef[e]["p99_ms"]) if e in r.by_hnsw_ef else None,
                  "{0[0]:.2f} / {0[1]:.2f}", None),
                 (f"dense recall@10, hnsw_ef={ef}",
                  lambda r, e=ef: r.by_hnsw_ef[e]["recall_at_10"] if e in r.by_hnsw_ef else None, "{:.3f}", None)]
    rows += [
             ("size on disk (MB)", lambda r: r.disk_mb, "{:.1f}", None),
             ("load average before / after", lambda r: None if r.load_before is None else (r.load_before, r.load_after),
              "{0[0]:.2f} / {0[1]:.2f}", None)]
    lines = [f"### {size:,} points", "", "| | Qdrant Edge | qdrant-client local mode | Edge vs local |",
             "|---|---:|---:|---:|"]
    for name, get, form, better in rows:
        e, lo = (get(edge) if edge else None), (get(local) if local else None)
        cells = ["–" if v is None else form.format(v) for v in (e, lo)]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {'–' if better is None else ratio(e, lo, better)} |")
    notes = [r.note for r in results.values() if r.note]
    return "\n".join([*lines, "", *notes]).rstrip() + "\n"


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def report(record: dict) -> str:
    """The Markdown file: how it was run, then one table per size."""
    by_size: dict[int, dict[str, Result]] = {}
    for item in record["results"]:
        result = Result(**{k: v for k, v in item.items() if k != "points_per_second"})
        result.by_hnsw_ef = {int(ef): row for ef, row in result.by_hnsw_ef.items()}  # JSON keys are strings
        by_size.setdefault(result.size, {})[result.engine] = result
    head = ["# Vector store at scale", "", *(f"- {line}" for line in record["runs"]), "",
            record["settings"], ""]
    return "\n".join(head + [table(size, by_size[size]) for size in sorted(by_size)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="points per run (default: 10000 100000)")
    parser.add_argument("--million", action="store_true", help="add a 1,000,000-point run")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--local-max", type=int, default=20_000,
                        help="largest size run in qdrant-client local mode (default: 20000)")
    parser.add_argument("--queries", type=int, default=200, help=f"queries per size (default: 200; {WARM_UP} more warm up)")
    parser.add_argument("--hnsw-ef", type=int, nargs="*", default=[],
                        help="query-time HNSW beam widths to measure on Edge's built index too (dense p50/p99, recall)")
    parser.add_argument("--batch", type=int, default=256, help="points per upsert (default: 256)")
    parser.add_argument("--dimension", type=int, default=DIMENSION, help=f"dense width (default: {DIMENSION})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the stores are written (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write the results here (after every size)")
    parser.add_argument("--markdown", default=None, help="write the tables here (after every size)")
    parser.add_argument("--append", action="store_true",
                        help="keep the other sizes already in --json (a later run adds 1M to the same table)")
    parser.add_argument("--verbose", action="store_true", help="upsert progress on stderr")
    args = parser.parse_args(argv)
    sizes = sorted(set(args.sizes + ([1_000_000] if args.million else [])))

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medeir-store-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = Synthetic(args.seed, args.dimension)
    command = " ".join(["python benchmarks/store_scale.py", *(sys.argv[1:] if argv is None else argv)])
    run = (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command}`, {platform.platform()}, {os.cpu_count()} CPUs, load average {load_average() or 0:.2f} at start, "
           f"qdrant-edge-py {package_version('qdrant-edge-py')}, qdrant-client {package_version('qdrant-client')}")
    settings = (f"{args.dimension}-d dense (around {CENTRES:,} centres) + sparse (~60 of {VOCABULARY:,} ids, Zipf), "
                f"seed {args.seed}, batches of {args.batch}, {args.queries} queries one at a time after {WARM_UP} "
                f"warm-up, top {TOP_K}; hybrid = the store's fusion over {CANDIDATES} per side, alpha {ALPHA}; "
                "recall@10 against numpy exact search. Ratios: Edge vs local mode measured in the same run "
                "(> 1: Edge is better).")
    record = {"runs": [run], "settings": settings, "results": []}
    if args.append and args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        record["runs"] = old["runs"] + record["runs"]
        record["results"] = [r for r in old["results"] if r["size"] not in sizes]
    print(f"# {run}\n# {settings}\n", flush=True)
    try:
        for size in sizes:
            queries = data.queries(args.queries + WARM_UP, size)
            exact = data.exact_top(queries[0], size)
            results: dict[str, Result] = {}
            for engine in args.engines:
                if engine == "qdrant-client" and size > args.local_max:
                    print(f"(qdrant-client local mode skipped at {size:,} points: above --local-max {args.local_max:,})",
                          file=sys.stderr)
                    continue
                print(f"{ENGINES[engine]}: {size:,} points ...", file=sys.stderr, flush=True)
                results[engine] = run_engine(engine, size, data, queries, exact, args, workdir)
            if "qdrant-client" in args.engines and size > args.local_max and results:
                next(iter(results.values())).note = (
                    f"qdrant-client local mode not run at {size:,} points (above --local-max {args.local_max:,}; "
                    "Qdrant names 20,000 points as its limit: it keeps every point in Python and SQLite and "
                    "searches by brute force).")
            print(table(size, results), flush=True)
            record["results"] += [{**r.__dict__, "points_per_second": r.points_per_second} for r in results.values()]
            if args.json:
                Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
            if args.markdown:
                Path(args.markdown).write_text(report(record))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
