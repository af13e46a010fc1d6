"""Pieces every training stage shares: CLI flags, seeding, devices, DDP, run folders, logs.

Design choices (nanochat's ``common.py``):

- **One argument parser shape for all stages**: ``--config`` (preset name or YAML path),
  ``--out``, repeated ``--set key.path=value``, plus a few per-stage flags that are just
  sugar for ``--set``. ``main(argv)`` is testable in-process.
- **DDP is torchrun's business**: ``setup_distributed`` reads ``RANK``/``WORLD_SIZE``/
  ``LOCAL_RANK`` and calls ``init_process_group`` (``nccl`` on CUDA, ``gloo`` on CPU)
  only when ``WORLD_SIZE > 1``. No launcher of our own.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/common.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medeir_rag.runtime import default_device, seed_everything  # noqa: F401  (seed_everything: the stages' import)

from .config import dump_config, load_config

# ----------------------------------------------------------------------------
# Command line


def use_bf16(setting: bool | str, device: str | torch.device) -> bool:
    """Whether a stage runs under bf16 autocast: ``True``/``"true"``/``"bfloat16"`` yes,
    ``False``/``"false"``/``"float32"`` no, ``"auto"`` where bf16 is measurably faster on ``device``.

    ``"auto"`` asks the same question as inference's ``precision="auto"``
    (``medeir_rag.inference.precision.resolve_precision``): a GPU with bf16, or a CPU with
    bf16 instructions whose bf16 matrix products a probe times at least 1.2x faster than fp32.
    Why not bf16 on every CPU with the flag: on a Xeon whose AMX the virtual machine hid,
    distillation ran 2.6-3.0 s a step in bf16 and 1.75 s in fp32; on Zen 4 bf16 was the
    faster (57 against 37 texts/s).
    """
    if setting in (True, "true", "bfloat16"):
        return True
    if setting in (False, "false", "float32"):
        return False
    from medeir_rag.inference.precision import resolve_precision

    return resolve_precision("auto", "torch", torch.device(device)) == "bf16"


def stage_parser(stage: str, description: str, default_config: str = "tiny") -> argparse.ArgumentParser:
    """The options every stage has; stages add their sugar flags to the returned parser."""
    p = argparse.ArgumentParser(prog=f"medeir {stage}", description=description)
    p.add_argument(
        "--config",
        default=default_config,
        help=f"preset name (tiny, cpu, small, base) or YAML path (default: {default_config})",
    )
    p.add_argument("--out", default=None, help="run folder (default: out_dir of the config; required if unset)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=1e-3 (repeatable; values parsed as YAML)",
    )
    return p


def resolve_stage_config(stage: str, args: argparse.Namespace, sugar: dict[str, str]) -> Any:
    """Load ``args.config`` with ``--set`` overrides; ``sugar`` maps flag attributes to dotted keys."""
    overrides = list(args.overrides)
    for attr, key in sugar.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    if args.out is not None:
        overrides.append(f"out_dir={args.out}")
    config = load_config(stage, args.config, overrides)
    if not config.out_dir:
        raise SystemExit(f"medeir {stage}: give an output folder with --out")
    return config


# ----------------------------------------------------------------------------
# Runtime


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available (``cuda:LOCAL_RANK`` under torchrun), else ``cpu``."""
    if name == "auto":
        name = default_device()
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a torchrun job (``world_size == 1`` without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun describes in the environment (no-op for one process)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    dist = Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), world_size)
    if dist.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    return dist


def cleanup_distributed(dist: Dist) -> None:
    if dist.enabled and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch.distributed.barrier()


_IS_MAIN = int(os.environ.get("RANK", 0)) == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushes, so logs interleave sanely with tqdm)."""
    if _IS_MAIN:
        print(*args, **kwargs, flush=True)


def progress_disabled(dist: Dist) -> bool | None:
    """tqdm's ``disable``: off on ranks > 0, automatic (no bar without a TTY... unless forced) on rank 0."""
    return True if not dist.is_main else None


