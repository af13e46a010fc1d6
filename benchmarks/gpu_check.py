"""The CUDA paths, checked on a GPU: attention parity, bf16 throughput, 8k memory, speedrun tokens/s.

Nothing here has run yet: no GPU was lent to the work that wrote it. Until it runs, the CUDA
paths (compiled FlexAttention, flash-attn, bf16 autocast on CUDA, the GPU speedrun) are
untested. On a machine without a CUDA device it prints why and exits 0 without checking anything.

Sections (``--sections``, all by default; one failing section does not stop the others):

1. ``parity``: at each of ``--lengths`` (512, 2,048, 8,192 tokens), a padded batch (rows of
   L, 3L/4, L/2 and 17 real tokens). (a) Attention alone on random q/k/v: ``sdpa``, ``flex``
   (compiled FlexAttention) and ``flash`` (when flash-attn is installed) against the
   ``blocked`` maths in fp32; (b) the whole ``small`` encoder (random weights, initialiser std
   0.1 so attention matters) with each backend, fp32 and bf16 autocast, against ``blocked``
   fp32: max |difference| over real tokens and the lowest cosine of the mean-pooled vectors.
   Pass: cosine > 0.9999 in fp32 (max |diff| < 1e-3 for attention alone), > 0.99 in bf16.
2. ``throughput``: the ``small`` encoder's forward at 512 tokens, batch ``--batch-512``, bf16
   autocast and fp32, the ``auto`` backend; tokens/s and useful FLOP/s against the bf16 (and
   fp32/TF32) matrix-multiply peak measured with an 8,192^3 ``torch.matmul``.
3. ``memory``: peak CUDA memory (``max_memory_allocated``, above the weights) of one
   8,192-token document, bf16 and fp32, ``auto`` backend.
4. ``speedrun``: the first ``--speedrun-minutes`` (default 3) of the GPU speedrun's pretraining
   stage (``medeir_rag.training.pretrain --config small``, what ``speedrun_gpu.sh`` runs first)
   on a synthetic corpus (unique random-word documents; ``--data-dir`` uses the real allowed
   sources instead), then ``tokens_per_s`` from its ``metrics.jsonl``. The curriculum starts at
   128-token windows, so these minutes measure that phase.

Usage::

    python benchmarks/gpu_check.py --json gpu_check.json
    python benchmarks/gpu_check.py --sections parity memory --lengths 512 2048
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SECTIONS = ("parity", "throughput", "memory", "speedrun")
DEVICE = "cuda"  # "cpu" only for --_dry-run-cpu, which runs every code path small on a CPU (tests)


def no_cuda_reason() -> str | None:
    """Why there is nothing to check here (``None`` when a CUDA device is usable)."""
    try:
        import torch
    except ImportError as error:
        return f"torch is not importable ({error})"
    if not torch.cuda.is_available():
        return (f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return None


# -----------------------------------------------------------------------------
# Helpers (torch is imported only once a GPU is known to exist)


def _small_model(init_std: float = 0.02):
    import torch

    from medeir_rag import MedeirConfig, MedeirModel

    torch.manual_seed(0)
    config = MedeirConfig.from_preset("small", vocab_size=32768, initializer_range=init_std)
    return MedeirModel(config).to(DEVICE).eval()


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _autocast(dtype: str):
    import torch

    return torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == "bf16")


def _padded_batch(length: int, batch: int, vocab: int = 32768):
    import torch

    real = [length, 3 * length // 4, length // 2, 17][:batch]
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(5, vocab, (len(real), length), generator=generator)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(real):
        mask[row, :n] = 1
    return ids.masked_fill(mask == 0, 0).to(DEVICE), mask.to(DEVICE)


def _pooled(hidden, mask):
    weights = mask[..., None].float()
    return (hidden.float() * weights).sum(1) / weights.sum(1)


def _min_cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


def _timed_cuda(call, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of ``call`` with the GPU synchronised around each run."""
    for _ in range(warmup):
        call()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _useful_flops(model, lengths: list[int]) -> float:
    import torch

    weights = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    return float(sum(2 * weights * n + 4 * layers * hidden * n * n for n in lengths))


