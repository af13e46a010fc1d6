"""Load a retrieval set in BEIR layout from a local folder.

Design choices:
- **Any BEIR folder.** ``corpus.jsonl`` or ``corpus.jsonl.gz`` (same for ``queries``),
  and ``qrels/<split>.tsv`` with the ``query-id  corpus-id  score`` header. The split
  defaults to ``test`` when present, else the only split; with several splits and no
  ``test`` the caller must name one (the error lists them).
- **One document text for every system.** ``document_text`` joins title and text the way
  mteb does (``title + " " + text``, stripped; the text alone when the title is empty), so
  BM25, the dense models, the reranker and the hybrid all read the same string.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/beir.py``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medeir_rag.rag.documents import default_data_dir, document_text, open_file

DEFAULT_DATASETS = ("beir/scifact", "beir/medquad_qa")


def default_folders() -> list[Path]:
    """The SciFact and MedQuAD QA folders under the shared data folder."""
    return [default_data_dir() / name for name in DEFAULT_DATASETS]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------
# Files


def _find(folder: Path, stem: str) -> Path:
    """``<stem>.jsonl`` or ``<stem>.jsonl.gz`` inside ``folder``."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no {stem}.jsonl or {stem}.jsonl.gz (not a BEIR folder?)")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file, gzipped when the name ends in ``.gz``."""
    with open_file(path, "rt") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: invalid JSON ({error})") from error


def available_splits(folder: Path) -> list[str]:
    """Split names that have a ``qrels/<split>.tsv`` file."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))


def choose_split(folder: Path, split: str | None = None) -> str:
    """``split`` if given (and present), else ``test`` if present, else the only split."""
    splits = available_splits(folder)
    if not splits:
        raise FileNotFoundError(f"{folder}: no qrels/<split>.tsv file")
    if split is not None:
        if split not in splits:
            raise ValueError(f"{folder}: no split {split!r}; available: {splits}")
        return split
    if "test" in splits:
        return "test"
    if len(splits) == 1:
        return splits[0]
    raise ValueError(f"{folder}: several splits and none is 'test'; choose one with --split from {splits}")


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``{query_id: {doc_id: grade}}`` from a BEIR qrels TSV (header row skipped)."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        for row_number, row in enumerate(reader, 1):
            if not row or (row_number == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise ValueError(f"{path}:{row_number}: expected 3 tab-separated columns, got {row}")
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


# ----------------------------------------------------------------------------
# Dataset


@dataclass
class BeirDataset:
    """One split of a BEIR folder, held in memory (ids are strings, order as in the files)."""

    name: str
    path: Path
    split: str
    corpus_file: Path
    titles: dict[str, str]
    texts: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_docs: int = 0

    @property
    def doc_ids(self) -> list[str]:
        return list(self.texts)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def document_texts(self) -> list[str]:
        """``title + " " + text`` for every document, in ``doc_ids`` order."""
        return [document_text(self.titles[i], self.texts[i]) for i in self.texts]

    def query_texts(self) -> list[str]:
        return list(self.queries.values())

    def summary(self) -> dict[str, Any]:
        """What a results file records about the data."""
        return {
            "name": self.name,
            "path": str(self.path.resolve()),
            "split": self.split,
            "corpus_file": self.corpus_file.name,
            "corpus_sha256": sha256_file(self.corpus_file),
            "documents": len(self.texts),
            "queries": len(self.queries),
            "qrels": sum(len(v) for v in self.qrels.values()),
            "qrels_missing_documents": self.missing_docs,
        }


def load_beir(folder: str | os.PathLike[str], split: str | None = None, name: str | None = None) -> BeirDataset:
    """Read a BEIR folder: corpus, the judged queries of ``split``, and their qrels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist")
    split = choose_split(folder, split)
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    corpus_file = _find(folder, "corpus")
    titles: dict[str, str] = {}
    texts: dict[str, str] = {}
    for record in read_jsonl(corpus_file):
        doc_id = str(record["_id"])
        titles[doc_id] = record.get("title") or ""
        texts[doc_id] = record.get("text") or ""
    queries: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(_find(folder, "queries")):
        query_id = str(record["_id"])
        if query_id in qrels:
            queries[query_id] = record.get("text") or ""
            metadata[query_id] = {k: v for k, v in record.items() if k not in ("_id", "text")}
    missing_queries = sorted(set(qrels) - set(queries))
    if missing_queries:
        raise ValueError(f"{folder}: qrels/{split}.tsv names {len(missing_queries)} unknown query ids, e.g. {missing_queries[:5]}")
    missing_docs = sum(doc_id not in texts for judged in qrels.values() for doc_id in judged)
    return BeirDataset(
        name=name or folder.name, path=folder, split=split, corpus_file=corpus_file, titles=titles,
        texts=texts, queries=queries, qrels=qrels, query_metadata=metadata, missing_docs=missing_docs,
    )
