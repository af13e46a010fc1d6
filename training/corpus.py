"""Corpus stage: raw text (JSONL, plain text, PubMed XML) -> a clean, sharded corpus.

Usage::

    python -m medeir_rag.training.corpus --out runs/corpus                 # the allowed sources
    python -m medeir_rag.training.corpus --out runs/corpus --inputs pubmed24n0001.xml.gz notes.txt \\
        --exclude beir/scifact beir/medquad_qa my_eval_ids.txt

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/corpus.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from medeir_rag.rag.documents import document_text as join_text
from medeir_rag.rag.documents import iter_pubmed_articles, open_file

from .config import CorpusConfig
from .text_sources import (
    DEFAULT_SOURCES,
    check_trainable,
    default_data_dir,
    document_text,
    is_held_out,
    iter_jsonl,
    qa_text,
)

MANIFEST = "corpus.json"
HELDOUT_FILE = "heldout.jsonl.gz"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")
TEXT_SUFFIXES = (".txt", ".txt.gz")
XML_SUFFIXES = (".xml", ".xml.gz")

# ----------------------------------------------------------------------------
# Documents and normalisation


@dataclass
class Doc:
    """One corpus document: ``text`` is what the model reads (``title\\ntext``)."""

    id: str
    text: str
    source: str
    body: str = ""  # the text without its title, for the exclusion text match
    ids: tuple[str, ...] = field(default_factory=tuple)  # every id the exclusion filter checks


_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, whitespace collapsed: the form that dedup and exclusion compare."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def text_hash(text: str) -> bytes:
    """16-byte blake2b of the normalised text."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()


def normalize_id(value: Any) -> str:
    """``"pmid:123"`` -> ``"123"``; other ids are kept (stripped)."""
    text = str(value).strip()
    return text[5:] if text.lower().startswith("pmid:") else text


def record_ids(record: dict[str, Any]) -> tuple[str, ...]:
    """The ids of a JSON record that exclusion compares against."""
    ids = [record.get(k) for k in ("_id", "id", "uid", "pmid", "medquad_uid")]
    return tuple(dict.fromkeys(normalize_id(i) for i in ids if i not in (None, "")))


def record_to_doc(record: dict[str, Any], source: str, fallback_id: str) -> Doc | None:
    """A JSON record -> ``Doc`` (``title``/``text`` or ``question``/``answer``); None if empty."""
    if "question" in record or "answer" in record:
        text, body = qa_text(record), str(record.get("answer") or "").strip()
    else:
        text, body = document_text(record), str(record.get("text") or "").strip()
    if not text:
        return None
    ids = record_ids(record)
    # the raw key (e.g. "pmid:123"), as text_sources.record_key: the held-out split must agree
    key = next((str(record[k]) for k in ("_id", "id", "uid") if record.get(k) not in (None, "")), fallback_id)
    return Doc(id=key, text=text, source=source, body=body, ids=ids)


# ----------------------------------------------------------------------------
# Readers


def _source_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".json", ".ndjson", ".txt", ".xml"):
        name = name.removesuffix(suffix)
    return name


def iter_jsonl_docs(path: Path, source: str | None = None) -> Iterator[Doc]:
    source = source or _source_name(path)
    for n, record in enumerate(iter_jsonl(path)):
        if doc := record_to_doc(record, source, f"{source}:{n}"):
            yield doc


def iter_text_docs(path: Path, unit: str = "paragraph") -> Iterator[Doc]:
    """Plain text: one document per blank-line-separated paragraph (or per line)."""
    source = _source_name(path)
    n = 0
    buffer: list[str] = []

    def flush() -> Doc | None:
        nonlocal n
        text = " ".join(buffer).strip()
        buffer.clear()
        if not text:
            return None
        n += 1
        return Doc(id=f"{source}:{n - 1}", text=text, source=source, body=text, ids=(f"{source}:{n - 1}",))

    with open_file(path, "rt") as f:
        for line in f:
            line = line.strip()
            if unit == "line" or not line:
                if unit == "line":
                    buffer.append(line)
                if doc := flush():
                    yield doc
            else:
                buffer.append(line)
    if doc := flush():
        yield doc


