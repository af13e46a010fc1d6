"""MLM pretraining stage: a plain PyTorch loop from a corpus to ``final/`` (an HF MLM folder).

Usage::

    python -m medeir_rag.training.pretrain --config cpu --out runs/pretrain-cpu
    torchrun --nproc_per_node 8 -m medeir_rag.training.pretrain --config base --out runs/pretrain-base
    # interrupted? run the same command again: it resumes from the last checkpoint

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/pretrain.py``.
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
from safetensors.torch import load_model, save_model
from tqdm import tqdm

from medeir_rag.model.configuration import MedeirConfig
from medeir_rag.model.modeling import MedeirForMaskedLM
from medeir_rag.model.tokenization import DEFAULT_TOKENIZER_DIR, load_tokenizer

from .common import (
    Dist,
    RunDir,
    barrier,
    cleanup_distributed,
    format_seconds,
    print0,
    resolve_device,
    run_stage,
    seed_everything,
    setup_distributed,
    stage_parser,
    use_bf16,
)
from .config import OptimSection, PretrainConfig
from .corpus import MANIFEST, build_corpus, read_manifest
from .mlm_data import (
    PackedWindows,
    bits_per_byte,
    build_token_cache,
    cache_dir_for,
    load_stream,
    mask_tokens,
    mixing_seed,
    phase_bounds,
    sample_indices,
    token_byte_lengths,
)
from .plots import plot_curves

CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"

# ----------------------------------------------------------------------------
# Optimizer and schedule


def build_optimizer(model: torch.nn.Module, optim: OptimSection) -> torch.optim.AdamW:
    """AdamW; matrices and embeddings decay, biases and LayerNorm weights do not."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps)


def lr_multiplier(step: int, max_steps: int, optim: OptimSection) -> float:
    """Linear warmup to 1, then constant, linear or cosine decay to ``min_lr_ratio``."""
    warmup = optim.warmup_steps if optim.warmup_steps is not None else round(optim.warmup_ratio * max_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if optim.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    floor = optim.min_lr_ratio
    if optim.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)


# ----------------------------------------------------------------------------
# Checkpoints


