"""``medeir export --onnx DIR``: arguments and the printed summary of
``medeir_rag.inference.onnx_export.export_onnx``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from medeir_rag.errors import InvalidArgumentError, run_command
from medeir_rag.inference.onnx_export import PARITY_LENGTHS, export_onnx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medeir export",
        description="Export a medeir embedder or cross-encoder to ONNX (fp32 and int8) for backend='onnx'.",
    )
    parser.add_argument("--onnx", type=Path, required=True, metavar="DIR",
                        help="the model folder to write: a copy of --model plus onnx/ (or --model itself, to add onnx/ to it)")
    parser.add_argument("--model", default=None,
                        help="a sentence-transformers or CrossEncoder medeir folder (default: the bundled model)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 graph (onnx/model_int8.onnx)")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime vs torch parity check")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(PARITY_LENGTHS),
                        help=f"parity-check lengths in tokens (default {' '.join(map(str, PARITY_LENGTHS))})")
    parser.add_argument("--json", action="store_true", help="print export.json instead of a summary")
    parser.add_argument("--verbose", action="store_true", help="show the exporter's own output")
    return parser

def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if any(n < 2 for n in args.lengths):
        raise InvalidArgumentError(f"--lengths must be at least 2 tokens, got {args.lengths}")
    record = export_onnx(args.model, args.onnx, int8=not args.no_int8, check=not args.no_check,
                         lengths=args.lengths, verbose=args.verbose)
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    folder = Path(record["folder"])
    for name, entry in record["files"].items():
        print(f"{name:<5} {folder / entry['path']}  ({entry['bytes'] / 1e6:.1f} MB)")
    for name, rows in record["parity"].items():
        measured = ", ".join(
            f"{r['length']} tokens: " + (f"cosine {r['min_cosine']:.6f}" if "min_cosine" in r
                                         else f"max |logit error| {r['max_abs_logit_error']:.2e}")
            for r in rows
        )
        print(f"parity {name}: {measured}")
    print(f"load it with MedeirEncoder({str(folder)!r}, backend='onnx')" if record["kind"] == "embedder"
          else f"load it with MedeirReranker({str(folder)!r}, backend='onnx')")
    return 0

def main(argv: Sequence[str] | None = None) -> int:
    """``medeir export``: a ``MedeirError`` is one line and exit 1, Ctrl-C exit 130."""
    return run_command("medeir export", lambda: _run(argv))

if __name__ == "__main__":
    raise SystemExit(main())
