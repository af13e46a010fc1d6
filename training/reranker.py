"""Reranker stage: a cross-encoder on the pretrained backbone, trained on mined pairs.

Usage::

    python -m medeir_rag.training.reranker --config cpu --init runs/pretrain-cpu/final --out runs/reranker-cpu

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/reranker.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import medeir_rag  # noqa: F401  (registers the medeir model type)

from .common import (
    RunDir,
    print0,
    run_trainer_stage,
    seed_everything,
    trainer_run_stats,
    trainer_stage_parser,
)
from .config import RerankerConfig
from .finetune import last_trainer_checkpoint, resolve_st_device, training_arguments, write_trainer_log
from .pairs import Bm25Index, Pair, build_pairs, heldout_medquad_pairs, mine_hard_negatives, mrr_at_k

FINAL_DIR = "final"
INIT_DIR = "init"


def load_init_cross_encoder(init: str | Path, staging: Path, max_length: int, device: str):
    """A ``CrossEncoder`` on the pretrained backbone (a CrossEncoder folder is loaded as is)."""
    from sentence_transformers import CrossEncoder

    from medeir_rag.model.export import save_cross_encoder
    from medeir_rag.model.modeling import MedeirForSequenceClassification
    from medeir_rag.model.tokenization import load_tokenizer

    init = Path(init)
    if not (init / "config.json").is_file():
        raise FileNotFoundError(f"init model folder not found or not an HF model folder: {init}")
    st_config = init / "config_sentence_transformers.json"
    if st_config.is_file() and json.loads(st_config.read_text()).get("model_type") == "CrossEncoder":
        return CrossEncoder(str(init), device=device, max_length=max_length)
    if not (staging / "config.json").is_file():
        # an MLM folder (encoder + MLM transform reused as the head) or a fine-tuned
        # bi-encoder folder (its encoder; a MedeirModel checkpoint at the ST folder's root)
        model = MedeirForSequenceClassification.from_pretrained(str(init), num_labels=1)
        save_cross_encoder(model, load_tokenizer(init), staging, max_length=max_length)
    return CrossEncoder(str(staging), device=device, max_length=max_length)


def rows_dataset(pairs: list[Pair]):
    """``query, document, label`` rows: each positive (1) then its negatives (0)."""
    from datasets import Dataset

    queries, docs, labels = [], [], []
    for p in pairs:
        for doc, label in [(p.positive, 1.0)] + [(n, 0.0) for n in p.negatives]:
            queries.append(p.anchor)
            docs.append(doc)
            labels.append(label)
    return Dataset.from_dict({"query": queries, "document": docs, "label": labels})


def bm25_candidates(eval_pairs: list[Pair], k: int) -> list[list[int]]:
    """Per query, its top-``k`` BM25 hits among the eval answers (own answer added if missed)."""
    hits = Bm25Index([p.positive for p in eval_pairs]).search([p.anchor for p in eval_pairs], k)
    out = []
    for i, row in enumerate(hits):
        row = [int(j) for j in row]
        if i not in row:
            row[-1] = i
        out.append(row)
    return out


@torch.no_grad()
def rerank_mrr(model, eval_pairs: list[Pair], candidates: list[list[int]], k: int = 10, batch_size: int = 32) -> float:
    """MRR@k after reranking each query's candidates with the cross-encoder."""
    flat = [(eval_pairs[i].anchor, eval_pairs[j].positive) for i, row in enumerate(candidates) for j in row]
    scores = np.asarray(model.predict(flat, batch_size=batch_size, show_progress_bar=False), dtype=np.float64)
    rankings, start = [], 0
    for row in candidates:
        part = scores[start : start + len(row)]
        start += len(row)
        rankings.append([row[j] for j in np.argsort(-part, kind="stable")])
    return mrr_at_k(np.asarray(rankings), k)


def train(config: RerankerConfig) -> dict[str, Any]:
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from medeir_rag.model.export import save_cross_encoder

    if not config.init:
        raise ValueError("train-reranker needs init=<pretrain final/ folder> (--init)")
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    out = Path(config.out_dir)
    run = RunDir(out, is_main=int(os.environ.get("RANK", 0)) == 0)
    run.write_config(config)
    seed_everything(config.train.seed)
    device = resolve_st_device(config.train.device)
    model = load_init_cross_encoder(config.init, out / INIT_DIR, config.train.max_seq_length, device)

    eval_pairs = heldout_medquad_pairs(config.data, config.data.eval_pairs)
    if len(eval_pairs) < 2:
        raise ValueError("fewer than 2 held-out MedQuAD training pairs: raise data.holdout_percent or max_records")
    candidates = bm25_candidates(eval_pairs, min(config.eval_candidates, len(eval_pairs)))
    t0 = time.perf_counter()
    pairs, counts = build_pairs(config.data, exclude_texts={t for p in eval_pairs for t in (p.anchor, p.positive)})
    mine_hard_negatives(pairs, config.data, count=config.negatives_per_positive)
    dataset = rows_dataset(pairs)
    print0(f"pairs: {len(pairs)} {counts} -> {len(dataset)} rows ({time.perf_counter() - t0:.1f}s); "
           f"eval: {len(eval_pairs)} held-out MedQuAD pairs x {len(candidates[0])} BM25 candidates")

    mrr_bm25 = mrr_at_k(np.asarray(candidates), 10)
    mrr_before = rerank_mrr(model, eval_pairs, candidates)
    print0(f"MRR@10 before: {mrr_before:.4f} (BM25 order: {mrr_bm25:.4f})")

    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.negatives_per_positive)))
    args = training_arguments(CrossEncoderTrainingArguments, out, config.optim, config.train, device)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last_trainer_checkpoint(out))
    train_seconds = time.perf_counter() - t_train

    mrr_after = rerank_mrr(model, eval_pairs, candidates)
    final = out / FINAL_DIR
    if run.is_main:
        if final.exists():
            shutil.rmtree(final)
        save_cross_encoder(model.model.cpu(), model.tokenizer, final, max_length=config.max_length)
    rows = write_trainer_log(run, trainer.state.log_history, "cross-encoder reranker")
    losses_logged = [r["loss"] for r in rows if "loss" in r]
    summary = {
        "stage": "reranker",
        "init": str(config.init),
        "pairs": len(pairs),
        "pairs_per_source": counts,
        "rows": len(dataset),
        "negatives_per_positive": config.negatives_per_positive,
        **trainer_run_stats(trainer, result, run, losses_logged, train_seconds),
        "eval_pairs": len(eval_pairs),
        "eval_candidates": len(candidates[0]),
        "mrr@10_bm25_order": round(mrr_bm25, 4),
        "mrr@10_before": round(mrr_before, 4),
        "mrr@10_after": round(mrr_after, 4),
        "output": str(final),
    }
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------
# Command line

def build_parser():
    return trainer_stage_parser("train-reranker", __doc__.split("\n\n")[0], init_help="pretrain final/ (MLM), finetune final/ (bi-encoder) or a CrossEncoder folder")


def main(argv: list[str] | None = None) -> int:
    return run_trainer_stage("reranker", "train-reranker", build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
