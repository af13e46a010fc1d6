"""Embedding distillation: the ALiBi encoder learns to reproduce the teacher's sentence embeddings.

Usage::

    python -m medeir_rag.training.distill --config cpu --init runs/distill-vocab-cpu --out runs/distill-cpu
    # interrupted? run the same command again: it resumes from the last checkpoint

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/distill.py``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medeir_rag.inference.encode import batches_by_token_budget
from medeir_rag.model.configuration import MedeirConfig
from medeir_rag.model.export import DOCUMENT_PROMPT, QUERY_PROMPT
from medeir_rag.model.modeling import MedeirModel, mean_pool
from medeir_rag.model.tokenization import load_tokenizer

from .common import (
    Dist,
    RunDir,
    format_seconds,
    print0,
    resolve_device,
    run_stage,
    seed_everything,
    stage_parser,
    use_bf16,
)
from .config import DistillConfig, DistillTexts, PairData
from .pairs import Pair, bm25_mrr, heldout_medquad_pairs, mrr_at_k, split_sentences
from .plots import plot_curves
from .pretrain import build_optimizer, latest_checkpoint, load_checkpoint, lr_multiplier, save_checkpoint
from .teacher import cached_teacher_embeddings, resolve_teacher
from .text_sources import (
    check_trainable,
    default_data_dir,
    document_text,
    is_held_out,
    iter_jsonl,
    record_key,
)

FINAL_DIR = "final"
QUERY_KINDS = ("medquad_question", "pubmed_title", "pubmed_sentence")
KIND_FILES = {
    "medquad": "medquad/medquad_train_pairs.jsonl.gz",
    "pubmed": "pretrain/pubmed_abstracts_bionlp.jsonl.gz",
    "bio": "pretrain/bio_sentences_scibert.jsonl.gz",
    "go": "pretrain/go_definitions.jsonl.gz",
    "wordnet": "general/wordnet30_glosses.jsonl.gz",
    "gcide": "general/gcide.jsonl.gz",
}
PASSAGE_SENTENCES = 4

# ----------------------------------------------------------------------------
# Texts


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def _records(name: str, data: DistillTexts, split: str):
    data_dir = Path(data.data_dir) if data.data_dir else default_data_dir()
    check_trainable(KIND_FILES[name])
    for n, record in enumerate(iter_jsonl(data_dir / KIND_FILES[name])):
        if data.max_records is not None and n >= data.max_records:
            break
        if is_held_out(record_key(record), data.holdout_percent) == (split == "heldout"):
            yield record


def texts_by_kind(data: DistillTexts, split: str = "train") -> dict[str, list[str]]:
    """Every candidate text of each kind in ``data.quotas`` (``train`` or ``heldout`` records)."""
    wanted = {k for k, v in data.quotas.items() if v > 0}
    kinds: dict[str, list[str]] = {k: [] for k in wanted}
    limit = data.max_chars
    if wanted & {"medquad_question", "medquad_answer"}:
        for r in _records("medquad", data, split):
            kinds.get("medquad_question", []).append(_clip(str(r.get("question") or ""), limit))
            kinds.get("medquad_answer", []).append(_clip(str(r.get("answer") or ""), limit))
    if wanted & {"pubmed_title", "pubmed_sentence", "pubmed_passage"}:
        for r in _records("pubmed", data, split):
            kinds.get("pubmed_title", []).append(_clip(str(r.get("title") or ""), limit))
            sentences = [s for s in split_sentences(str(r.get("text") or "")) if len(s.split()) >= 4]
            kinds.get("pubmed_sentence", []).extend(_clip(s, limit) for s in sentences)
            for start in range(0, len(sentences), PASSAGE_SENTENCES):
                kinds.get("pubmed_passage", []).append(_clip(" ".join(sentences[start:start + PASSAGE_SENTENCES]), limit))
    for kind, name in (("bio_sentence", "bio"), ("go_definition", "go"), ("wordnet_gloss", "wordnet"),
                       ("gcide_entry", "gcide")):
        if kind in wanted:
            kinds[kind] = [_clip(document_text(r), limit) for r in _records(name, data, split)]
    return {k: list(dict.fromkeys(t for t in v if t)) for k, v in kinds.items()}


def with_prompt(text: str, kind: str, rng: random.Random) -> str:
    """Query-like kinds get ``query: `` three times in four, the rest ``passage: `` (also 3:1)."""
    query_first = kind in QUERY_KINDS
    use_query = (rng.random() < 0.75) == query_first
    return (QUERY_PROMPT if use_query else DOCUMENT_PROMPT) + text


def distillation_texts(data: DistillTexts, split: str = "train", total: int | None = None) -> tuple[list[str], list[str], dict[str, int]]:
    """``(raw texts, prompted texts, counts per kind)``: each kind's quota drawn with a seeded RNG.

    ``total`` rescales the quotas (the validation set keeps the training mix).
    """
    rng = random.Random(data.seed + (0 if split == "train" else 1))
    pools = texts_by_kind(data, split)
    quotas = dict(data.quotas)
    if total is not None:
        scale = total / max(sum(quotas.values()), 1)
        quotas = {k: max(1, round(v * scale)) for k, v in quotas.items() if v > 0}
    seen: set[str] = set()
    raw, prompted, counts = [], [], {}
    for kind in sorted(pools):
        pool = pools[kind]
        rng.shuffle(pool)
        chosen = [t for t in pool if t not in seen][: quotas.get(kind, 0)]
        seen.update(chosen)
        counts[kind] = len(chosen)
        raw.extend(chosen)
        prompted.extend(with_prompt(t, kind, rng) for t in chosen)
    order = list(range(len(raw)))
    rng.shuffle(order)
    return [raw[i] for i in order], [prompted[i] for i in order], counts


# ----------------------------------------------------------------------------
# Model


def vocab_run_tokenizer(init: Path) -> str | None:
    """The tokenizer a distill-vocab run used (its ``config.yaml``), None for the shipped one."""
    import yaml

    config_file = init / "config.yaml"
    if not config_file.is_file():
        return None
    return (yaml.safe_load(config_file.read_text()) or {}).get("tokenizer")


def build_student(config: DistillConfig) -> tuple[MedeirModel, Any, str]:
    """The encoder to train, its tokenizer and how it was initialised."""
    from .distill_vocab import VECTORS_FILE, load_vectors

    init = Path(config.init) if config.init else None
    if init is not None and not init.is_dir():
        raise FileNotFoundError(f"init folder not found: {init}")
    if init is not None and (init / "config.json").is_file() and not (init / VECTORS_FILE).is_file():
        tokenizer = load_tokenizer(config.tokenizer or init)
        model = MedeirModel.from_pretrained(str(init), use_safetensors=True)
        how = f"weights of {init}"
        depth = config.model.num_hidden_layers
        if depth is not None and depth != model.config.num_hidden_layers:
            source_depth = model.config.num_hidden_layers
            model = grow_depth(model, depth)
            how += f", grown from {source_depth} to {depth} blocks (copies with zeroed residual outputs)"
        return model, tokenizer, how
    tokenizer_dir = config.tokenizer or (vocab_run_tokenizer(init) if init is not None else None)
    tokenizer = load_tokenizer(tokenizer_dir) if tokenizer_dir else load_tokenizer()
    model_config = MedeirConfig.from_preset(
        config.model.preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config.model.overrides()
    )
    model = MedeirModel(model_config)
    how = "random initialisation"
    if init is not None:
        vectors = torch.from_numpy(load_vectors(init)["embeddings"])
        expected = (model_config.vocab_size, model_config.hidden_size)
        if tuple(vectors.shape) != expected:
            raise ValueError(f"{init / VECTORS_FILE}: vectors of shape {tuple(vectors.shape)}, the encoder needs "
                             f"{expected} (run distill-vocab with dims={model_config.hidden_size} and this tokenizer)")
        set_token_embeddings(model, vectors)
        how = f"random initialisation, token embeddings from {init / VECTORS_FILE}"
    if config.zero_init_residual:
        zero_residual_outputs(model)
        how += ", zero-initialised residual outputs"
    return model, tokenizer, how


@torch.no_grad()
def set_token_embeddings(model: MedeirModel, vectors: torch.Tensor) -> None:
    """Copy static vectors into the token embeddings, each row rescaled to unit RMS (zero rows stay zero)."""
    rms = vectors.pow(2).mean(dim=1, keepdim=True).sqrt()
    model.embeddings.word_embeddings.weight.copy_(torch.where(rms > 0, vectors / rms.clamp(min=1e-12), 0.0))


@torch.no_grad()
def zero_residual_outputs(model: MedeirModel) -> None:
    """Every block's ``attention.out`` and ``mlp.wo`` set to zero: the blocks start as the identity."""
    for layer in model.layers:
        zero_block_outputs(layer)