# -----------------------------------------------------------------------------
# 1. parity


def check_parity(lengths: list[int], batch: int) -> dict:
    import torch

    from medeir_rag.model.attention import (
        PackedAttention,
        PaddedAttention,
        alibi_slopes,
        flash_attn_available,
    )

    backends = ["sdpa", "flex", *(["flash"] if flash_attn_available() else [])]
    rows, failures = [], []
    heads, head_dim = 12, 32
    slopes = alibi_slopes(heads).to(DEVICE)
    model = _small_model(init_std=0.1)
    for length in lengths:
        ids, mask = _padded_batch(length, batch)
        # (a) attention alone, random q/k/v, fp32 (flash: bf16 against the fp32 maths)
        generator = torch.Generator(device=DEVICE).manual_seed(length)
        q, k, v = (torch.randn(ids.shape[0], heads, length, head_dim, device=DEVICE, generator=generator)
                   for _ in range(3))
        reference = PaddedAttention(slopes, mask, dtype=torch.float32, blocked=True, block_size=512)(q, k, v)
        keep = mask.bool()
        for backend in backends:
            started = time.perf_counter()
            if backend == "sdpa":
                got = PaddedAttention(slopes, mask, dtype=torch.float32, blocked=False, block_size=512)(q, k, v)
                got_real = got.transpose(1, 2)[keep]
            else:
                lengths_ = mask.sum(1, dtype=torch.int32)
                cu = torch.nn.functional.pad(lengths_.cumsum(0, dtype=torch.int32), (1, 0))
                packed = [x.transpose(1, 2)[keep] for x in (q, k, v)]  # (T, H, D)
                if backend == "flash":
                    packed = [x.bfloat16() for x in packed]
                got_real = PackedAttention(slopes, cu, int(lengths_.max()), backend=backend)(*packed).float()
            expected = reference.transpose(1, 2)[keep]
            error = float((got_real.float() - expected).abs().max())
            limit = 1e-3 if backend != "flash" else 5e-2
            row = {"check": "attention", "length": length, "backend": backend,
                   "dtype": "bf16" if backend == "flash" else "fp32", "max_abs_error": error,
                   "seconds": round(time.perf_counter() - started, 2), "pass": error < limit}
            rows.append(row)
        # (b) the whole encoder, fp32 and bf16, against blocked fp32
        with torch.inference_mode():
            model.config.attention_backend = "blocked"
            expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
            expected_pooled = _pooled(expected, mask)
            for backend in backends:
                for dtype in ("fp32", "bf16"):
                    if backend == "flash" and dtype == "fp32":
                        continue  # flash-attn runs in half precision only
                    model.config.attention_backend = backend
                    started = time.perf_counter()
                    with _autocast(dtype):
                        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                    cosine = _min_cosine(_pooled(hidden, mask), expected_pooled)
                    error = float((hidden.float() - expected)[mask.bool()].abs().max())
                    rows.append({"check": "encoder", "length": length, "backend": backend, "dtype": dtype,
                                 "min_cosine": cosine, "max_abs_error": error,
                                 "seconds": round(time.perf_counter() - started, 2),
                                 "pass": cosine > (0.9999 if dtype == "fp32" else 0.99)})
        model.config.attention_backend = "auto"
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    failures = [r for r in rows if not r["pass"]]
    for r in rows:
        measured = f"cosine {r['min_cosine']:.6f} " if "min_cosine" in r else ""
        print(f"  {r['check']:<9} L={r['length']:<5} {r['backend']:<5} {r['dtype']}: {measured}"
              f"max|err| {r['max_abs_error']:.2e} {'ok' if r['pass'] else 'FAIL'} ({r['seconds']} s)")
    return {"rows": rows, "pass": not failures}


# -----------------------------------------------------------------------------
# 2. throughput