def checkpoint_path(out: Path, step: int) -> Path:
    return out / CHECKPOINT_DIR / f"step_{step:06d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint (``state.json`` is written last)."""
    done = sorted(p for p in (out / CHECKPOINT_DIR).glob("step_*") if (p / "state.json").is_file())
    return done[-1] if done else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: Path, step: int, model: torch.nn.Module, optimizer, scheduler, state: dict[str, Any], dist: Dist, keep: int
) -> Path:
    """Write ``checkpoints/step_XXXXXX``: every rank its RNG file, rank 0 the rest (state.json last)."""
    path = checkpoint_path(out, step)
    if dist.is_main:
        path.mkdir(parents=True, exist_ok=True)
    barrier(dist)
    torch.save(rng_state(), path / f"rng_rank{dist.rank}.pt")
    barrier(dist)
    if dist.is_main:
        save_model(model, str(path / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path / "optimizer.pt")
        (path / "state.json").write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
        old = sorted(p for p in (out / CHECKPOINT_DIR).glob("step_*") if p != path)
        for stale in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    barrier(dist)
    return path


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, dist: Dist) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNG; return ``state.json``."""
    load_model(model, str(path / "model.safetensors"))
    blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng_file = path / f"rng_rank{dist.rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "state.json").read_text())


# ----------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    windows: PackedWindows | None,
    config: PretrainConfig,
    token_bytes: torch.Tensor,
    device: torch.device,
    autocast,
    dist: Dist,
    mask_id: int,
) -> dict[str, float]:
    """Held-out MLM loss, accuracy and bits per byte on fixed windows with fixed masks."""
    if windows is None or len(windows) == 0:
        return {}
    was_training = model.training
    model.eval()
    n = min(len(windows), config.eval.max_sequences)
    totals = torch.zeros(4, dtype=torch.float64)  # nats, correct, targets, bytes
    batches = range(0, n, config.eval.batch_size)
    for b, start in enumerate(batches):
        if b % dist.world_size != dist.rank:
            continue
        ids = windows.get(np.arange(start, min(n, start + config.eval.batch_size)))
        generator = torch.Generator().manual_seed(mixing_seed(config.train.seed, 10**9, b))
        inputs, labels = mask_tokens(
            ids, vocab_size=model.config.vocab_size, mask_id=mask_id, rate=config.data.mask_rate,
            mask_prob=config.data.mask_token_prob, random_prob=config.data.random_token_prob, generator=generator,
        )
        with autocast:
            out = model(input_ids=inputs.to(device), labels=labels.to(device))
        targets = labels[labels != -100].to(device)
        logits = out.masked_logits.float()
        nats = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        totals += torch.tensor(
            [nats.item(), (logits.argmax(-1) == targets).sum().item(), targets.numel(),
             token_bytes[targets.cpu()].sum().item()],
            dtype=torch.float64,
        )
    if dist.enabled:
        totals = totals.to(device)
        torch.distributed.all_reduce(totals)
        totals = totals.cpu()
    model.train(was_training)
    nats, correct, count, num_bytes = totals.tolist()
    return {
        "val_loss": nats / max(count, 1),
        "val_accuracy": correct / max(count, 1),
        "val_bpb": bits_per_byte(nats, num_bytes),
        "val_tokens": int(count),
    }


# ----------------------------------------------------------------------------
# Training


def prepare_data(config: PretrainConfig, out: Path, tokenizer, dist: Dist) -> tuple[Path, Path]:
    """Corpus (prepared unless given) and token cache, built by rank 0; returns their folders."""
    corpus_dir = Path(config.data.corpus) if config.data.corpus else out / "corpus"
    if dist.is_main:
        if not (corpus_dir / MANIFEST).is_file():
            if config.data.corpus:
                raise FileNotFoundError(f"data.corpus={corpus_dir} is not a prepared corpus (no {MANIFEST})")
            corpus_config = _corpus_config(config)
            print0(f"preparing corpus into {corpus_dir} ...")
            manifest = build_corpus(corpus_config, corpus_dir)
            print0(f"corpus: {manifest['train']['docs']} train docs, {manifest['train']['tokens']} tokens "
                   f"({manifest['seconds']}s)")
        elif not config.data.corpus:
            wanted = _corpus_config(config).model_dump(mode="json")
            if read_manifest(corpus_dir)["config"] != wanted:
                raise ValueError(f"{corpus_dir} was prepared with another data.corpus_config; "
                                 "delete it or use a new --out")
        build_token_cache(corpus_dir, tokenizer, out / "cache")
    barrier(dist)
    return corpus_dir, cache_dir_for(corpus_dir, tokenizer, out / "cache")


def _corpus_config(config: PretrainConfig):
    """``data.corpus_config``, counting tokens with the run's tokenizer."""
    corpus_config = config.data.corpus_config
    if corpus_config.tokenizer is None and config.data.tokenizer:
        corpus_config = corpus_config.model_copy(update={"tokenizer": config.data.tokenizer})
    return corpus_config


def build_model(config: PretrainConfig, tokenizer) -> MedeirForMaskedLM:
    model_config = MedeirConfig.from_preset(
        config.model.preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **config.model.overrides()
    )
    return MedeirForMaskedLM(model_config)


