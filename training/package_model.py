"""Package stage: copy trained models into ``medeir_rag/assets`` as the bundled defaults.

Usage::

    python -m medeir_rag.training.package_model --embedder runs/finetune-cpu-long/final \\
        --reranker runs/reranker-cpu/final --card docs/MODEL_CARD.md

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/package_model.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from medeir_rag.model.export import drop_stray_prompts, write_remote_code
from medeir_rag.model.files import (
    DEFAULT_MODEL_NAME,
    DEFAULT_RERANKER_NAME,
    bundled_model_path,
    check_safetensors,
)

PROBE_SENTENCES = [
    "Metformin is the usual first-line drug for type 2 diabetes.",
    "What are the symptoms of glaucoma?",
    "Inhaled corticosteroids reduce asthma exacerbations.",
]
KEEP_SUFFIXES = {".json", ".safetensors", ".txt", ".md", ".py"}


def copy_model_files(source: Path, target: Path) -> None:
    """Copy a model directory's own files (not checkpoints or trainer state) to ``target``."""
    if target.exists():
        shutil.rmtree(target)
    for path in source.rglob("*"):
        relative = path.relative_to(source)
        if path.is_file() and path.suffix in KEEP_SUFFIXES and not relative.parts[0].startswith("checkpoint"):
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / relative)


def store_half_precision(directory: Path) -> int:
    """Rewrite every ``*.safetensors`` under ``directory`` in fp16; return the bytes written."""
    total = 0
    for weights in directory.rglob("*.safetensors"):
        tensors = load_file(str(weights))
        halved = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        save_file(halved, str(weights), metadata={"format": "pt"})
        check_safetensors(weights)
        total += weights.stat().st_size
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = "float32"  # load (and compute) in fp32 whatever the storage dtype
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return total


def embedding_drift(before: Path, after: Path) -> float:
    """Largest absolute embedding difference between two copies of the same embedder."""
    from medeir_rag.inference.encoder import MedeirEncoder

    a = MedeirEncoder(before, device="cpu").encode_document(PROBE_SENTENCES)
    b = MedeirEncoder(after, device="cpu").encode_document(PROBE_SENTENCES)
    return float(np.abs(a - b).max())


def score_drift(before: Path, after: Path) -> float:
    """Largest absolute reranker-score difference between two copies of the same cross-encoder."""
    from sentence_transformers import CrossEncoder

    pairs = [(PROBE_SENTENCES[1], s) for s in PROBE_SENTENCES]
    a = CrossEncoder(str(before), device="cpu").predict(pairs)
    b = CrossEncoder(str(after), device="cpu").predict(pairs)
    return float(np.abs(a - b).max())


def package(source: Path, target: Path, drift, card: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging) / target.name
        copy_model_files(source, staged)
        size = store_half_precision(staged)
        write_remote_code(staged)
        drop_stray_prompts(staged)
        difference = drift(source, staged)
        if card is not None:
            shutil.copy2(card, staged / "README.md")
        copy_model_files(staged, target)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    return {"target": str(target), "weights_bytes": size, "total_bytes": total, "max_drift_fp16": difference}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medeir_rag.training.package_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", type=Path, required=True, help="trained sentence-transformers directory")
    parser.add_argument("--reranker", type=Path, help="trained CrossEncoder directory (optional)")
    parser.add_argument("--card", type=Path, help="model card Markdown, copied in as README.md")
    parser.add_argument("--assets", type=Path, default=bundled_model_path(DEFAULT_MODEL_NAME).parent,
                        help="target assets folder (default: the installed package's medeir_rag/assets)")
    parser.add_argument("--budget-mb", type=float, default=50.0, help="refuse to package more than this (default 50)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.manual_seed(0)
    results = [package(args.embedder, args.assets / DEFAULT_MODEL_NAME, embedding_drift, args.card)]
    if args.reranker:
        results.append(package(args.reranker, args.assets / DEFAULT_RERANKER_NAME, score_drift, args.card))
    total_mb = sum(r["total_bytes"] for r in results) / 2**20
    print(json.dumps({"packaged": results, "total_mb": round(total_mb, 2)}, indent=2))
    if total_mb > args.budget_mb:
        print(f"error: packaged models take {total_mb:.1f} MB, over the {args.budget_mb} MB budget")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
