"""Contrastive fine-tuning stage: the pretrained encoder -> a sentence-transformers embedder.

Usage::

    python -m medeir_rag.training.finetune --config cpu --init runs/pretrain-cpu/final --out runs/finetune-cpu
    torchrun --nproc_per_node 8 -m medeir_rag.training.finetune --config base --init ... --out ...

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/finetune.py``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

import medeir_rag  # noqa: F401  (registers the medeir model type)
from medeir_rag.runtime import default_device

from .common import (
    RunDir,
    print0,
    run_trainer_stage,
    seed_everything,
    trainer_run_stats,
    trainer_stage_parser,
    use_bf16,
)
from .config import FinetuneConfig, OptimSection, StTrain
from .pairs import (
    Pair,
    bm25_mrr,
    build_pairs,
    drop_teacher_false_negatives,
    heldout_medquad_pairs,
    mine_hard_negatives,
    mrr_at_k,
)
from .plots import plot_curves
from .teacher import cached_teacher_embeddings

FINAL_DIR = "final"
INIT_DIR = "init"

# ----------------------------------------------------------------------------
# Model


def is_st_dir(path: Path) -> bool:
    return (path / "modules.json").is_file()


def load_init_model(init: str | Path, staging: Path, device: str):
    """A SentenceTransformer from an ST folder, or from a pretrain ``final/`` (HF MLM folder)."""
    from sentence_transformers import SentenceTransformer

    from medeir_rag.model.export import save_sentence_transformer
    from medeir_rag.model.modeling import MedeirForMaskedLM
    from medeir_rag.model.tokenization import load_tokenizer

    init = Path(init)
    if not init.is_dir():
        raise FileNotFoundError(f"init model folder not found: {init}")
    if is_st_dir(init):
        return SentenceTransformer(str(init), device=device)
    if not (init / "config.json").is_file():
        raise FileNotFoundError(f"{init} is neither a sentence-transformers folder nor an HF model folder")
    if not is_st_dir(staging):
        mlm = MedeirForMaskedLM.from_pretrained(str(init))
        save_sentence_transformer(mlm, load_tokenizer(init), staging)
    return SentenceTransformer(str(staging), device=device)


def resolve_st_device(name: str) -> str:
    return default_device() if name == "auto" else name


# ----------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def retrieval_mrr(model, pairs: list[Pair], k: int = 10, batch_size: int = 32) -> float:
    """MRR@k of ``model`` retrieving each pair's positive among all eval positives."""
    queries = model.encode([p.anchor for p in pairs], prompt_name="query", batch_size=batch_size,
                           convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    docs = model.encode([p.positive for p in pairs], prompt_name="document", batch_size=batch_size,
                        convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    scores = (queries @ docs.T).float().cpu()
    return mrr_at_k(torch.argsort(scores, dim=1, descending=True)[:, :k].numpy(), k)


# ----------------------------------------------------------------------------
# Data and losses


def teacher_embedder(config: FinetuneConfig):
    """``texts -> teacher embeddings`` through the shared teacher cache."""
    teacher = config.teacher

    def embed(texts: list[str]):
        rows, _ = cached_teacher_embeddings(
            texts, teacher.name, teacher.cache_dir, batch_size=teacher.batch_size, bf16=teacher.bf16,
            shard_size=teacher.shard_size, max_seq_length=teacher.max_seq_length, desc="teacher: pairs")
        return rows

    return embed


def pairs_dataset(pairs: list[Pair], negatives: int):
    """``anchor, positive, negative_1..k`` columns (MNRL reads extra columns as negatives)."""
    from datasets import Dataset

    columns: dict[str, list[str]] = {"anchor": [p.anchor for p in pairs], "positive": [p.positive for p in pairs]}
    for j in range(negatives):
        columns[f"negative_{j + 1}"] = [p.negatives[j] for p in pairs]
    return Dataset.from_dict(columns)


def category_rows(pairs: list[Pair], config: FinetuneConfig) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` for the category objective, prompts already prepended."""
    from medeir_rag.model.export import DOCUMENT_PROMPT, QUERY_PROMPT

    texts, labels = [], []
    for p in pairs:
        if "medquad_qtype" in config.category.fields and p.meta.get("qtype"):
            texts.append(QUERY_PROMPT + p.anchor)
            labels.append(f"qtype:{p.meta['qtype']}")
        if "medquad_collection" in config.category.fields and p.meta.get("collection"):
            texts.append(DOCUMENT_PROMPT + p.positive)
            labels.append(f"collection:{p.meta['collection']}")
        if "go_namespace" in config.category.fields and p.meta.get("ontology"):
            texts.append(DOCUMENT_PROMPT + p.positive)
            labels.append(f"go:{p.meta['ontology']}")
        if "source" in config.category.fields:
            texts.append(DOCUMENT_PROMPT + p.positive)
            labels.append(f"source:{p.source}")
    return texts, labels


def category_dataset(pairs: list[Pair], config: FinetuneConfig):
    """A ``(text, label)`` dataset of ``category.num_examples`` rows with integer labels."""
    from datasets import Dataset

    texts, labels = category_rows(pairs, config)
    if len(set(labels)) < 2:
        raise ValueError("category objective needs at least two categories in the selected fields/sources")
    order = list(range(len(texts)))
    random.Random(config.data.seed + 1).shuffle(order)
    order = order[: config.category.num_examples]
    names = sorted({labels[i] for i in order})
    ids = {name: n for n, name in enumerate(names)}
    return Dataset.from_dict({"text": [texts[i] for i in order], "label": [ids[labels[i]] for i in order]}), names


class ScaledLoss(torch.nn.Module):
    """``weight * loss(features, labels)``: weights one objective of a multi-dataset run."""

    def __init__(self, loss: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.loss = loss
        self.weight = weight

    def forward(self, sentence_features, labels):
        return self.weight * self.loss(sentence_features, labels)

    def get_config_dict(self) -> dict[str, Any]:
        inner = self.loss.get_config_dict() if hasattr(self.loss, "get_config_dict") else {}
        return {"loss": type(self.loss).__name__, "weight": self.weight, **inner}


def matryoshka_dims(dims: list[int], hidden: int) -> list[int]:
    """Dims clipped to the hidden size, full size included, descending, unique."""
    return sorted({min(d, hidden) for d in dims} | {hidden}, reverse=True)


class TeacherGeometryLoss(torch.nn.Module):
    """MNRL plus ``weight * KL`` between the teacher's and the student's in-batch similarities.

    Contrastive pairs from a few sources pull the space toward their style (measured on a
    static model: +24 nDCG@10 on MedQuAD QA, -5 and -6 on two kept-out medical sets); the
    KL term (``distill.similarity_kl``, anchors and positives separately) keeps the rest of
    the geometry the distillation stage learnt. ``labels`` are the teacher embeddings,
    ``(batch, 2, teacher_dim)``: anchor, positive.
    """

    def __init__(self, model, mnrl: torch.nn.Module, weight: float, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.mnrl = mnrl
        self.weight = weight
        self.temperature = temperature

    def forward(self, sentence_features, labels):
        from sentence_transformers.base.losses.merged_forward import embed_columns

        from .distill import similarity_kl

        embeddings = embed_columns(self.model, sentence_features)
        loss = self.mnrl.compute_loss_from_embeddings(embeddings, None)
        geometry = (similarity_kl(embeddings[0], labels[:, 0], self.temperature)
                    + similarity_kl(embeddings[1], labels[:, 1], self.temperature)) / 2
        return loss + self.weight * geometry

    def get_config_dict(self) -> dict[str, Any]:
        return {"weight": self.weight, "temperature": self.temperature, **self.mnrl.get_config_dict()}


def teacher_labels(pairs: list[Pair], embed) -> list[list[list[float]]]:
    """Per pair ``[teacher(anchor), teacher(positive)]``, the ``label`` column of the geometry term."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p.anchor, p.positive)))
    index = {t: i for i, t in enumerate(texts)}
    vectors = embed(texts)
    return [[vectors[index[p.anchor]].tolist(), vectors[index[p.positive]].tolist()] for p in pairs]


def build_pair_loss(model, config: FinetuneConfig):
    from sentence_transformers.sentence_transformer import losses

    if config.teacher_geometry > 0:
        if config.loss != "mnrl":
            raise ValueError("teacher_geometry works with loss: mnrl")
        mnrl = losses.MultipleNegativesRankingLoss(model, scale=config.scale)
        base = TeacherGeometryLoss(model, mnrl, config.teacher_geometry, 1.0 / config.scale)
    elif config.loss == "cached_mnrl":
        base = losses.CachedMultipleNegativesRankingLoss(
            model, scale=config.scale, mini_batch_size=config.mini_batch_size, show_progress_bar=False
        )
    else:
        base = losses.MultipleNegativesRankingLoss(model, scale=config.scale)
    if not config.matryoshka.enabled:
        return base, None
    dims = matryoshka_dims(config.matryoshka.dims, model.get_embedding_dimension())
    return losses.MatryoshkaLoss(model, base, matryoshka_dims=dims), dims


def hf_schedule(optim: OptimSection) -> tuple[str, dict[str, Any]]:
    """Our schedule names -> transformers' ``lr_scheduler_type`` (+ kwargs)."""
    if optim.schedule == "constant":
        return "constant_with_warmup", {}
    if optim.schedule == "cosine":
        return "cosine_with_min_lr", {"min_lr_rate": optim.min_lr_ratio}
    return "linear", {}  # transformers' linear decays to 0 (min_lr_ratio applies to cosine only)


def training_arguments(args_cls, out: Path, optim: OptimSection, train: StTrain, device: str, **extra):
    """Fill a (SentenceTransformer|CrossEncoder)TrainingArguments from our sections."""
    schedule, schedule_kwargs = hf_schedule(optim)
    warmup = optim.warmup_steps if optim.warmup_steps is not None else optim.warmup_ratio
    return args_cls(
        output_dir=str(out / "checkpoints"),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=optim.lr,
        weight_decay=optim.weight_decay,
        adam_beta1=optim.betas[0],
        adam_beta2=optim.betas[1],
        adam_epsilon=optim.eps,
        max_grad_norm=optim.grad_clip or 0.0,
        warmup_steps=warmup,
        lr_scheduler_type=schedule,
        lr_scheduler_kwargs=schedule_kwargs,
        logging_steps=train.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        seed=train.seed,
        data_seed=train.seed,
        bf16=use_bf16(train.bf16, device),
        use_cpu=device == "cpu",
        dataloader_drop_last=True,
        dataloader_num_workers=train.dataloader_num_workers,
        report_to="none",
        **extra,
    )


def last_trainer_checkpoint(out: Path) -> str | None:
    done = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(done[-1]) if done else None


def write_trainer_log(run: RunDir, log_history: list[dict[str, Any]], title: str) -> list[dict[str, Any]]:
    """``metrics.jsonl`` and ``loss_curve.png`` from ``trainer.state.log_history``."""
    rows = [r for r in log_history if "step" in r]
    if run.is_main:
        run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        loss_keys = sorted({k for r in rows for k in r if k.endswith("loss") and not k.startswith("train_")})
        plot_curves(rows, run.path / "loss_curve.png", [loss_keys, ["learning_rate"], ["grad_norm"]],
                    title=title, smooth=tuple(loss_keys))
    return rows


# ----------------------------------------------------------------------------
# Training


def train(config: FinetuneConfig) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import BatchAllTripletLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    from medeir_rag.model.export import DOCUMENT_PROMPT, QUERY_PROMPT, write_remote_code

    if not config.init:
        raise ValueError("finetune needs init=<pretrain final/ folder> (--init)")
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    out = Path(config.out_dir)
    run = RunDir(out, is_main=int(os.environ.get("RANK", 0)) == 0)
    run.write_config(config)
    seed_everything(config.train.seed)
    device = resolve_st_device(config.train.device)

    model = load_init_model(config.init, out / INIT_DIR, device)
    saved_window = model.max_seq_length
    model.max_seq_length = min(config.train.max_seq_length, saved_window or config.train.max_seq_length)

    eval_pairs = heldout_medquad_pairs(config.data, config.data.eval_pairs)
    if len(eval_pairs) < 2:
        raise ValueError("fewer than 2 held-out MedQuAD training pairs: raise data.holdout_percent or max_records")
    t0 = time.perf_counter()
    pairs, counts = build_pairs(config.data, exclude_texts={t for p in eval_pairs for t in (p.anchor, p.positive)})
    teacher_filter: dict[str, int] | None = None
    if config.teacher is not None and config.data.hard_negatives > 0:
        mine_hard_negatives(pairs, config.data, count=max(config.teacher_candidates, config.data.hard_negatives))
        teacher_filter = drop_teacher_false_negatives(pairs, teacher_embedder(config), config.data.hard_negatives,
                                                      config.data.seed)
        print0(f"teacher filter: {teacher_filter}")
    else:
        mine_hard_negatives(pairs, config.data)
    print0(f"pairs: {len(pairs)} {counts}, {config.data.hard_negatives} BM25 negatives each "
           f"({time.perf_counter() - t0:.1f}s); eval: {len(eval_pairs)} held-out MedQuAD pairs")

    mrr_before = retrieval_mrr(model, eval_pairs)
    mrr_bm25 = bm25_mrr(eval_pairs)
    print0(f"MRR@10 before: {mrr_before:.4f} (BM25: {mrr_bm25:.4f})")

    pair_loss, dims = build_pair_loss(model, config)
    datasets: dict[str, Any] = {"pairs": pairs_dataset(pairs, config.data.hard_negatives)}
    if config.teacher_geometry > 0:
        datasets["pairs"] = datasets["pairs"].add_column("label", teacher_labels(pairs, teacher_embedder(config)))
    losses: dict[str, torch.nn.Module] = {"pairs": pair_loss}
    category_names: list[str] = []
    if config.category.weight > 0:
        datasets["categories"], category_names = category_dataset(pairs, config)
        losses["categories"] = ScaledLoss(BatchAllTripletLoss(model, margin=config.category.margin),
                                          config.category.weight)
        print0(f"category objective: {len(datasets['categories'])} rows, {len(category_names)} labels, "
               f"weight {config.category.weight}")
    prompts = {"anchor": QUERY_PROMPT, "positive": DOCUMENT_PROMPT}
    prompts.update({f"negative_{j + 1}": DOCUMENT_PROMPT for j in range(config.data.hard_negatives)})

    args = training_arguments(
        SentenceTransformerTrainingArguments, out, config.optim, config.train, device,
        batch_sampler=BatchSamplers.NO_DUPLICATES, prompts=prompts,
    )
    multi = len(datasets) > 1
    trainer = SentenceTransformerTrainer(
        model=model, args=args,
        train_dataset=datasets if multi else datasets["pairs"],
        loss=losses if multi else losses["pairs"],
    )
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last_trainer_checkpoint(out))
    train_seconds = time.perf_counter() - t_train

    model.max_seq_length = saved_window
    mrr_after = retrieval_mrr(model, eval_pairs)
    final = out / FINAL_DIR
    if run.is_main:
        if final.exists():
            shutil.rmtree(final)
        model.save(str(final))
        write_remote_code(final)  # ST's save keeps config.json's auto_map but not the code files
    rows = write_trainer_log(run, trainer.state.log_history, "contrastive fine-tuning")
    losses_logged = [r["loss"] for r in rows if "loss" in r]
    summary = {
        "stage": "finetune",
        "init": str(config.init),
        "pairs": len(pairs),
        "pairs_per_source": counts,
        "hard_negatives": config.data.hard_negatives,
        "teacher": None if config.teacher is None else config.teacher.name,
        "teacher_filter": teacher_filter,
        "teacher_geometry": config.teacher_geometry,
        "matryoshka_dims": dims,
        "category_labels": len(category_names),
        **trainer_run_stats(trainer, result, run, losses_logged, train_seconds),
        "eval_pairs": len(eval_pairs),
        "mrr@10_before": round(mrr_before, 4),
        "mrr@10_after": round(mrr_after, 4),
        "mrr@10_bm25": round(mrr_bm25, 4),
        "output": str(final),
    }
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------
# Command line

def build_parser():
    return trainer_stage_parser("finetune", __doc__.split("\n\n")[0], init_help="pretrain final/ folder (or an ST folder) to start from")


def main(argv: list[str] | None = None) -> int:
    return run_trainer_stage("finetune", "finetune", build_parser(), train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
