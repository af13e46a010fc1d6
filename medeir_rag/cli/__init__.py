"""The ``medeir`` command: one entry point, one subcommand per job.

Each library subcommand is a module of this package (``medeir_rag.cli.index``, ...) that
parses arguments and prints; training stages stay ``medeir_rag.training.<stage>``. Every one
has ``main(argv) -> int`` and runs as ``python -m <module>`` (so ``torchrun -m
medeir_rag.training.pretrain`` works). This file only dispatches, importing the module on demand: ``medeir info`` must not pay for
importing training or evaluation code, and a missing optional extra gives an install hint
instead of a traceback.

The console script itself is ``medeir_cli.main`` (a top-level module): it answers
``--help`` and ``--version`` without importing this package (which imports torch) and hands
everything else to ``main`` here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from typing import TypeVar

from medeir_rag.errors import run_command

# name -> (module, extra that provides its dependencies, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str | None, str]] = {
    "info": ("medeir_rag.cli.info", None, "versions, devices, bundled model and attention backends"),
    "train-tokenizer": ("medeir_rag.training.tokenizer", None, "train the medical WordPiece tokenizer"),
    "tokenizer-report": ("medeir_rag.training.tokenizer_report", None, "pieces per word vs bert-base-uncased"),
    "prepare-corpus": ("medeir_rag.training.corpus", "train", "JSONL/text/PubMed XML -> sharded corpus"),
    "distill-vocab": ("medeir_rag.training.distill_vocab", "train", "static vectors of our vocabulary from a teacher"),
    "pretrain": ("medeir_rag.training.pretrain", "train", "masked-language-model pretraining"),
    "distill": ("medeir_rag.training.distill", "train", "train the encoder to reproduce a teacher's embeddings"),
    "finetune": ("medeir_rag.training.finetune", "train", "contrastive fine-tuning of the embedder"),
    "train-reranker": ("medeir_rag.training.reranker", "train", "cross-encoder reranker training"),
    "tune-hybrid": ("medeir_rag.training.hybrid", "eval", "choose the hybrid's dense weight and score scale on held-out data"),
    "evaluate": ("medeir_rag.cli.evaluate", "eval", "mteb retrieval benchmark with baselines"),
    "analyze": ("medeir_rag.cli.analyze", "eval", "embedding-space analysis and plots"),
    "export": ("medeir_rag.cli.export", "onnx", "export a model to ONNX (fp32 + int8) for backend='onnx'"),
    "index": ("medeir_rag.cli.index", "qdrant", "index documents into Qdrant"),
    "query": ("medeir_rag.cli.query", "qdrant", "search an index"),
}


Settings = TypeVar("Settings")


def settings_from(cls: type[Settings], args: argparse.Namespace) -> Settings:
    """The typed settings dataclass ``cls`` of a library run, filled from a subcommand's parsed
    flags (one field per flag, same names): the library takes the dataclass, never argparse."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a subcommand. A ``MedeirError`` (a mistake in the input) is printed as one
    line, ``medeir <command>: <message>``, with exit status 1; any other exception is a bug and
    keeps its traceback; Ctrl-C exits 130 at any point after this module is imported (the
    subcommand's own imports included)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = f"medeir {argv[0]}" if argv and argv[0] in SUBCOMMANDS else "medeir"
    return run_command(prog, lambda: _dispatch(argv))


def _dispatch(argv: list[str]) -> int:
    from medeir_cli import answer_light

    answered = answer_light(argv, SUBCOMMANDS)  # --help, --version
    if answered is not None:
        return answered
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"medeir: unknown command {name!r}; run `medeir --help`", file=sys.stderr)
        return 2
    module_name, extra, _ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = f"; install it with: pip install 'medeir_rag[{extra}]'" if extra else ""
        print(f"medeir {name}: cannot import {module_name} ({error}){hint}", file=sys.stderr)
        return 1
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