def matmul_peaks(size: int = 8192) -> dict[str, float]:
    import torch

    peaks = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(size, size, device=DEVICE, dtype=dtype)
        b = torch.randn(size, size, device=DEVICE, dtype=dtype)
        seconds = _timed_cuda(lambda a=a, b=b: torch.matmul(a, b), repeats=10)
        peaks[name] = 2 * size**3 / seconds / 1e12
        del a, b
    torch.backends.cuda.matmul.allow_tf32 = True
    a = torch.randn(size, size, device=DEVICE)
    peaks["tf32"] = 2 * size**3 / _timed_cuda(lambda: torch.matmul(a, a), repeats=10) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    return peaks


def check_throughput(batch: int, matmul_size: int) -> dict:
    import torch

    from medeir_rag.model.attention import choose_backend

    model = _small_model()
    peaks = matmul_peaks(matmul_size)
    length = 512
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 32768, (batch, length), generator=generator).to(DEVICE)
    mask = torch.ones_like(ids)
    backend = choose_backend("auto", device=ids.device, batch_size=batch, num_heads=12, length=length,
                             blocked_threshold=model.config.blocked_attention_threshold, training=False, dropout=0.0)
    flops = _useful_flops(model, [length] * batch)
    rows = []
    for dtype in ("bf16", "fp32"):
        def forward(dtype=dtype):
            with torch.inference_mode(), _autocast(dtype):
                return model(input_ids=ids, attention_mask=mask).last_hidden_state

        seconds = _timed_cuda(forward, repeats=10 if DEVICE == "cuda" else 1, warmup=3 if DEVICE == "cuda" else 1)
        achieved = flops / seconds / 1e12
        peak = peaks["bf16"] if dtype == "bf16" else peaks["tf32"] if torch.backends.cuda.matmul.allow_tf32 else peaks["fp32"]
        rows.append({"dtype": dtype, "backend": backend, "batch": batch, "length": length,
                     "tokens_per_s": batch * length / seconds, "useful_tflops": achieved, "share_of_peak": achieved / peak})
        print(f"  {dtype} {backend} {batch}x{length}: {batch * length / seconds:,.0f} tokens/s, "
              f"{achieved:.1f} TFLOP/s = {100 * achieved / peak:.1f}% of the {dtype} matmul peak ({peak:.0f} TFLOP/s)")
    return {"matmul_peak_tflops": peaks, "rows": rows, "pass": True}


# -----------------------------------------------------------------------------
# 3. memory


def check_memory(length: int = 8192) -> dict:
    import torch

    model = _small_model()
    ids = torch.randint(5, 32768, (1, length)).to(DEVICE)
    mask = torch.ones_like(ids)
    cuda = DEVICE == "cuda"
    rows = []
    for dtype in ("bf16", "fp32"):
        _sync()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else 0
        started = time.perf_counter()
        with torch.inference_mode(), _autocast(dtype):
            model(input_ids=ids, attention_mask=mask)
        _sync()
        peak = torch.cuda.max_memory_allocated() - before if cuda else 0
        rows.append({"dtype": dtype, "tokens": length, "peak_mb_above_weights": peak / 2**20,
                     "weights_mb": before / 2**20, "seconds": time.perf_counter() - started})
        print(f"  {dtype}: one {length:,}-token document, peak {peak / 2**20:,.0f} MB above the weights "
              f"({before / 2**20:,.0f} MB), {rows[-1]['seconds']:.2f} s (first call, compile included)")
    return {"rows": rows, "pass": True}


# -----------------------------------------------------------------------------
# 4. the speedrun's first minutes


def _synthetic_corpus(path: Path, documents: int, words: int = 300) -> None:
    from medeir_rag.model.tokenization import load_tokenizer

    vocabulary = [w for w in load_tokenizer().get_vocab() if w.isalpha() and len(w) > 2]
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for index in range(documents):
            text = " ".join(rng.choice(vocabulary) for _ in range(words))
            handle.write(json.dumps({"id": f"synthetic:{index}", "title": "", "text": text}) + "\n")


