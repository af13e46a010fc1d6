"""Hybrid-weight stage: choose how much the hybrid search trusts the dense side, and on which score scale.

Usage::

    medeir tune-hybrid --model runs/finetune-cpu/final --out runs/hybrid-cpu

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/hybrid.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medeir_rag.rag.fusion import DEFAULT_NORMALIZATION, NORMALIZATIONS, RRF_K

from .config import PairData
from .pairs import Pair, heldout_medquad_pairs, iter_source_records, record_to_pair, split_sentences

ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(11))
DEFAULT_DISTRACTORS = 2000
# validation set name -> the pair source whose held-out records it asks about
VALIDATION_SETS = {"medquad-heldout": "medquad", "pubmed-heldout": "title_abstract",
                   "pubmed-claims-heldout": "title_abstract"}
_CONCLUSION_LEAD = re.compile(
    r"^(?:(?:conclusions?|interpretation|significance)\s*[:.]\s*|(?:in conclusion|in summary|taken together|"
    r"overall|together|collectively|thus|therefore|hence|finally),\s*)", re.IGNORECASE)


def setting_key(normalization: str, alpha: float) -> str:
    """The run name of one fusion setting: ``"0.6"`` (min-max, the historical names), ``"max:0.6"``."""
    return f"{alpha:g}" if normalization == DEFAULT_NORMALIZATION else f"{normalization}:{alpha:g}"


def _write_beir(folder: Path, queries: list[str], positives: list[str], distractors: list[str]) -> Path:
    """A BEIR folder: query i is relevant to document i; distractors follow."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "corpus.jsonl.gz", "wt", encoding="utf-8") as handle:
        for i, text in enumerate([*positives, *distractors]):
            handle.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(queries):
            handle.write(json.dumps({"_id": f"q{i}", "text": text}) + "\n")
    with open(folder / "qrels" / "validation.tsv", "w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"q{i}\td{i}\t1\n" for i in range(len(queries)))
    return folder


def claim_pair(record: dict[str, Any], data: PairData) -> Pair | None:
    """A research-claim question: an abstract's last sentence (its conclusion) -> title + the other sentences.

    Why: a title finds its own abstract almost always (``pubmed-heldout`` sits at 93-98
    nDCG@10 for every alpha), so it barely tells the weights apart, and users also search
    with statements of findings (claims to check). The conclusion, with its "In conclusion,"
    lead cut, is the nearest such statement the allowed data holds; it is removed from
    the document so the query cannot match itself word for word.
    """
    sentences = split_sentences(str(record.get("text") or ""))
    if len(sentences) < 3:
        return None
    claim = _CONCLUSION_LEAD.sub("", sentences[-1]).strip()
    if len(claim.split()) < data.span_min_words:
        return None
    document = " ".join([str(record.get("title") or "").strip(), *sentences[:-1]]).strip()
    return Pair(claim[0].upper() + claim[1:], document, "claims")


def _heldout_pairs(name: str, data: PairData) -> list[Pair]:
    source = VALIDATION_SETS[name]
    if source == "medquad":
        return heldout_medquad_pairs(data)
    to_pair = claim_pair if name == "pubmed-claims-heldout" else (lambda r, d: record_to_pair(source, r, d))
    return [p for r in iter_source_records(source, data, split="heldout") if (p := to_pair(r, data))]


def build_validation_sets(data: PairData, out_dir: Path, distractors: int = DEFAULT_DISTRACTORS) -> list[Path]:
    """BEIR folders of held-out MedQuAD-training questions, PubMed titles and PubMed claims (``VALIDATION_SETS``).

    Distractors are training-split documents of the same source, so no relevant document
    was trained on and the corpus looks like what the model will meet.
    """
    rng = random.Random(data.seed)
    folders = []
    training_documents: dict[str, list[str]] = {}  # per source: read once, shared by its sets
    for name, source in VALIDATION_SETS.items():
        held = _heldout_pairs(name, data)
        seen = {t for p in held for t in (p.anchor, p.positive)}
        if source not in training_documents:
            training_documents[source] = list(dict.fromkeys(
                p.positive for r in iter_source_records(source, data) if (p := record_to_pair(source, r, data))
            ))
        train_docs = [t for t in training_documents[source] if t not in seen]
        rng.shuffle(train_docs)
        if len(held) < 2:
            raise ValueError(f"fewer than 2 held-out records for {name}: raise data.holdout_percent or max_records")
        folders.append(_write_beir(out_dir / name, [p.anchor for p in held], [p.positive for p in held],
                                   train_docs[:distractors]))
    return folders


def sweep_runs(store: Any, dataset: Any, query_vectors: Any, grid: Sequence[float] = ALPHA_GRID,
               normalizations: Sequence[str] = NORMALIZATIONS) -> dict[str, Any]:
    """Per-query runs of the sweep over a ``benchmark_store``: ``dense``, ``sparse``, ``rrf`` and one
    per fusion setting (``setting_key(normalization, alpha)``).

    Both candidate lists are fetched once per query (``store.candidate_lists``, the lists
    hybrid search fuses) and fused for every setting with ``convex_combination``, so run
    ``setting_key(n, a)`` ranks as ``store.search(query, mode="hybrid", alpha=a, top_k=100)``
    on a model whose ``hybrid.json`` says normalization ``n``.
    """
    from medeir_rag.eval.benchmark import point_ids
    from medeir_rag.rag.fusion import convex_combination, reciprocal_rank_fusion
    from medeir_rag.rag.store import HYBRID_CANDIDATES

    to_doc = point_ids(dataset)
    settings = [(n, a) for n in normalizations for a in grid]
    runs: dict[str, dict[str, dict[str, float]]] = {"dense": {}, "sparse": {}, "rrf": {},
                                                    **{setting_key(n, a): {} for n, a in settings}}

    def named(ranking: dict[str, float]) -> dict[str, float]:
        return {to_doc[i]: score for i, score in ranking.items()}

    for row, query_id in enumerate(dataset.query_ids):
        query = dataset.queries[query_id]
        if not query.strip():
            for run in runs.values():
                run[query_id] = {}
            continue
        dense, sparse = store.candidate_lists(query, candidates=HYBRID_CANDIDATES, query_vector=query_vectors[row])
        runs["dense"][query_id], runs["sparse"][query_id] = named(dense), named(sparse)
        runs["rrf"][query_id] = named(reciprocal_rank_fusion([dense, sparse], k=RRF_K, top_k=HYBRID_CANDIDATES))
        for normalization, alpha in settings:
            fused = convex_combination(dense, sparse, alpha, HYBRID_CANDIDATES, normalization)
            runs[setting_key(normalization, alpha)][query_id] = named(fused)
    return runs


def sweep(
    model_dir: str | Path, folders: Sequence[Path], grid: Sequence[float] = ALPHA_GRID,
    cache_dir: Path | None = None, show_progress: bool = True, normalizations: Sequence[str] = NORMALIZATIONS,
) -> dict[str, Any]:
    """nDCG@10 of every fusion setting on every validation set, plus dense, sparse and RRF alone.

    The best setting has the best mean over the sets; ties go to min-max (the older
    scale), then to the alpha nearest 0.5.
    """
    from medeir_rag.eval.baselines import embed, load_medeir
    from medeir_rag.eval.beir import load_beir, sha256_file
    from medeir_rag.eval.benchmark import benchmark_store
    from medeir_rag.eval.embedding_cache import EmbeddingCache
    from medeir_rag.eval.metrics import score_run

    model = load_medeir(model_dir)
    cache = EmbeddingCache(cache_dir)
    table: dict[str, dict[str, float]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    for folder in folders:
        dataset = load_beir(folder)
        summaries[dataset.name] = dataset.summary()
        queries = embed(model, dataset.query_texts(), "query", cache)
        documents = embed(model, dataset.document_texts(), "document", cache,
                          source_sha256=sha256_file(dataset.corpus_file))
        with benchmark_store(model.encoder, dataset, documents) as store:
            runs = sweep_runs(store, dataset, queries, grid, normalizations)
        table[dataset.name] = {key: score_run(run, dataset.qrels)["ndcg_at_10"] for key, run in runs.items()}
    settings = [(n, a) for n in normalizations for a in grid]
    means = {setting_key(n, a): sum(t[setting_key(n, a)] for t in table.values()) / len(table) for n, a in settings}
    best_normalization, best = max(settings, key=lambda s: (round(means[setting_key(*s)], 6),
                                                            s[0] == DEFAULT_NORMALIZATION, -abs(s[1] - 0.5)))
    return {"model": str(model.path), "grid": list(grid), "normalizations": list(normalizations),
            "ndcg_at_10": table, "mean_ndcg_at_10": means, "best_alpha": best,
            "best_normalization": best_normalization, "datasets": summaries,
            "scorer": "MedeirVectorStore candidate lists (100 per side), fusion.convex_combination"}


def markdown_table(result: dict[str, Any]) -> str:
    """Validation nDCG@10 (%) per fusion setting, one column per set, then the mean."""
    names = list(result["ndcg_at_10"])
    lines = ["| fusion: normalization, alpha (dense weight) | " + " | ".join(names) + " | mean |",
             "|---|" + "---:|" * (len(names) + 1)]
    rows = [("dense alone", "dense"), ("sparse alone (the store's: Qdrant IDF x BM25 tf, medeir tokens)", "sparse"),
            (f"RRF k={RRF_K} (equal weights, for reference)", "rrf")]
    chosen = setting_key(result["best_normalization"], result["best_alpha"])
    for normalization in result["normalizations"]:
        for alpha in result["grid"]:
            key = setting_key(normalization, alpha)
            rows.append((f"{normalization}, {alpha:g}" + (" (chosen)" if key == chosen else ""), key))
    for label, key in rows:
        values = [result["ndcg_at_10"][n][key] for n in names]
        lines.append(f"| {label} | " + " | ".join(f"{100 * v:.2f}" for v in values)
                     + f" | {100 * sum(values) / len(values):.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medeir tune-hybrid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="sentence-transformers model folder (default: the bundled model)")
    parser.add_argument("--out", type=Path, default=Path("runs/hybrid"), help="validation sets and sweep results")
    parser.add_argument("--data-dir", default=None, help="the shared data folder (default: ../shared/data)")
    parser.add_argument("--distractors", type=int, default=DEFAULT_DISTRACTORS,
                        help=f"training-split documents added to each validation corpus (default {DEFAULT_DISTRACTORS})")
    parser.add_argument("--holdout-percent", type=float, default=2.0,
                        help="the held-out share the model's training used (default 2.0, every preset's value)")
    parser.add_argument("--max-records", type=int, default=None, help="read at most this many records per source")
    parser.add_argument("--no-write", action="store_true", help="do not write hybrid.json into the model folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from medeir_rag.model.files import resolve_model_path
    from medeir_rag.rag.fusion import HybridWeights, save_hybrid_weights

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    model_dir = resolve_model_path(args.model)
    data = PairData(data_dir=args.data_dir, max_records=args.max_records, holdout_percent=args.holdout_percent)
    folders = build_validation_sets(data, args.out / "validation", args.distractors)
    result = sweep(model_dir, folders, cache_dir=args.out / "embedding-cache", show_progress=not args.quiet)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    table = markdown_table(result)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    (args.out / "sweep.md").write_text(table + "\n")
    print(table)
    best, normalization = result["best_alpha"], result["best_normalization"]
    if args.no_write:
        print(f"best: {normalization}, alpha {best:g} (not written: --no-write)")
        return 0
    chosen = setting_key(normalization, best)
    weights = HybridWeights(alpha=best, normalization=normalization, provenance={
        "chosen_by": "medeir tune-hybrid", "validation_sets": list(result["ndcg_at_10"]),
        "mean_ndcg_at_10": round(result["mean_ndcg_at_10"][chosen], 4),
        "grid_mean_ndcg_at_10": {key: round(v, 4) for key, v in result["mean_ndcg_at_10"].items()},
        "distractors": args.distractors,
    })
    path = save_hybrid_weights(model_dir, weights)
    print(f"wrote {path}: {weights.label}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