def train(config: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) pretraining as configured; returns the summary."""
    device = resolve_device(config.train.device)
    dist = setup_distributed(device)
    try:
        return _train(config, device, dist)
    finally:
        cleanup_distributed(dist)


def _train(config: PretrainConfig, device: torch.device, dist: Dist) -> dict[str, Any]:
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    out = Path(config.out_dir)
    run = RunDir(out, is_main=dist.is_main)
    tokenizer = load_tokenizer(config.data.tokenizer or DEFAULT_TOKENIZER_DIR)
    corpus_dir, cache = prepare_data(config, out, tokenizer, dist)
    train_stream, heldout_stream = load_stream(cache, "train"), load_stream(cache, "heldout")
    cls_id = tokenizer.cls_token_id

    phases = config.data.curriculum
    bounds = phase_bounds([p.fraction for p in phases], config.train.max_steps)
    windows = [PackedWindows(train_stream, p.seq_len, cls_id) for p in phases]
    for p, w in zip(phases, windows, strict=True):
        if len(w) == 0:
            raise ValueError(
                f"corpus {corpus_dir} has {len(train_stream)} training tokens: not enough for one "
                f"sequence of {p.seq_len} tokens; add text or shorten data.curriculum"
            )
    eval_len = min(config.eval.seq_len, max(8, len(heldout_stream) - 1))
    eval_windows = PackedWindows(heldout_stream, eval_len, cls_id) if len(heldout_stream) > 8 else None
    if eval_windows is None or len(eval_windows) == 0:
        print0("warning: no held-out tokens; held-out metrics are skipped")
        eval_windows = None

    seed_everything(config.train.seed)
    model = build_model(config, tokenizer)
    model.to(device)
    optimizer = build_optimizer(model, config.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, config.train.max_steps, config.optim)
    )
    token_bytes = token_byte_lengths(tokenizer)

    identity = {"model": config.model.model_dump(), "max_steps": config.train.max_steps,
                "curriculum": [p.model_dump() for p in phases], "seed": config.train.seed}
    state: dict[str, Any] = {"tokens_seen": 0, "train_seconds": 0.0, "loss_ema": 0.0, "ema_steps": 0, **identity}
    start_step = 0
    resume_from = latest_checkpoint(out)
    if resume_from is not None:
        saved = json.loads((resume_from / "state.json").read_text())
        changed = [k for k, v in identity.items() if json.dumps(saved.get(k)) != json.dumps(v)]
        if changed:
            raise ValueError(
                f"{out} holds a checkpoint of a different run ({', '.join(changed)} differ); "
                "use a new --out or delete its checkpoints/"
            )
        state = load_checkpoint(resume_from, model, optimizer, scheduler, dist)
        start_step = state["step"]
        print0(f"resumed from {resume_from} (step {start_step}, {state['tokens_seen']:,} tokens seen)")
        run.truncate_metrics(start_step)
    run.write_config(config)

    bf16 = use_bf16(config.train.dtype, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    raw_model = model
    if config.train.compile:
        model = torch.compile(model)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    model.train()

    n_params = sum(p.numel() for p in raw_model.parameters())
    n_embed = raw_model.medeir.embeddings.word_embeddings.weight.numel()
    print0(
        f"model {config.model.preset}{config.model.overrides() or ''}: {n_params / 1e6:.2f}M params "
        f"({(n_params - n_embed) / 1e6:.2f}M non-embedding); train stream {len(train_stream):,} tokens, "
        f"held-out {len(heldout_stream):,}; phases "
        + ", ".join(f"L={p.seq_len} steps {bounds[i]}-{bounds[i + 1]}" for i, p in enumerate(phases))
        + f"; world size {dist.world_size}; device {device}"
    )

    accum = config.train.grad_accum
    last_metrics: dict[str, Any] = {}
    if start_step == 0:  # the untrained baseline (about ln(vocab)), the first point of the curve
        metrics = evaluate(raw_model, eval_windows, config, token_bytes, device, autocast, dist, tokenizer.mask_token_id)
        if metrics:
            run.log({"step": 0, **metrics})
            print0(f"step 0: val_loss {metrics['val_loss']:.4f} acc {metrics['val_accuracy']:.3f} "
                   f"bpb {metrics['val_bpb']:.3f}")
    stop_at = min(config.train.stop_at or config.train.max_steps, config.train.max_steps)
    bar = tqdm(total=config.train.max_steps, initial=start_step, desc="pretrain", unit="step",
               disable=True if not dist.is_main else None, file=sys.stderr, dynamic_ncols=True)
    log_t0, log_tokens = time.perf_counter(), 0
    step = start_step
    while step < stop_at:
        phase = max(i for i in range(len(phases)) if bounds[i] <= step)
        seq_len = phases[phase].seq_len
        micro = max(1, config.train.batch_tokens // accum // seq_len)
        global_batch = micro * accum * dist.world_size
        step_t0 = time.perf_counter()
        loss_sum = 0.0
        for m in range(accum):
            first = (step - bounds[phase]) * global_batch + (m * dist.world_size + dist.rank) * micro
            ids = windows[phase].get(sample_indices(config.train.seed, phase, len(windows[phase]), first, micro))
            generator = torch.Generator().manual_seed(mixing_seed(config.train.seed, step, m, dist.rank))
            inputs, labels = mask_tokens(
                ids, vocab_size=raw_model.config.vocab_size, mask_id=tokenizer.mask_token_id,
                rate=config.data.mask_rate, mask_prob=config.data.mask_token_prob,
                random_prob=config.data.random_token_prob, generator=generator,
            )
            sync = nullcontext() if (not dist.enabled or m == accum - 1) else model.no_sync()
            with sync, autocast:
                loss = model(input_ids=inputs.to(device), labels=labels.to(device)).loss
            (loss / accum).backward()
            loss_sum += loss.item()
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.optim.grad_clip)
            if config.optim.grad_clip else None
        )
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        step_tokens = micro * accum * seq_len * dist.world_size
        state["tokens_seen"] += step_tokens
        state["train_seconds"] += time.perf_counter() - step_t0
        loss_value = loss_sum / accum
        state["ema_steps"] += 1
        state["loss_ema"] = 0.9 * state["loss_ema"] + 0.1 * loss_value
        smooth = state["loss_ema"] / (1 - 0.9 ** state["ema_steps"])
        log_tokens += step_tokens
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.3f}", L=seq_len, lr=f"{lr:.2e}")

        if step % config.train.log_every == 0 or step == stop_at:
            elapsed = time.perf_counter() - log_t0
            if dist.enabled:
                t = torch.tensor([loss_value], device=device)
                torch.distributed.all_reduce(t)
                loss_value = t.item() / dist.world_size
            row = {
                "step": step, "loss": loss_value, "loss_smooth": smooth, "lr": lr, "seq_len": seq_len,
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "tokens_seen": state["tokens_seen"], "tokens_per_s": log_tokens / max(elapsed, 1e-9),
                "train_seconds": state["train_seconds"],
            }
            run.log(row)
            last_metrics.update(row)
            if bar.disable:  # no TTY (nohup, CI): a plain progress line instead of the bar
                print0(f"step {step}/{config.train.max_steps} loss {smooth:.4f} L={seq_len} lr {lr:.2e} "
                       f"{row['tokens_per_s']:.0f} tok/s {format_seconds(state['train_seconds'])}")
            log_t0, log_tokens = time.perf_counter(), 0
        if step % config.eval.every == 0 or step == config.train.max_steps:
            metrics = evaluate(
                raw_model, eval_windows, config, token_bytes, device, autocast, dist, tokenizer.mask_token_id
            )
            if metrics:
                run.log({"step": step, **metrics})
                last_metrics.update(metrics)
                if dist.is_main:
                    bar.write(f"step {step}: val_loss {metrics['val_loss']:.4f} acc {metrics['val_accuracy']:.3f} "
                              f"bpb {metrics['val_bpb']:.3f}")
        if step % config.train.checkpoint_every == 0 or step == stop_at:
            save_checkpoint(out, step, raw_model, optimizer, scheduler, state, dist, config.train.keep_checkpoints)
    bar.close()

    if step < config.train.max_steps:
        print0(f"stopped at step {step} of {config.train.max_steps} (train.stop_at); rerun to resume")
        return {"stopped_at": step}

    final = out / FINAL_DIR
    if dist.is_main:
        raw_model.save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
        rows = _read_rows(run)
        plot_curves(rows, out / "loss_curve.png", [["loss", "val_loss"], ["val_accuracy"], ["val_bpb"]],
                    title=f"MLM pretraining ({config.model.preset})", smooth=("loss",))
    first_eval = next((r for r in _read_rows(run) if "val_loss" in r), {}) if dist.is_main else {}
    summary = {
        "stage": "pretrain",
        "steps": step,
        "tokens_seen": state["tokens_seen"],
        "train_seconds": round(state["train_seconds"], 1),
        "wall_time": format_seconds(time.time() - run.started),
        "tokens_per_s": round(state["tokens_seen"] / max(state["train_seconds"], 1e-9), 1),
        "params": n_params,
        "params_non_embedding": n_params - n_embed,
        "world_size": dist.world_size,
        "final_train_loss": round(state["loss_ema"] / (1 - 0.9 ** max(1, state["ema_steps"])), 4),
        "first_val_loss": first_eval.get("val_loss"),
        **{f"final_{k}": v for k, v in last_metrics.items() if k.startswith("val_")},
        "output": str(final),
    }
    run.write_summary(summary)
    return summary


def _read_rows(run: RunDir) -> list[dict[str, Any]]:
    from .common import read_metrics

    return read_metrics(run.metrics_file)


# ----------------------------------------------------------------------------
# Command line


SUGAR = {"max_steps": "train.max_steps", "lr": "optim.lr", "seed": "train.seed", "device": "train.device",
         "corpus": "data.corpus", "tokenizer": "data.tokenizer"}


def build_parser():
    p = stage_parser("pretrain", __doc__.split("\n\n")[0], default_config="tiny")
    p.add_argument("--max-steps", type=int, default=None, help="= --set train.max_steps=N")
    p.add_argument("--lr", type=float, default=None, help="= --set optim.lr=X")
    p.add_argument("--seed", type=int, default=None, help="= --set train.seed=N")
    p.add_argument("--device", default=None, help="= --set train.device=D (auto, cpu, cuda)")
    p.add_argument("--corpus", default=None, help="= --set data.corpus=DIR (a prepared corpus)")
    p.add_argument("--tokenizer", default=None, help="= --set data.tokenizer=DIR")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_stage("pretrain", "pretrain", build_parser(), SUGAR, train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
