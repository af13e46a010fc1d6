"""``medeir evaluate``: the retrieval results table (arguments and printing; the work is in
``medeir_rag.eval.benchmark``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from contextlib import redirect_stdout
from pathlib import Path

from medeir_rag.cli import settings_from
from medeir_rag.eval.benchmark import (
    DEFAULT_OUTPUT_DIR,
    EvaluateSettings,
    evaluate,
    markdown_report,
    table_json,
)
from medeir_rag.eval.embedding_cache import DEFAULT_CACHE_DIR
from medeir_rag.inference.encode import DEFAULT_BATCH_TOKENS
from medeir_rag.inference.precision import DEFAULT_PRECISION, PRECISIONS
from medeir_rag.rag.fusion import HYBRID_CANDIDATES, RRF_K


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"alpha must be in [0, 1], got {value}")
    return value

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medeir evaluate",
        description="Retrieval benchmark (mteb, offline) on local BEIR folders, with BM25, all-MiniLM-L6-v2, "
        "reranked and hybrid reference rows; writes results.json and results.md.",
    )
    # Data
    parser.add_argument("folders", nargs="*", type=Path,
                        help="BEIR folders (default: beir/scifact and beir/medquad_qa under $MEDEIR_DATA_DIR, "
                        "else ../shared/data)")
    parser.add_argument("--split", default=None, help="qrels split (default: test if present, else the only split)")
    # Models
    parser.add_argument("--model", default=None, help="our sentence-transformers model dir (default: the bundled model)")
    parser.add_argument("--no-model", action="store_true", help="skip our model's rows (dense, rerank, hybrid)")
    parser.add_argument("--reranker", default=None, help="cross-encoder dir (default: the bundled reranker)")
    parser.add_argument("--no-reranker", action="store_true", help="skip the reranker row")
    parser.add_argument("--no-minilm", action="store_true", help="skip the all-MiniLM-L6-v2 row")
    parser.add_argument("--rerank-top-k", type=int, default=HYBRID_CANDIDATES,
                        help=f"hybrid hits the reranker rescores (default {HYBRID_CANDIDATES})")
    parser.add_argument("--alpha", type=_alpha, default=None,
                        help="dense weight of the hybrid row (default: the model's hybrid.json, else 0.5)")
    parser.add_argument("--rrf-k", type=int, default=RRF_K, help=f"RRF constant of the RRF reference row (default {RRF_K})")
    parser.add_argument("--stem", choices=("auto", "yes", "no"), default="auto",
                        help="Snowball stemming for word BM25 (auto: when PyStemmer is installed)")
    parser.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension for our model")
    parser.add_argument("--batch-tokens", type=int, default=DEFAULT_BATCH_TOKENS,
                        help=f"padded tokens per forward pass (our model; default {DEFAULT_BATCH_TOKENS})")
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help="our model's inference precision (default auto: bf16 where the hardware runs it "
                             "natively, else fp32, as MedeirEncoder; see medeir_rag.inference.precision)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="our model's runtime (default torch; onnx needs `medeir export --onnx` first)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    # Output
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where results.json and results.md go (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                        help=f"embedding cache (default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--seed", type=int, default=0, help="seed for python/numpy/torch (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the table's rows: label and metrics per dataset) instead of the table")
    return parser

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
    settings = settings_from(EvaluateSettings, args)
    if args.json:  # stdout carries the one JSON object: whatever the libraries print goes to stderr
        with redirect_stdout(sys.stderr):
            report = evaluate(settings, argv)
        print(json.dumps({**table_json(report), "results_json": str(args.output_dir / "results.json"),
                          "results_md": str(args.output_dir / "results.md"), "wall_seconds": report["wall_seconds"]}))
        return 0
    report = evaluate(settings, argv)
    print(markdown_report(report))
    print(f"wrote {args.output_dir / 'results.json'} and results.md in {report['wall_seconds']} s "
          f"(embedding cache: {report['cache']['hits']} hits, {report['cache']['misses']} misses)")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