@torch.no_grad()
def zero_block_outputs(layer: torch.nn.Module) -> None:
    """A pre-norm block with zero attention and feed-forward outputs is the identity."""
    for linear in (layer.attention.out, layer.mlp.wo):
        linear.weight.zero_()
        linear.bias.zero_()


@torch.no_grad()
def grow_depth(model: MedeirModel, num_layers: int) -> MedeirModel:
    """A deeper copy of ``model`` that computes exactly the same embeddings.

    Why: the distilled 4-block encoder stopped improving with more rounds of the same
    teacher signal (validation cosine loss 0.208 / 0.212 / 0.216 over three rounds) while
    its training loss stayed as high as its validation loss, the mark of a model short of
    capacity, not of data. Training a deeper encoder from the static vectors again would
    throw away three rounds of CPU time; growing keeps them. Target block ``j`` copies
    source block ``j * S // T`` (S source, T target blocks), so each new block sits right
    after the block it copies and starts from that block's features; a copy's attention and
    feed-forward output projections are zeroed, so with pre-norm residuals (``x + f(LN(x))``)
    it is the identity until training moves it, and the grown model starts exactly where the
    source model ended.
    """
    source = list(model.layers)
    if num_layers < len(source):
        raise ValueError(f"model.num_hidden_layers={num_layers}: cannot shrink a {len(source)}-block encoder")
    config = model.config.__class__.from_dict({**model.config.to_dict(), "num_hidden_layers": num_layers})
    grown = MedeirModel(config)
    grown.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("layers.")}, strict=False
    )
    seen: set[int] = set()
    for target, layer in enumerate(grown.layers):
        index = target * len(source) // num_layers
        layer.load_state_dict(source[index].state_dict())
        if index in seen:
            zero_block_outputs(layer)
        seen.add(index)
    return grown


