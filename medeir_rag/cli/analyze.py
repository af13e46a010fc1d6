"""``medeir analyze``: embedding-space analysis and plots (arguments and printing; the work is in
``medeir_rag.eval.embedding_space``).
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
from medeir_rag.eval.embedding_cache import DEFAULT_CACHE_DIR
from medeir_rag.eval.embedding_space import DEFAULT_OUTPUT_DIR, AnalyzeSettings, analyze


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medeir analyze",
        description="Embedding-space analysis: alignment/uniformity, silhouette, few-label linear probe, plots.",
    )
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="shared data folder (default: $MEDEIR_DATA_DIR, else ../shared/data)")
    parser.add_argument("--model", default=None, help="our sentence-transformers model dir (default: the bundled model)")
    parser.add_argument("--no-model", action="store_true", help="analyse the baseline only")
    parser.add_argument("--no-minilm", action="store_true", help="skip all-MiniLM-L6-v2")
    parser.add_argument("--sample", type=int, default=2000, help="items per set (default 2000)")
    parser.add_argument("--min-class-size", type=int, default=20, help="drop classes smaller than this (default 20)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out share for the probe (default 0.2)")
    parser.add_argument("--probe-seeds", type=int, default=3, help="repeats of the 1%%/10%% probes (default 3)")
    parser.add_argument("--projection", choices=("pca", "tsne"), default="pca", help="2-D projection (default pca)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling, splits and projections (default 0)")
    parser.add_argument("--truncate-dim", type=int, default=None, help="Matryoshka dimension for our model")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help=f"where analysis.json and the PNGs go (default {DEFAULT_OUTPUT_DIR})")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help=f"embedding cache (default {DEFAULT_CACHE_DIR})")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (the table's values per model) instead of the table")
    return parser

def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from(AnalyzeSettings, args)
    if not args.json:
        return analyze(settings, argv)[0]
    with redirect_stdout(sys.stderr):  # stdout carries the one JSON object
        status, table = analyze(settings, argv)
    if table is not None:
        print(json.dumps({"models": table, "analysis_json": str(args.output_dir / "analysis.json")}))
    return status

if __name__ == "__main__":
    raise SystemExit(main())
