"""Tokenizer stage: train the medical WordPiece tokenizer on the allowed sources.

Usage::

    python -m medeir_rag.training.tokenizer --data-dir ../shared/data \\
        --out medeir_rag/assets/tokenizer --vocab-size 32768

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/tokenizer.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import tokenizers
from tqdm import tqdm
from transformers import PreTrainedTokenizerFast

from medeir_rag.model.tokenization import load_tokenizer, train_wordpiece

from .text_sources import (
    DEFAULT_HOLDOUT_PERCENT,
    DEFAULT_SOURCES,
    default_data_dir,
    iter_training_texts,
)
from .tokenizer_report import (
    REPORT_FILE,
    build_report,
    format_table,
    load_reference_tokenizer,
)

TRICKY_TEXT = (
    "Sjögren's syndrome; 5-fluorouracil (5-FU) 500 mg/m² q3w + co-trimoxazole, β-blockers, "
    "α1-antitrypsin, IL-6 ≥ 10 pg/mL at 37.5 °C in naïve CD4+ T-cells; anti-TNF-α (infliximab) "
    "vs. METFORMIN-XR 1000mg b.i.d."
)


def round_trip_check(tokenizer: PreTrainedTokenizerFast, text: str = TRICKY_TEXT) -> list[int]:
    """Assert that ``text`` encodes without ``[UNK]`` and decodes back; return its ids.

    WordPiece decoding is not byte-exact (it lowercases, strips accents and re-spaces
    punctuation), so the decoded text is compared with the *normalised* input with
    all whitespace removed.
    """
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids, f"[UNK] in {tokenizer.convert_ids_to_tokens(ids)}"
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    normalized = tokenizer.backend_tokenizer.normalizer.normalize_str(text)
    assert "".join(decoded.split()) == "".join(normalized.split()), f"{decoded!r} != {normalized!r}"
    return ids


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the tokenizer stage."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Data
    p.add_argument(
        "--data-dir", default=None, help="shared data folder (default: $MEDEIR_DATA_DIR, else ../shared/data)"
    )
    p.add_argument("--out", required=True, help="output folder for the tokenizer files and report; required")
    p.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="read at most this many records per source (default: all; for CI)",
    )
    p.add_argument(
        "--holdout-percent",
        type=float,
        default=DEFAULT_HOLDOUT_PERCENT,
        help=f"percent of records held out from training, by id hash (default: {DEFAULT_HOLDOUT_PERCENT})",
    )
    # Tokenizer
    p.add_argument(
        "--vocab-size", type=int, default=32768, help="vocabulary size incl. special tokens (default: 32768)"
    )
    p.add_argument("--min-frequency", type=int, default=2, help="minimum count of a merged pair (default: 2)")
    # Report
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="skip the bert-base-uncased comparison in the report (default: off)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Train, save, report, check. Returns the exit code (0)."""
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    out = Path(args.out)

    counts: dict[str, int] = {}
    texts = iter_training_texts(data_dir, DEFAULT_SOURCES, args.holdout_percent, args.max_docs, counts)
    t0 = time.perf_counter()
    tokenizer = train_wordpiece(
        tqdm(texts, desc="tokenizer texts", unit=" doc", disable=None, file=sys.stderr),
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
    )
    train_seconds = time.perf_counter() - t0
    print(f"trained vocab {len(tokenizer)} on {sum(counts.values())} texts in {train_seconds:.1f}s")

    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))

    reference = None if args.no_reference else load_reference_tokenizer()
    report: dict[str, Any] = {
        "training": {
            "vocab_size_requested": args.vocab_size,
            "vocab_size": len(tokenizer),
            "min_frequency": args.min_frequency,
            "holdout_percent": args.holdout_percent,
            "max_docs": args.max_docs,
            "texts_per_source": counts,
            "train_seconds": round(train_seconds, 1),
            "tokenizers_version": tokenizers.__version__,
        },
        **build_report(tokenizer, data_dir, args.holdout_percent, args.max_docs, reference),
    }
    report["training"]["tokenizer_json_sha256"] = hashlib.sha256(
        (out / "tokenizer.json").read_bytes()
    ).hexdigest()
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(report))

    ids = round_trip_check(tokenizer)
    reloaded = load_tokenizer(out)
    assert reloaded(TRICKY_TEXT)["input_ids"] == ids, "saved tokenizer encodes differently"
    print(f"round trip ok: {len(ids)} ids for {len(TRICKY_TEXT.split())} words; saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