class Student(torch.nn.Module):
    """The encoder plus the projection to the teacher's width used by the cosine term."""

    def __init__(self, encoder: MedeirModel, teacher_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.projection = torch.nn.Linear(encoder.config.hidden_size, teacher_dim, bias=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)


def similarity_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL between the teacher's and the student's softmax over each text's similarity to the *other* texts.

    The diagonal (a text's similarity to itself, always the largest) is masked out: left
    in, it takes nearly all the probability mass and the term says next to nothing.
    """
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    self_pairs = torch.eye(len(s), dtype=torch.bool, device=s.device)
    s_logits = (s @ s.T / temperature).masked_fill(self_pairs, -1e4)  # -inf would make 0 * inf = nan
    t_logits = (t @ t.T / temperature).masked_fill(self_pairs, -1e4)
    return F.kl_div(F.log_softmax(s_logits, dim=-1), F.log_softmax(t_logits, dim=-1), log_target=True,
                    reduction="batchmean")


def distillation_loss(student: torch.Tensor, projected: torch.Tensor, teacher: torch.Tensor,
                      config: DistillConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``cosine * (1 - cos(W s, t)) + kl * KL(teacher in-batch softmax || student's)``."""
    cos_term = (1 - F.cosine_similarity(projected.float(), teacher, dim=-1)).mean()
    kl_term = similarity_kl(student, teacher, config.loss.temperature)
    loss = config.loss.cosine * cos_term + config.loss.kl * kl_term
    return loss, {"cos_loss": cos_term.item(), "kl_loss": kl_term.item()}


# ----------------------------------------------------------------------------
# Batches and checks


def batch_indices(seed: int, count: int, batch_size: int, step: int) -> list[int]:
    """The texts of optimizer step ``step``: a fresh seeded permutation every epoch (drop-last)."""
    per_epoch = count // batch_size
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    return order[offset * batch_size:(offset + 1) * batch_size].tolist()


def tokenize(tokenizer, texts: list[str], max_length: int, device: torch.device) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt", verbose=False)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def length_groups(tokenizer, texts: list[str], max_length: int,
                  micro_batch_tokens: int | None) -> tuple[list[list[int]], list[list[int]]]:
    """``(token ids of each text, groups of text indices)``: the forwards a batch is cut into.

    Sorted by length and cut by a padded-token budget (the encode path's
    ``batches_by_token_budget``), so each group pads only to its own longest text; ``None``:
    one group, the whole batch padded to its longest text.
    """
    ids = tokenizer(texts, truncation=True, max_length=max_length, verbose=False)["input_ids"]
    if not micro_batch_tokens:
        return ids, [list(range(len(ids)))]
    lengths = [len(row) for row in ids]
    return ids, batches_by_token_budget(lengths, max(micro_batch_tokens, max(lengths)), len(ids))


def pooled_in_length_groups(student: Student, tokenizer, texts: list[str], max_length: int, device: torch.device,
                            micro_batch_tokens: int | None) -> tuple[torch.Tensor, int]:
    """``(pooled embeddings in the order of texts, real tokens)``, the batch forwarded in ``length_groups``.

    Why: a batch padded to its longest text (usually the ``max_seq_length`` cap) spends most
    of its FLOPs on padding when the mean text is far shorter. The loss still sees the whole
    batch at once (the in-batch KL needs every pair), and because attention masks padding and
    pooling ignores it, the embeddings equal one padded forward's to float rounding (tested).
    """
    ids, groups = length_groups(tokenizer, texts, max_length, micro_batch_tokens)
    pad = tokenizer.pad_token_id
    parts, order = [], []
    for group in groups:
        longest = max(len(ids[i]) for i in group)
        input_ids = torch.tensor([ids[i] + [pad] * (longest - len(ids[i])) for i in group], device=device)
        attention_mask = torch.tensor([[1] * len(ids[i]) + [0] * (longest - len(ids[i])) for i in group], device=device)
        parts.append(student(input_ids=input_ids, attention_mask=attention_mask))
        order.extend(group)
    inverse = torch.empty(len(order), dtype=torch.long, device=device)
    inverse[torch.tensor(order, device=device)] = torch.arange(len(order), device=device)
    return torch.cat(parts)[inverse], sum(len(row) for row in ids)


@torch.no_grad()
def validation_metrics(student: Student, tokenizer, texts: list[str], teacher: torch.Tensor, config: DistillConfig,
                       device: torch.device, autocast) -> dict[str, float]:
    student.eval()
    size = config.train.batch_size
    total, cos, kl, batches = 0.0, 0.0, 0.0, 0
    for start in range(0, len(texts) - 1, size):  # the last batch may be smaller (at least 2 texts)
        if len(texts) - start < 2:
            break
        with autocast:
            pooled, _ = pooled_in_length_groups(student, tokenizer, texts[start:start + size],
                                                config.train.max_seq_length, device, config.train.micro_batch_tokens)
            projected = student.projection(pooled)
        loss, parts = distillation_loss(pooled, projected, teacher[start:start + size].to(device), config)
        total += float(loss)
        cos += parts["cos_loss"]
        kl += parts["kl_loss"]
        batches += 1
    student.train()
    if not batches:
        return {}
    return {"val_loss": total / batches, "val_cos_loss": cos / batches, "val_kl_loss": kl / batches}


@torch.no_grad()
def encoder_mrr(encoder: MedeirModel, tokenizer, pairs: list[Pair], device: torch.device, max_length: int = 512) -> float:
    """MRR@10 of the raw encoder (mean pooling, prompts) on held-out MedQuAD training pairs."""
    encoder.eval()

    def embed(texts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(texts), 32):
            batch = tokenize(tokenizer, texts[start:start + 32], max_length, device)
            hidden = encoder(**batch).last_hidden_state
            rows.append(F.normalize(mean_pool(hidden, batch["attention_mask"]).float(), dim=-1))
        return torch.cat(rows)

    queries = embed([QUERY_PROMPT + p.anchor for p in pairs])
    docs = embed([DOCUMENT_PROMPT + p.positive for p in pairs])
    ranking = torch.argsort(queries @ docs.T, dim=1, descending=True)[:, :10].cpu().numpy()
    encoder.train()
    return mrr_at_k(ranking, 10)


# ----------------------------------------------------------------------------
# Training


def train(config: DistillConfig) -> dict[str, Any]:
    from medeir_rag.model.export import save_sentence_transformer

    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    out = Path(config.out_dir)
    run = RunDir(out)
    device = resolve_device(config.train.device)
    seed_everything(config.train.seed)

    t0 = time.perf_counter()
    raw_texts, texts, counts = distillation_texts(config.data, "train")
    val_raw, val_texts, _ = distillation_texts(config.data, "heldout", total=config.data.validation_texts)
    if len(texts) < config.train.batch_size:
        raise ValueError(f"{len(texts)} distillation texts: fewer than one batch of {config.train.batch_size}")
    print0(f"texts: {len(texts)} {counts}; validation {len(val_texts)} ({time.perf_counter() - t0:.1f}s)")
    teacher_kwargs = dict(batch_size=config.teacher.batch_size, bf16=config.teacher.bf16,
                          shard_size=config.teacher.shard_size, max_seq_length=config.teacher.max_seq_length)
    teacher_rows, teacher_stats = cached_teacher_embeddings(
        raw_texts + val_raw, config.teacher.name, config.teacher.cache_dir, desc="teacher: texts", **teacher_kwargs)
    teacher_all = torch.from_numpy(teacher_rows)
    targets, val_targets = teacher_all[: len(raw_texts)], teacher_all[len(raw_texts):]

    encoder, tokenizer, how = build_student(config)
    student = Student(encoder, targets.shape[1]).to(device)
    data_pairs = PairData(data_dir=config.data.data_dir, holdout_percent=config.data.holdout_percent,
                          max_records=config.data.max_records, seed=config.data.seed)
    eval_pairs = heldout_medquad_pairs(data_pairs, config.eval_pairs)

    per_epoch = len(texts) // config.train.batch_size
    max_steps = config.train.max_steps or max(1, math.ceil(config.train.epochs * per_epoch))
    optimizer = build_optimizer(student, config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, max_steps, config.optim))
    identity = {"model": config.model.model_dump(), "init": config.init, "max_steps": max_steps,
                "texts": len(texts), "seed": config.train.seed, "batch_size": config.train.batch_size}
    state: dict[str, Any] = {"tokens_seen": 0, "texts_seen": 0, "train_seconds": 0.0, **identity}
    dist = Dist()
    start_step = 0
    resume_from = latest_checkpoint(out)
    rescheduled: dict[str, Any] | None = None
    if resume_from is not None:
        saved = json.loads((resume_from / "state.json").read_text())
        changed = [k for k, v in identity.items() if json.dumps(saved.get(k)) != json.dumps(v)]
        if config.train.reschedule and "max_steps" in changed:
            changed.remove("max_steps")
            rescheduled = {"from_max_steps": saved.get("max_steps"), "to_max_steps": max_steps, "at_step": saved["step"]}
            print0(f"rescheduling: {rescheduled}")
        if changed:
            raise ValueError(f"{out} holds a checkpoint of a different run ({', '.join(changed)} differ); "
                             "use a new --out or delete its checkpoints/")
        state = load_checkpoint(resume_from, student, optimizer, scheduler, dist)
        start_step = state["step"]
        if rescheduled:
            state["max_steps"] = max_steps
            state.setdefault("reschedules", []).append(rescheduled)
        print0(f"resumed from {resume_from} (step {start_step})")
        run.truncate_metrics(start_step)
    run.write_config(config)

    bf16 = use_bf16(config.train.dtype, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    n_params = sum(p.numel() for p in encoder.parameters())
    print0(f"student: {n_params / 1e6:.2f}M params ({how}); {max_steps} steps of {config.train.batch_size} texts; "
           f"teacher {resolve_teacher(config.teacher.name)}; device {device}")

    if start_step == 0:
        mrr_before = encoder_mrr(encoder, tokenizer, eval_pairs, device) if len(eval_pairs) >= 2 else None
        metrics = validation_metrics(student, tokenizer, val_texts, val_targets, config, device, autocast)
        run.log({"step": 0, **metrics, "mrr@10": mrr_before})
        state["mrr@10_before"] = mrr_before
        print0(f"step 0: {metrics} mrr@10 {mrr_before}")
    student.train()
    stop_at = min(config.train.stop_at or max_steps, max_steps)
    bar = tqdm(total=max_steps, initial=start_step, desc="distill", unit="step", file=sys.stderr, dynamic_ncols=True)
    log_t0, log_tokens, log_texts = time.perf_counter(), 0, 0
    step = start_step
    last: dict[str, Any] = {}
    while step < stop_at:
        step_t0 = time.perf_counter()
        chosen = batch_indices(config.train.seed, len(texts), config.train.batch_size, step)
        with autocast:
            pooled, tokens = pooled_in_length_groups(student, tokenizer, [texts[i] for i in chosen],
                                                     config.train.max_seq_length, device, config.train.micro_batch_tokens)
            projected = student.projection(pooled)
        loss, parts = distillation_loss(pooled, projected, targets[chosen].to(device), config)
        loss.backward()
        loss_value = loss.item()
        grad_norm = (torch.nn.utils.clip_grad_norm_(student.parameters(), config.optim.grad_clip)
                     if config.optim.grad_clip else None)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["tokens_seen"] += tokens
        state["texts_seen"] += len(chosen)
        state["train_seconds"] += time.perf_counter() - step_t0
        log_tokens += tokens
        log_texts += len(chosen)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", cos=f"{parts['cos_loss']:.3f}", lr=f"{lr:.1e}")
        if step % config.train.log_every == 0 or step == stop_at:
            elapsed = time.perf_counter() - log_t0
            row = {"step": step, "loss": loss_value, **parts, "lr": lr,
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "tokens_per_s": log_tokens / max(elapsed, 1e-9), "texts_per_s": log_texts / max(elapsed, 1e-9),
                   "train_seconds": state["train_seconds"]}
            run.log(row)
            last.update(row)
            log_t0, log_tokens, log_texts = time.perf_counter(), 0, 0
        if step % config.train.eval_every == 0 or step == max_steps:
            metrics = validation_metrics(student, tokenizer, val_texts, val_targets, config, device, autocast)
            run.log({"step": step, **metrics})
            last.update(metrics)
            bar.write(f"step {step}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if step % config.train.checkpoint_every == 0 or step == stop_at:
            save_checkpoint(out, step, student, optimizer, scheduler, state, dist, config.train.keep_checkpoints)
    bar.close()
    if step < max_steps:
        print0(f"stopped at step {step} of {max_steps} (train.stop_at); rerun to resume")
        return {"stopped_at": step}

    mrr_after = encoder_mrr(encoder, tokenizer, eval_pairs, device) if len(eval_pairs) >= 2 else None
    final = out / FINAL_DIR
    if final.exists():
        shutil.rmtree(final)
    encoder.config.max_position_embeddings = max(encoder.config.max_position_embeddings, config.train.max_seq_length)
    save_sentence_transformer(encoder, tokenizer, final)
    rows = [json.loads(line) for line in run.metrics_file.read_text().splitlines() if line.strip()]
    plot_curves(rows, out / "loss_curve.png", [["loss", "val_loss"], ["cos_loss", "val_cos_loss"],
                                               ["kl_loss", "val_kl_loss"], ["lr"]],
                title=f"embedding distillation ({encoder.config.num_hidden_layers} x {encoder.config.hidden_size})", smooth=("loss", "cos_loss", "kl_loss"))
    first_val = next((r for r in rows if "val_loss" in r), {})
    summary = {
        "stage": "distill",
        "init": how,
        "teacher": str(resolve_teacher(config.teacher.name)),
        "texts": len(texts),
        "texts_per_kind": counts,
        "validation_texts": len(val_texts),
        "teacher_pass": teacher_stats,
        "steps": step,
        "epochs": round(step * config.train.batch_size / len(texts), 3),
        "tokens_seen": state["tokens_seen"],
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_s": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "texts_per_s": round(state["texts_seen"] / max(state["train_seconds"], 1e-9), 1),
        "wall_time": format_seconds(time.time() - run.started),
        "dtype": "bfloat16" if bf16 else "float32",
        "reschedules": state.get("reschedules", []),
        "params": n_params,
        "first_val_loss": first_val.get("val_loss"),
        "first_val_cos_loss": first_val.get("val_cos_loss"),
        **{f"final_{k}": v for k, v in last.items() if k.startswith("val_")},
        "final_train_loss": last.get("loss"),
        "eval_pairs": len(eval_pairs),
        "mrr@10_before": state.get("mrr@10_before"),
        "mrr@10_after": mrr_after,
        "mrr@10_bm25": bm25_mrr(eval_pairs) if len(eval_pairs) >= 2 else None,
        "output": str(final),
    }
    run.write_summary(summary)
    return summary


# ----------------------------------------------------------------------------
# Command line


def build_parser():
    p = stage_parser("distill", __doc__.split("\n\n")[0], default_config="tiny")
    p.add_argument("--init", default=None, help="distill-vocab run folder (or an HF medeir folder) to start from")
    p.add_argument("--teacher", default=None, help="= --set teacher.name=... (a sentence-transformers folder)")
    p.add_argument("--max-steps", type=int, default=None, help="= --set train.max_steps=N")
    p.add_argument("--data-dir", default=None, help="= --set data.data_dir=DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    sugar = {"init": "init", "teacher": "teacher.name", "max_steps": "train.max_steps", "data_dir": "data.data_dir"}
    return run_stage("distill", "distill", build_parser(), sugar, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
