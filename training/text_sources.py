"""Readers for the training text under the shared data folder, and the held-out split.

Design choices:

- **An explicit allow-list.** ``DEFAULT_SOURCES`` names every file that training may
  read. Evaluation data is not just left out, it is refused: ``check_trainable``
  raises for the SciFact corpus, the MedQuAD QA test split, the full MedQuAD file
  (it contains that test split) and the medical word list (the tokenizer's
  evaluation list). Every training reader goes through it.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/text_sources.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from medeir_rag.rag.documents import default_data_dir as default_data_dir  # re-exported for the stages
from medeir_rag.rag.documents import document_text as join_text
from medeir_rag.rag.documents import open_file

Split = Literal["train", "heldout", "all"]

DEFAULT_HOLDOUT_PERCENT = 2


# ----------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class TextSource:
    """One training file: ``kind`` picks the reader, ``domain`` is for reporting."""

    name: str
    relpath: str
    kind: Literal["document", "qa_pair"]
    domain: Literal["medical", "general"]


DEFAULT_SOURCES: tuple[TextSource, ...] = (
    TextSource("pubmed_abstracts", "pretrain/pubmed_abstracts_bionlp.jsonl.gz", "document", "medical"),
    TextSource("bio_sentences", "pretrain/bio_sentences_scibert.jsonl.gz", "document", "medical"),
    TextSource("go_definitions", "pretrain/go_definitions.jsonl.gz", "document", "medical"),
    TextSource("medquad_train_pairs", "medquad/medquad_train_pairs.jsonl.gz", "qa_pair", "medical"),
    TextSource("gcide", "general/gcide.jsonl.gz", "document", "general"),
    TextSource("wordnet_glosses", "general/wordnet30_glosses.jsonl.gz", "document", "general"),
)
SOURCES_BY_NAME: dict[str, TextSource] = {s.name: s for s in DEFAULT_SOURCES}

# Evaluation data: never train on these (see data/README.md).
MEDICAL_LEXICON = "lexicons/hunspell_en_med_words.txt.gz"
FORBIDDEN_PATHS: tuple[str, ...] = (
    "beir/scifact",  # the SciFact evaluation corpus and queries
    "beir/medquad_qa",  # our MedQuAD retrieval test split
    "medquad/medquad.jsonl.gz",  # all MedQuAD pairs, test split included
    MEDICAL_LEXICON,  # the tokenizer fragmentation evaluation list
)


def check_trainable(path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` if ``path`` is (inside) an evaluation data set."""
    padded = "/" + Path(path).as_posix().strip("/") + "/"  # match whole path components only
    for forbidden in FORBIDDEN_PATHS:
        if f"/{forbidden}/" in padded:
            raise ValueError(f"{path} is evaluation data ({forbidden}) and must never be trained on")


# ----------------------------------------------------------------------------
# Readers


def _open_text(path: str | os.PathLike[str]):
    """Open plain or gzip text (by suffix) as UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return open_file(path, "rt")


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield one dict per non-blank line of a JSON-lines file (plain or ``.gz``)."""
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def iter_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield stripped non-blank lines of a text file (plain or ``.gz``), e.g. a word list."""
    with _open_text(path) as f:
        for line in f:
            if line := line.strip():
                yield line


def document_text(record: dict[str, Any]) -> str:
    """``title + "\\n" + text``, leaving out an empty part (many records have no title)."""
    return join_text(str(record.get("title") or ""), str(record.get("text") or ""), sep="\n")


def qa_text(record: dict[str, Any]) -> str:
    """``question + "\\n" + answer`` for a MedQuAD pair, leaving out an empty part."""
    return join_text(str(record.get("question") or ""), str(record.get("answer") or ""), sep="\n")


def iter_document_texts(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield ``title + "\\n" + text`` of each record, skipping empty records."""
    for record in iter_jsonl(path):
        if text := document_text(record):
            yield text


# ----------------------------------------------------------------------------
# Held-out split


def record_key(record: dict[str, Any]) -> str:
    """The stable key a record is hashed by: its id (``_id``/``id``/``uid``), else its text."""
    for field in ("_id", "id", "uid"):
        if record.get(field) not in (None, ""):
            return str(record[field])
    return document_text(record) or qa_text(record)


def is_held_out(key: str, holdout_percent: float = DEFAULT_HOLDOUT_PERCENT) -> bool:
    """True when ``blake2b(key) mod 100 < holdout_percent`` (deterministic, seed-free)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100 < holdout_percent


def iter_source_texts(
    source: TextSource,
    data_dir: str | os.PathLike[str],
    split: Split = "train",
    holdout_percent: float = DEFAULT_HOLDOUT_PERCENT,
    max_docs: int | None = None,
) -> Iterator[str]:
    """Texts of one source: the ``train`` part, the ``heldout`` part, or ``all``.

    ``max_docs`` caps the records read (before the split), so the held-out rule is
    the same with and without it.
    """
    check_trainable(source.relpath)
    to_text = qa_text if source.kind == "qa_pair" else document_text
    records: Iterable[dict[str, Any]] = iter_jsonl(Path(data_dir) / source.relpath)
    if max_docs is not None:
        records = islice(records, max_docs)
    for record in records:
        if split != "all" and is_held_out(record_key(record), holdout_percent) != (split == "heldout"):
            continue
        if text := to_text(record):
            yield text


def iter_training_texts(
    data_dir: str | os.PathLike[str],
    sources: Iterable[TextSource] = DEFAULT_SOURCES,
    holdout_percent: float = DEFAULT_HOLDOUT_PERCENT,
    max_docs: int | None = None,
    counts: dict[str, int] | None = None,
) -> Iterator[str]:
    """All training texts of ``sources`` in order, held-out records excluded.

    If ``counts`` is given, it is filled with the number of texts yielded per source.
    """
    for source in sources:
        for text in iter_source_texts(source, data_dir, "train", holdout_percent, max_docs):
            if counts is not None:
                counts[source.name] = counts.get(source.name, 0) + 1
            yield text
