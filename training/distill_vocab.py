"""Static distillation: a vector for every piece of our vocabulary, from the teacher.

Usage::

    python -m medeir_rag.training.distill_vocab --config cpu --out runs/distill-vocab-cpu
    medeir distill-vocab --config cpu --out runs/distill-vocab-cpu

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/distill_vocab.py``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import RunDir, format_seconds, print0, run_stage, stage_parser
from .config import DistillVocabConfig
from .plots import plot_curves
from .teacher import cached_teacher_embeddings, resolve_teacher
from .text_sources import SOURCES_BY_NAME, default_data_dir, iter_training_texts

VECTORS_FILE = "vectors.safetensors"
STATIC_DIR = "static"


def piece_strings(tokenizer) -> tuple[list[str], np.ndarray]:
    """The text the teacher sees for each id (``##`` stripped) and a mask of special tokens."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = np.zeros(len(vocab), dtype=bool)
    special[list(tokenizer.all_special_ids)] = True
    strings = [piece[2:] if piece.startswith("##") and len(piece) > 2 else piece for piece in vocab]
    return strings, special


def piece_counts(tokenizer, config: DistillVocabConfig) -> tuple[np.ndarray, dict[str, int]]:
    """How often each piece occurs in the allowed training text (held-out records excluded)."""
    unknown = [name for name in config.frequency_sources if name not in SOURCES_BY_NAME]
    if unknown:
        raise ValueError(f"unknown frequency_sources {unknown}; choose among {sorted(SOURCES_BY_NAME)}")
    sources = [SOURCES_BY_NAME[name] for name in config.frequency_sources]
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    counts = Counter()
    per_source: dict[str, int] = {}
    batch: list[str] = []

    def flush() -> None:
        for ids in tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]:
            counts.update(ids)
        batch.clear()

    for text in iter_training_texts(data_dir, sources, config.holdout_percent, config.max_docs, per_source):
        batch.append(text)
        if len(batch) >= 1024:
            flush()
    flush()
    array = np.zeros(len(tokenizer), dtype=np.int64)
    for piece, n in counts.items():
        array[piece] = n
    return array, per_source


def pca(matrix: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows projected on the top ``dims`` principal axes, and every axis' explained variance ratio."""
    if dims > min(matrix.shape):
        raise ValueError(f"dims={dims} exceeds the teacher's width {matrix.shape[1]}: choose dims <= {matrix.shape[1]}")
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    _, singular, axes = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    variance = singular**2
    return (centred @ axes[:dims].T).astype(np.float32), variance / variance.sum()


def sif_weights(counts: np.ndarray, a: float) -> np.ndarray:
    """``a / (a + p)``, ``p`` = relative frequency (unseen pieces get weight 1)."""
    p = counts / max(counts.sum(), 1)
    return (a / (a + p)).astype(np.float32)


def save_static_model(tokenizer, weighted: np.ndarray, path: Path) -> Path:
    """A sentence-transformers folder: ``StaticEmbedding`` (mean of rows) then ``Normalize``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    static = StaticEmbedding(tokenizer.backend_tokenizer, embedding_weights=torch.from_numpy(weighted))
    model = SentenceTransformer(modules=[static, Normalize()], similarity_fn_name="cosine", device="cpu")
    model.save(str(path))
    return path


def load_vectors(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``embeddings``, ``weights`` and ``counts`` of a distill-vocab run (``KeyError``-free checks)."""
    from safetensors.numpy import load_file

    path = Path(run_dir) / VECTORS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `medeir distill-vocab --out {run_dir}` first")
    return load_file(str(path))


def train(config: DistillVocabConfig) -> dict[str, Any]:
    from safetensors.numpy import save_file

    from medeir_rag.model.tokenization import load_tokenizer

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    run = RunDir(config.out_dir)
    run.write_config(config)
    tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else load_tokenizer()
    strings, special = piece_strings(tokenizer)
    teacher_path = resolve_teacher(config.teacher.name)
    print0(f"teacher {teacher_path}: embedding {len(strings)} pieces")
    t0 = time.perf_counter()
    teacher_rows, teacher_stats = cached_teacher_embeddings(
        strings, config.teacher.name, config.teacher.cache_dir, batch_size=config.teacher.batch_size,
        bf16=config.teacher.bf16, shard_size=config.teacher.shard_size,
        max_seq_length=config.teacher.max_seq_length, desc="teacher: vocabulary",
    )
    teacher_seconds = time.perf_counter() - t0
    vectors, explained = pca(teacher_rows, config.dims)
    vectors[special] = 0.0
    t1 = time.perf_counter()
    counts, per_source = piece_counts(tokenizer, config)
    weights = sif_weights(counts, config.sif_a)
    weights[special] = 0.0
    count_seconds = time.perf_counter() - t1

    save_file({"embeddings": vectors, "weights": weights, "counts": counts}, str(run.path / VECTORS_FILE))
    save_static_model(tokenizer, vectors * weights[:, None], run.path / STATIC_DIR)
    rows = [{"step": i + 1, "explained_variance": float(c)} for i, c in enumerate(np.cumsum(explained))]
    run.metrics_file.write_text("".join(f'{{"step": {r["step"]}, "explained_variance": {r["explained_variance"]}}}\n'
                                        for r in rows))
    plot_curves(rows, run.path / "explained_variance.png", [["explained_variance"]],
                title="PCA of the teacher's piece vectors (cumulative explained variance)", smooth=())
    summary = {
        "stage": "distill_vocab",
        "teacher": str(teacher_path),
        "vocab_size": len(strings),
        "dims": config.dims,
        "explained_variance": round(float(explained[: config.dims].sum()), 4),
        "sif_a": config.sif_a,
        "counted_tokens": int(counts.sum()),
        "unseen_pieces": int(((counts == 0) & ~special).sum()),
        "texts_per_source": per_source,
        "teacher_pass": teacher_stats,
        "teacher_seconds": round(teacher_seconds, 1),
        "count_seconds": round(count_seconds, 1),
        "wall_time": format_seconds(time.time() - run.started),
        "vectors": str(run.path / VECTORS_FILE),
        "static_model": str(run.path / STATIC_DIR),
    }
    run.write_summary(summary)
    return summary


def build_parser():
    p = stage_parser("distill-vocab", __doc__.split("\n\n")[0], default_config="tiny")
    p.add_argument("--teacher", default=None, help="= --set teacher.name=... (a sentence-transformers folder)")
    p.add_argument("--data-dir", default=None, help="= --set data_dir=DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    sugar = {"teacher": "teacher.name", "data_dir": "data_dir"}
    return run_stage("distill_vocab", "distill-vocab", build_parser(), sugar, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