# ----------------------------------------------------------------------------
# Run folder


class RunDir:
    """The output folder of one stage run; writes only on the main process."""

    def __init__(self, path: str | os.PathLike[str], *, is_main: bool = True) -> None:
        self.path = Path(path)
        self.is_main = is_main
        if is_main:
            self.path.mkdir(parents=True, exist_ok=True)
        self.metrics_file = self.path / "metrics.jsonl"
        self.started = time.time()

    def write_config(self, config: Any) -> None:
        if self.is_main:
            dump_config(config, self.path / "config.yaml")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop logged rows with ``step > after_step`` (a resume replays those steps)."""
        if not self.is_main or not self.metrics_file.is_file():
            return
        rows = read_metrics(self.metrics_file)
        kept = [r for r in rows if r.get("step", 0) <= after_step]
        self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, row: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path / name
        if self.is_main:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Save ``summary.json`` and print it as an aligned table (rank 0)."""
        self.write_json("summary.json", summary)
        if self.is_main:
            print_summary(summary)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def print_summary(summary: dict[str, Any], file=None) -> None:
    """Print a flat ``key  value`` table; nested dicts are flattened with dots."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", summary)
    width = max((len(k) for k in flat), default=0)
    out = file or sys.stdout
    print("-" * (width + 20), file=out)
    for key, value in flat.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        print(f"{key:<{width}}  {value}", file=out)
    print("-" * (width + 20), file=out, flush=True)


def format_seconds(seconds: float) -> str:
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


# ----------------------------------------------------------------------------
# Command line shared by the sentence-transformers trainer stages (finetune, reranker)

TRAINER_SUGAR = {"init": "init", "max_steps": "train.max_steps", "epochs": "train.epochs", "lr": "optim.lr",
                 "seed": "train.seed", "device": "train.device", "data_dir": "data.data_dir"}


def trainer_stage_parser(command: str, description: str, init_help: str) -> argparse.ArgumentParser:
    """``stage_parser`` plus the flag shortcuts both trainer stages take (see ``TRAINER_SUGAR``)."""
    p = stage_parser(command, description, default_config="tiny")
    p.add_argument("--init", default=None, help=init_help)
    p.add_argument("--max-steps", type=int, default=None, help="= --set train.max_steps=N")
    p.add_argument("--epochs", type=float, default=None, help="= --set train.epochs=X")
    p.add_argument("--lr", type=float, default=None, help="= --set optim.lr=X")
    p.add_argument("--seed", type=int, default=None, help="= --set train.seed=N")
    p.add_argument("--device", default=None, help="= --set train.device=D")
    p.add_argument("--data-dir", default=None, help="= --set data.data_dir=DIR")
    return p


def run_stage(stage: str, command: str, parser: argparse.ArgumentParser, sugar: dict[str, str], train, argv) -> int:
    """Parse, resolve the config, train; a bad corpus or path is one clear line and exit code 1."""
    config = resolve_stage_config(stage, parser.parse_args(argv), sugar)
    try:
        train(config)
    except (ValueError, FileNotFoundError) as error:
        print(f"medeir {command}: {error}", file=sys.stderr)
        return 1
    return 0


def run_trainer_stage(stage: str, command: str, parser: argparse.ArgumentParser, train, argv) -> int:
    """``run_stage`` with the flag shortcuts of the sentence-transformers trainer stages."""
    return run_stage(stage, command, parser, TRAINER_SUGAR, train, argv)


def trainer_run_stats(trainer: Any, result: Any, run: RunDir, losses: list[float], train_seconds: float) -> dict:
    """The summary fields every sentence-transformers trainer stage reports the same way."""
    return {
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "wall_time": format_seconds(time.time() - run.started),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "train_loss": getattr(result, "training_loss", None),
    }
