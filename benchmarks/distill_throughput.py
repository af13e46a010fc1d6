"""How fast does an embedding-distillation step run with length-grouped forwards, against one padded forward?

``medeir distill`` forwards each batch of 64 texts in length-sorted groups of at most
``train.micro_batch_tokens`` padded tokens (``training/distill.py::pooled_in_length_groups``)
instead of one forward padded to the batch's longest text. This measures what that buys.

- **Texts**: the `cpu` preset's distillation texts (the allowed training text of
  ``../shared/data``, never an evaluation corpus), the batches of its first ``--steps``
  optimizer steps, the same batches for every setting.
- **Student**: ``--model`` (default: the bundled model) plus a random projection to the
  teacher's 384 dimensions; the targets are random unit vectors (the time of a step does not
  depend on them), so no teacher pass is needed.
- **Each setting** runs one untimed warm-up step, then ``--steps`` timed full steps
  (forward, the distillation loss, backward, AdamW); the columns are real tokens/s,
  texts/s, the padded tokens the forwards computed, and the ratio to one padded forward
  measured in the same run. The embeddings of the two ways are equal (tested in
  ``tests/training/test_training_distill.py``).

Usage (from the project root, beside ../shared; ``$MEDEIR_DATA_DIR`` overrides the folder)::

    python benchmarks/distill_throughput.py --steps 10 --threads 2
    python benchmarks/distill_throughput.py --budgets 0 1024 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a medeir folder (default: the bundled model)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 2048, 1024, 512],
                        help="micro_batch_tokens values; 0 = one padded forward (the baseline)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    from medeir_rag.model.files import bundled_model_path
    from medeir_rag.model.modeling import MedeirModel
    from medeir_rag.model.tokenization import load_tokenizer
    from medeir_rag.training.config import load_config
    from medeir_rag.training.distill import Student, batch_indices, distillation_loss, distillation_texts, pooled_in_length_groups

    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = Path(args.model) if args.model else bundled_model_path()
    config = load_config("distill", "cpu")
    _, texts, _ = distillation_texts(config.data, "train")
    batches = [[texts[i] for i in batch_indices(0, len(texts), config.train.batch_size, step)]
               for step in range(args.steps + 1)]
    tokenizer = load_tokenizer(str(model_dir))
    cpu = torch.device("cpu")
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, {args.dtype}; {model_dir.name}; {len(texts)} texts, "
          f"{args.steps} steps of {config.train.batch_size}, max_seq_length {config.train.max_seq_length}", file=sys.stderr)

    rows = []
    for budget in args.budgets:
        torch.manual_seed(0)
        encoder = MedeirModel.from_pretrained(str(model_dir), use_safetensors=True, torch_dtype=torch.float32)
        student = Student(encoder, 384)
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
        seconds, tokens, padded, count = 0.0, 0, 0, 0
        for step, batch in enumerate(batches):
            t0 = time.perf_counter()
            with autocast:
                pooled, real = pooled_in_length_groups(student, tokenizer, batch, config.train.max_seq_length, cpu,
                                                       budget or None)
                projected = student.projection(pooled)
            targets = torch.nn.functional.normalize(torch.randn(len(batch), 384), dim=-1)
            loss, _ = distillation_loss(pooled, projected, targets, config)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:  # step 0 warms up
                seconds += time.perf_counter() - t0
                tokens += real
                count += len(batch)
                padded += padded_tokens(tokenizer, batch, config.train.max_seq_length, budget or None)
        rows.append((budget, tokens / seconds, count / seconds, padded / tokens))
        print(f"  budget {budget or 'one forward'}: {tokens / seconds:,.0f} tokens/s", file=sys.stderr)

    base = rows[0][1] if rows[0][0] == 0 else None
    print("| micro_batch_tokens | tokens/s | texts/s | padded / real tokens | vs one padded forward |")
    print("|---|---:|---:|---:|---:|")
    for budget, tokens_per_s, texts_per_s, padding in rows:
        ratio = f"{tokens_per_s / base:.2f}x" if base else "-"
        print(f"| {budget or 'none (one forward)'} | {tokens_per_s:,.0f} | {texts_per_s:.1f} | {padding:.2f} | {ratio} |")
    return 0


def padded_tokens(tokenizer, texts: list[str], max_length: int, budget: int | None) -> int:
    """The token positions the forwards compute, padding included."""
    from medeir_rag.training.distill import length_groups

    ids, groups = length_groups(tokenizer, texts, max_length, budget)
    return sum(len(group) * max(len(ids[i]) for i in group) for group in groups)


if __name__ == "__main__":
    sys.exit(main())