def check_speedrun(minutes: float, data_dir: str | None, synthetic_docs: int) -> dict:
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        corpus = staging / "corpus"
        command = [sys.executable, "-m", "medeir_rag.training.corpus", "--out", str(corpus), "--num-shards", "8"]
        if data_dir:
            command += ["--data-dir", data_dir]
        else:
            _synthetic_corpus(staging / "synthetic.jsonl", synthetic_docs)
            command += ["--inputs", str(staging / "synthetic.jsonl"), "--exclude"]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True)
        prepared = time.perf_counter() - started
        out = staging / "pretrain"
        # the dry run: the tiny preset on the CPU, a log line every step
        preset = ["--config", "small"] if DEVICE == "cuda" else ["--config", "tiny", "--device", "cpu",
                                                                    "--set", "train.log_every=1"]
        process = subprocess.Popen(
            [sys.executable, "-m", "medeir_rag.training.pretrain", *preset, "--corpus", str(corpus), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            output, _ = process.communicate(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            process.terminate()
            output, _ = process.communicate(timeout=60)
        metrics = out / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
        rates = [r for r in rows if "tokens_per_s" in r]
        if not rates:
            print(output[-3000:])
            return {"pass": False, "error": "no tokens_per_s in metrics.jsonl", "corpus_seconds": prepared}
        steady = rates[1:] or rates  # the first log interval includes start-up and compilation
        result = {
            "corpus": data_dir or "synthetic", "corpus_seconds": round(prepared, 1), "minutes": minutes,
            "steps": rates[-1]["step"], "tokens_seen": rates[-1]["tokens_seen"],
            "seq_lens": sorted({r["seq_len"] for r in rates}),
            "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in steady),
            "tokens_per_s_last": rates[-1]["tokens_per_s"], "pass": True,
        }
        print(f"  pretrain {preset[1]}: {result['steps']} steps in {minutes} min, "
              f"{result['tokens_per_s_median']:,.0f} tokens/s (median of {len(steady)} log intervals, "
              f"seq_len {result['seq_lens']})")
        return result


# -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192], help="parity lengths")
    parser.add_argument("--batch", type=int, default=4, help="parity batch rows (at most 4; default 4)")
    parser.add_argument("--batch-512", type=int, default=128, help="throughput batch at 512 tokens (default 128)")
    parser.add_argument("--speedrun-minutes", type=float, default=3.0, help="pretraining wall time (default 3)")
    parser.add_argument("--data-dir", default=None, help="real allowed sources for the speedrun corpus (default: synthetic)")
    parser.add_argument("--synthetic-docs", type=int, default=40000,
                        help="documents of the synthetic speedrun corpus (default 40,000 x 300 words)")
    parser.add_argument("--matmul-size", type=int, default=8192, help="square matmul of the peak probe (default 8192)")
    parser.add_argument("--memory-tokens", type=int, default=8192, help="the long document of the memory check")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--_dry-run-cpu", dest="dry_run_cpu", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    global DEVICE
    reason = None if args.dry_run_cpu else no_cuda_reason()
    DEVICE = "cpu" if args.dry_run_cpu else "cuda"
    if reason:
        print(f"gpu_check: {reason}; nothing was checked (the CUDA paths stay untested).")
        if args.json:
            args.json.write_text(json.dumps({"skipped": reason}, indent=2) + "\n")
        return 0

    import torch

    report: dict = {"device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)",
                    "torch": torch.__version__, "cuda": torch.version.cuda}
    print(f"gpu_check on {report['device']} (torch {report['torch']}, CUDA {report['cuda']})")
    jobs = {
        "parity": lambda: check_parity(args.lengths, min(args.batch, 4)),
        "throughput": lambda: check_throughput(args.batch_512, args.matmul_size),
        "memory": lambda: check_memory(args.memory_tokens),
        "speedrun": lambda: check_speedrun(args.speedrun_minutes, args.data_dir, args.synthetic_docs),
    }
    for name in args.sections:
        print(f"== {name}")
        started = time.perf_counter()
        try:
            report[name] = jobs[name]()
        except Exception as error:  # one failing section must not hide the others' results
            traceback.print_exc()
            report[name] = {"pass": False, "error": f"{type(error).__name__}: {error}"}
        report[name]["section_seconds"] = round(time.perf_counter() - started, 1)
        if args.json:  # after every section, so a run cut short keeps what it measured
            args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    failed = [name for name in args.sections if not report[name].get("pass")]
    print(f"gpu_check: {'all sections passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