def iter_pubmed_xml(path: Path) -> Iterator[Doc]:
    """Articles of a PubMed baseline/update file (``medeir_rag.rag.documents``' parser): title,
    then the abstract sections on one line; articles without text are skipped."""
    for article in iter_pubmed_articles(path):
        body = " ".join(article.sections)
        if text := join_text(article.title, body, sep="\n"):
            yield Doc(id=f"pmid:{article.pmid}", text=text, source="pubmed", body=body, ids=(article.pmid,))


def _is_beir_dir(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


def iter_path_docs(path: Path, text_unit: str = "paragraph") -> Iterator[Doc]:
    """Documents of one input file or folder (recursively), by suffix."""
    check_trainable(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus input not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _supported(p))
        if not files:
            raise ValueError(f"no .jsonl/.txt/.xml(.gz) files under {path}")
        for file in files:
            yield from iter_path_docs(file, text_unit)
        return
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        yield from iter_jsonl_docs(path)
    elif name.endswith(TEXT_SUFFIXES):
        yield from iter_text_docs(path, text_unit)
    elif name.endswith(XML_SUFFIXES):
        yield from iter_pubmed_xml(path)
    else:
        raise ValueError(f"unsupported corpus input {path}: expected .jsonl, .txt or .xml (optionally .gz)")


def _supported(path: Path) -> bool:
    return path.name.lower().endswith(JSONL_SUFFIXES + TEXT_SUFFIXES + XML_SUFFIXES)


def iter_inputs(config: CorpusConfig, data_dir: Path) -> Iterator[tuple[str, Iterable[Doc]]]:
    """``(input name, documents)`` per input: the given paths, or the allowed sources."""
    from itertools import islice

    if config.inputs:
        for item in config.inputs:
            path = Path(item)
            if not path.exists() and (data_dir / item).exists():
                path = data_dir / item
            docs: Iterable[Doc] = iter_path_docs(path, config.text_unit)
            yield path.name, islice(docs, config.max_docs) if config.max_docs else docs
    else:
        for source in DEFAULT_SOURCES:
            check_trainable(source.relpath)
            docs = iter_jsonl_docs(data_dir / source.relpath, source.name)
            yield source.name, islice(docs, config.max_docs) if config.max_docs else docs


# ----------------------------------------------------------------------------
# Exclusion


@dataclass
class Exclusion:
    """Ids and normalised-text hashes of evaluation documents."""

    ids: set[str] = field(default_factory=set)
    hashes: set[bytes] = field(default_factory=set)
    sources: list[str] = field(default_factory=list)

    def match(self, doc: Doc) -> str | None:
        """``"id"`` or ``"text"`` when ``doc`` belongs to an excluded corpus, else None."""
        if any(i in self.ids for i in doc.ids):
            return "id"
        if text_hash(doc.text) in self.hashes or (doc.body and text_hash(doc.body) in self.hashes):
            return "text"
        return None


def load_exclusion(items: Iterable[str], data_dir: Path) -> Exclusion:
    """Read BEIR folders (corpus ids + texts, query texts) and id files (one id a line, or JSONL)."""
    exclusion = Exclusion()
    for item in items:
        path = Path(item)
        if not path.exists() and (data_dir / item).exists():
            path = data_dir / item
        if not path.exists():
            raise FileNotFoundError(f"exclusion source not found: {item} (also tried {data_dir / item})")
        exclusion.sources.append(str(path))
        if path.is_dir():
            if not _is_beir_dir(path):
                raise ValueError(f"{path} is a folder but not a BEIR dataset (no corpus.jsonl[.gz])")
            corpus = path / "corpus.jsonl.gz" if (path / "corpus.jsonl.gz").is_file() else path / "corpus.jsonl"
            for record in iter_jsonl(corpus):
                exclusion.ids.update(record_ids(record))
                for text in (document_text(record), str(record.get("text") or "")):
                    if text.strip():
                        exclusion.hashes.add(text_hash(text))
            for name in ("queries.jsonl", "queries.jsonl.gz"):
                if (path / name).is_file():
                    for record in iter_jsonl(path / name):
                        if str(record.get("text") or "").strip():
                            exclusion.hashes.add(text_hash(record["text"]))
        elif path.name.lower().endswith(JSONL_SUFFIXES):
            for record in iter_jsonl(path):
                exclusion.ids.update(record_ids(record))
        else:
            with open_file(path, "rt") as f:
                exclusion.ids.update(normalize_id(line) for line in f if line.strip())
    return exclusion


# ----------------------------------------------------------------------------
# Building


def count_words(text: str) -> int:
    return len(text.split())


def build_corpus(config: CorpusConfig, out: str | os.PathLike[str], *, show_progress: bool = True) -> dict[str, Any]:
    """Read, filter, dedup, split, shuffle and shard; write ``out`` and return the manifest.

    Raises ``ValueError`` when nothing is left to train on.
    """
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(config.data_dir) if config.data_dir else default_data_dir()
    exclusion = load_exclusion(config.exclude, data_dir)
    rng = random.Random(config.seed)
    seen: set[bytes] = set()
    stats: dict[str, Counter] = {}
    buckets = [open(out / f".bucket-{i:05d}.jsonl", "w", encoding="utf-8") for i in range(config.num_shards)]
    heldout: list[dict[str, Any]] = []
    try:
        for name, docs in iter_inputs(config, data_dir):
            counts = stats.setdefault(name, Counter())
            for doc in tqdm(docs, desc=f"read {name}", unit=" doc", disable=None if show_progress else True,
                            file=sys.stderr, leave=False):
                counts["read"] += 1
                if len(doc.text) < config.min_chars:
                    counts["too_short"] += 1
                    continue
                if reason := exclusion.match(doc):
                    counts[f"excluded_{reason}"] += 1
                    continue
                digest = text_hash(doc.text)
                if digest in seen:
                    counts["duplicate"] += 1
                    continue
                seen.add(digest)
                row = {"id": doc.id, "text": doc.text, "source": doc.source}
                words = count_words(doc.text)
                if is_held_out(doc.id, config.holdout_percent):
                    counts["heldout_docs"] += 1
                    counts["heldout_words"] += words
                    heldout.append(row)
                else:
                    counts["train_docs"] += 1
                    counts["train_words"] += words
                    buckets[rng.randrange(config.num_shards)].write(json.dumps(row) + "\n")
    finally:
        for b in buckets:
            b.close()

    train_docs = sum(c["train_docs"] for c in stats.values())
    if train_docs == 0:
        for i in range(config.num_shards):
            (out / f".bucket-{i:05d}.jsonl").unlink(missing_ok=True)
        read = sum(c["read"] for c in stats.values())
        raise ValueError(
            f"empty corpus: read {read} documents from {list(stats) or 'no inputs'}, none left for training "
            f"after filtering ({dict(sum(stats.values(), Counter()))})"
        )

    tokenizer = _load_count_tokenizer(config.tokenizer)
    shards = []
    token_counts: Counter = Counter()
    for i in range(config.num_shards):
        bucket = out / f".bucket-{i:05d}.jsonl"
        rows = [json.loads(line) for line in bucket.read_text(encoding="utf-8").splitlines()]
        bucket.unlink()
        rng.shuffle(rows)
        name = f"train-{i:05d}.jsonl.gz"
        _write_jsonl_gz(out / name, rows)
        tokens = _count_tokens(tokenizer, rows, token_counts)
        shards.append({"file": name, "docs": len(rows), "tokens": tokens})
    _write_jsonl_gz(out / HELDOUT_FILE, heldout)
    heldout_tokens = _count_tokens(tokenizer, heldout, Counter())

    manifest = {
        "format": "medeir-corpus/1",
        "config": config.model_dump(mode="json"),
        "data_dir": str(data_dir),
        "excluded_from": exclusion.sources,
        "sources": {name: dict(c) for name, c in stats.items()},
        "tokens_per_source": dict(token_counts),
        "train": {
            "docs": train_docs,
            "words": sum(c["train_words"] for c in stats.values()),
            "tokens": sum(s["tokens"] for s in shards),
        },
        "heldout": {"file": HELDOUT_FILE, "docs": len(heldout), "tokens": heldout_tokens},
        "shards": shards,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    manifest["fingerprint"] = hashlib.blake2b(
        json.dumps({k: manifest[k] for k in ("config", "sources", "shards")}, sort_keys=True).encode(),
        digest_size=8,
    ).hexdigest()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_jsonl_gz(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _load_count_tokenizer(path: str | None):
    from medeir_rag.model.tokenization import DEFAULT_TOKENIZER_DIR, load_tokenizer

    return load_tokenizer(path or DEFAULT_TOKENIZER_DIR)


def _count_tokens(tokenizer, rows: list[dict[str, Any]], per_source: Counter, batch: int = 2048) -> int:
    """Tokens without special tokens (batched through the Rust tokenizer)."""
    total = 0
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        ids = tokenizer([r["text"] for r in chunk], add_special_tokens=False)["input_ids"]
        for row, seq in zip(chunk, ids, strict=True):
            per_source[row["source"]] += len(seq)
            total += len(seq)
    return total


# ----------------------------------------------------------------------------
# Reading a prepared corpus


def read_manifest(corpus_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(corpus_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{corpus_dir} is not a prepared corpus (no {MANIFEST}); run `medeir prepare-corpus`")
    return json.loads(path.read_text())


def iter_corpus_texts(corpus_dir: str | os.PathLike[str], split: str = "train") -> Iterator[str]:
    """Texts of a prepared corpus, shard by shard (``split``: ``train`` or ``heldout``)."""
    corpus_dir = Path(corpus_dir)
    manifest = read_manifest(corpus_dir)
    files = [s["file"] for s in manifest["shards"]] if split == "train" else [manifest["heldout"]["file"]]
    for name in files:
        for record in iter_jsonl(corpus_dir / name):
            yield record["text"]


# ----------------------------------------------------------------------------
# Command line


def build_parser():
    import argparse

    p = argparse.ArgumentParser(prog="medeir prepare-corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder for the shards and corpus.json; required")
    p.add_argument("--inputs", nargs="+", default=None,
                   help="files/folders: .jsonl, .txt, PubMed .xml (optionally .gz) (default: the allowed sources)")
    p.add_argument("--data-dir", default=None, help="shared data folder (default: $MEDEIR_DATA_DIR, else ../shared/data)")
    p.add_argument("--exclude", nargs="*", default=None,
                   help="BEIR folders or id files to filter out (default: beir/scifact beir/medquad_qa)")
    p.add_argument("--holdout-percent", type=float, default=2.0, help="held-out share by id hash (default: 2)")
    p.add_argument("--num-shards", type=int, default=4, help="training shards (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    p.add_argument("--max-docs", type=int, default=None, help="records read per input (default: all; for CI)")
    p.add_argument("--min-chars", type=int, default=1, help="drop shorter documents (default: 1)")
    p.add_argument("--text-unit", choices=["paragraph", "line"], default="paragraph",
                   help="plain text: a document per paragraph or per line (default: paragraph)")
    p.add_argument("--tokenizer", default=None, help="tokenizer for token counts (default: the shipped one)")
    return p


def config_from_args(args) -> CorpusConfig:
    values = dict(
        inputs=args.inputs, data_dir=args.data_dir, holdout_percent=args.holdout_percent,
        num_shards=args.num_shards, seed=args.seed, max_docs=args.max_docs, min_chars=args.min_chars,
        text_unit=args.text_unit, tokenizer=args.tokenizer,
    )
    if args.exclude is not None:
        values["exclude"] = args.exclude
    return CorpusConfig(**values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    try:
        manifest = build_corpus(config, args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"medeir prepare-corpus: {error}", file=sys.stderr)
        return 1
    print(f"{'source':<28}{'read':>9}{'excl.id':>9}{'excl.txt':>9}{'dup':>8}{'train':>9}{'heldout':>9}{'tokens':>12}")
    for name, c in manifest["sources"].items():
        print(f"{name:<28}{c.get('read', 0):>9}{c.get('excluded_id', 0):>9}{c.get('excluded_text', 0):>9}"
              f"{c.get('duplicate', 0):>8}{c.get('train_docs', 0):>9}{c.get('heldout_docs', 0):>9}"
              f"{manifest['tokens_per_source'].get(name, 0):>12}")
    train, held = manifest["train"], manifest["heldout"]
    print(f"train: {train['docs']} docs, {train['words']} words, {train['tokens']} tokens in "
          f"{len(manifest['shards'])} shards; held out: {held['docs']} docs, {held['tokens']} tokens; "
          f"{manifest['seconds']}s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
