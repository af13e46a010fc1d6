"""Reading documents to index: JSON lines, plain text, PubMed XML, folders of them.

Design choices:

- **Streaming.** Every reader is a generator (PubMed XML is parsed with ``iterparse`` and
  each article is freed once read), so a 300 MB NCBI baseline file never sits in memory.
- **Stable ids.** A record's id comes from ``id``, ``_id``, ``doc_id`` or ``pmid`` (PubMed:
  ``pmid:<PMID>``, as in the shared data files); a text file's id is its path relative to
  the folder given. A JSON record without any id gets ``sha1:<hash of title and text>``,
  so re-reading the same file gives the same ids and re-indexing is idempotent.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/documents.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TextIO

from medeir_rag.errors import InvalidArgumentError, MedeirError, MissingPathError, replace_lone_surrogates

logger = logging.getLogger(__name__)

EncodingErrors = Literal["strict", "replace"]

SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "assets" / "sample_corpus.jsonl"
DATA_DIR_ENV = "MEDEIR_DATA_DIR"
SHARED_PUBMED_FILE = "pretrain/pubmed_abstracts_bionlp.jsonl.gz"  # inside the shared data folder

ID_FIELDS = ("id", "_id", "doc_id", "pmid")
TEXT_FIELDS = ("text", "abstract", "content", "contents", "body")
TITLE_FIELDS = ("title",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".text")
XML_SUFFIXES = (".xml",)
FOLDER_SUFFIXES = tuple(s + gz for s in JSONL_SUFFIXES + TEXT_SUFFIXES + XML_SUFFIXES for gz in ("", ".gz"))
# a JSON escape of a surrogate code point: the only way a lone surrogate gets into a line
# that was decoded from UTF-8, so lines without one skip the per-record check
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def default_data_dir() -> Path:
    """``$MEDEIR_DATA_DIR`` if set; else ``../shared/data`` from the working directory, or the one
    beside the repository when only that exists (so examples run from any folder of a checkout)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    here = Path("../shared/data")
    beside = Path(__file__).resolve().parents[3] / "shared" / "data"
    return here if here.is_dir() or not beside.is_dir() else beside


def shared_pubmed_or_sample() -> Path:
    """The shared PubMed abstracts when the data folder has them, else the bundled sample corpus."""
    shared = default_data_dir() / SHARED_PUBMED_FILE
    return shared if shared.is_file() else SAMPLE_CORPUS


class DocumentReadError(MedeirError, ValueError):
    """A document file exists but cannot be read (bad encoding, bad JSON, bad XML).

    ``path`` is the file and ``line`` the line number (``None`` when the whole file is bad).
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


@dataclass
class SourceDocument:
    """A document before chunking. ``meta`` holds the record's other JSON fields."""

    id: str
    text: str
    title: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def content_id(title: str, text: str) -> str:
    """``sha1:<16 hex>`` of title and text: the id of a record that has none."""
    return "sha1:" + hashlib.sha1(f"{title}\x00{text}".encode()).hexdigest()[:16]


def _suffix(path: Path) -> str:
    """``.jsonl.gz`` for ``a.jsonl.gz``, ``.txt`` for ``a.txt``."""
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz":
        return suffixes[-2] + ".gz"
    return suffixes[-1] if suffixes else ""


def open_file(path: str | os.PathLike[str], mode: Literal["rb", "rt"] = "rb") -> BinaryIO | TextIO:
    """``path`` opened for reading, through gzip when its name ends in ``.gz``; text mode is UTF-8.

    The one opener of data files (documents, BEIR folders, training sources)."""
    path = Path(path)
    gzipped = path.name.lower().endswith(".gz")
    if mode == "rb":
        return gzip.open(path, "rb") if gzipped else open(path, "rb")
    return gzip.open(path, "rt", encoding="utf-8") if gzipped else open(path, encoding="utf-8")


def document_text(title: str | None, text: str | None, sep: str = " ") -> str:
    """Title and text, each stripped, joined by ``sep``, an empty part left out.

    ``" "`` is how mteb joins a corpus entry, and what the store embeds and reranks; the
    training stages join with ``"\\n"``."""
    return sep.join(part for part in ((title or "").strip(), (text or "").strip()) if part)


def count_records(path: str | os.PathLike[str] | None) -> int | None:
    """How many records ``path`` holds (non-blank JSON lines, one per text file), for an ETA.

    ``None`` when a file cannot be counted cheaply (PubMed XML) or cannot be read; ``path``
    ``None`` is the sample corpus.
    """
    try:
        files = [SAMPLE_CORPUS] if path is None else list_files(path)
        total = 0
        for file in files:
            name = file.name.lower().removesuffix(".gz")
            if name.endswith(JSONL_SUFFIXES):
                with open_file(file) as handle:
                    total += sum(1 for line in handle if line.strip())
            elif name.endswith(XML_SUFFIXES):
                return None
            else:
                total += 1
        return total
    except (OSError, EOFError, ValueError):
        return None  # the reader reports it, with the file and line


def _decode(data: bytes, path: Path, line: int | None, errors: EncodingErrors, warned: list[bool]) -> str:
    where = "the file" if line is None else f"line {line}"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        if errors == "strict":
            raise DocumentReadError(
                f"{path}: {where} is not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start}); "
                "convert the file to UTF-8, or pass --encoding-errors replace to index it with "
                "U+FFFD replacement characters",
                path=path, line=line,
            ) from None
        if not warned[0]:
            logger.warning("%s is not valid UTF-8 (first at %s); undecodable bytes were replaced by U+FFFD", path, where)
            warned[0] = True
        return data.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------
# Readers


def _first(record: dict[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    """``(field name, value)`` of the first non-empty field among ``names``."""
    return next(((n, record[n]) for n in names if record.get(n) not in (None, "")), (None, None))


def record_to_document(record: dict[str, Any], source: str = "") -> SourceDocument:
    """A JSON object (``title``/``text``/``id`` or the BEIR ``_id``) as a ``SourceDocument``."""
    title_field, title = _first(record, TITLE_FIELDS)
    text_field, text = _first(record, TEXT_FIELDS)
    title = title or ""
    text = "" if text is None else text
    if not isinstance(text, str) or not isinstance(title, str):
        raise TypeError("text and title must be strings")
    id_field, raw_id = _first(record, ID_FIELDS)
    if raw_id is None:
        doc_id = content_id(title, text)
    elif id_field == "pmid" and not str(raw_id).startswith("pmid:"):
        doc_id = f"pmid:{raw_id}"
    else:
        doc_id = str(raw_id)
    used = {title_field, text_field, id_field if id_field != "pmid" else None}
    meta = {k: v for k, v in record.items() if k not in used}
    return SourceDocument(id=doc_id, text=text, title=title, meta=meta, source=source)


def _replace_surrogates(value: Any) -> tuple[Any, int]:
    """``value`` (a JSON value) with lone surrogates replaced by U+FFFD, and how many there were."""
    if isinstance(value, str):
        return replace_lone_surrogates(value)
    if isinstance(value, list):
        items = [_replace_surrogates(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        result, total = {}, 0
        for key, item in value.items():
            (key, n_key), (item, n_item) = _replace_surrogates(key), _replace_surrogates(item)
            result[key] = item
            total += n_key + n_item
        return result, total
    return value, 0


def _skip(error: DocumentReadError, invalid: list[DocumentReadError] | None) -> None:
    logger.warning("skipped: %s", error)
    if invalid is not None:
        invalid.append(error)


def _parse_jsonl_line(
    raw: bytes, path: Path, line_number: int, encoding_errors: EncodingErrors, warned: list[bool]
) -> SourceDocument | None:
    line = _decode(raw, path, line_number, encoding_errors, warned).strip()
    if not line:
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DocumentReadError(
            f"{path}: line {line_number} is not valid JSON ({error.msg})", path=path, line=line_number,
        ) from None
    if not isinstance(record, dict):
        raise DocumentReadError(
            f"{path}: line {line_number} is a JSON {type(record).__name__}, not an object",
            path=path, line=line_number,
        )
    if _SURROGATE_ESCAPE.search(line):
        record, replaced = _replace_surrogates(record)
        if replaced:
            logger.warning(
                "%s: line %d: %d lone surrogate(s) (a JSON \\uD800-style escape without its pair) "
                "replaced by U+FFFD", path, line_number, replaced,
            )
    try:
        return record_to_document(record, source=str(path))
    except TypeError as error:
        raise DocumentReadError(f"{path}: line {line_number}: {error}", path=path, line=line_number) from None


def _check_unique(doc: SourceDocument, seen: dict[str, tuple[int, int]], path: Path, line_number: int) -> None:
    """Refuse a second record with an id already read in this file but another title or text.

    Ids are compared as strings (a JSON ``7`` and ``"7"`` are the same id, ``"7"``), so such a
    pair would otherwise name the same points and one of the two would be silently dropped.
    An exact repeat (same id, title and text) is left to the indexer, which counts it.
    """
    content = hash((doc.title, doc.text))
    first = seen.setdefault(doc.id, (line_number, content))
    if first[1] != content:
        raise DocumentReadError(
            f"{path}: line {line_number}: id {doc.id!r} is already the id of line {first[0]}, with another "
            "title or text (ids are compared as strings: 7 and \"7\" are the same id); give each record its own id",
            path=path, line=line_number,
        )


def read_jsonl(
    path: Path,
    encoding_errors: EncodingErrors = "strict",
    *,
    skip_invalid: bool = False,
    invalid: list[DocumentReadError] | None = None,
) -> Iterator[SourceDocument]:
    """One document per JSON line; blank lines are ignored.

    A bad line raises ``DocumentReadError`` naming the file and line; with ``skip_invalid``
    it is skipped (and appended to ``invalid``) instead.
    """
    warned = [False]
    line_number = 0
    seen: dict[str, tuple[int, int]] = {}  # id -> (line, hash of title and text)
    try:
        with open_file(path) as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    doc = _parse_jsonl_line(raw, path, line_number, encoding_errors, warned)
                    if doc is not None:
                        _check_unique(doc, seen, path, line_number)
                except DocumentReadError as error:
                    if not skip_invalid:
                        raise
                    _skip(error, invalid)
                    continue
                if doc is not None:
                    yield doc
    except (OSError, EOFError) as error:  # unreadable file, truncated gzip
        raise DocumentReadError(
            f"{path}: cannot read past line {line_number} ({error})", path=path, line=line_number + 1
        ) from None


def read_text_file(path: Path, doc_id: str, encoding_errors: EncodingErrors = "strict") -> SourceDocument:
    """A whole file as one document; the title is the file name without suffixes."""
    try:
        with open_file(path) as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DocumentReadError(f"{path}: cannot read ({error})", path=path) from None
    text = _decode(data, path, None, encoding_errors, [False])
    title = path.name.split(".")[0].replace("_", " ").strip()
    return SourceDocument(id=doc_id, text=text, title=title, meta={"path": doc_id}, source=str(path))


def _text(element: ET.Element | None) -> str:
    """All text inside an element (``<i>``, ``<sup>`` ... included), whitespace collapsed."""
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


@dataclass
class PubmedArticle:
    """The parts of one ``PubmedArticle`` element that readers use."""

    pmid: str
    title: str
    sections: list[str]  # AbstractText parts, "LABEL: text" when labelled (not "UNLABELLED")
    journal: str = ""
    year: str = ""


def parse_pubmed_article(element: ET.Element) -> PubmedArticle | None:
    """One ``PubmedArticle`` element; ``None`` without a ``MedlineCitation``/``PMID``.

    The one PubMed parser: the indexer (``read_pubmed_xml``) and the training corpus use it."""
    citation = element.find("MedlineCitation")
    pmid = _text(citation.find("PMID")) if citation is not None else ""
    if not pmid:
        return None
    article = citation.find("Article")
    if article is None:
        return PubmedArticle(pmid=pmid, title="", sections=[])
    sections = []
    for part in article.iterfind("Abstract/AbstractText"):
        label, body = part.get("Label"), _text(part)
        if body:
            sections.append(f"{label}: {body}" if label and label.upper() != "UNLABELLED" else body)
    return PubmedArticle(pmid=pmid, title=_text(article.find("ArticleTitle")), sections=sections,
                         journal=_text(article.find("Journal/Title")),
                         year=_text(article.find("Journal/JournalIssue/PubDate/Year")))


def iter_pubmed_articles(path: str | os.PathLike[str]) -> Iterator[PubmedArticle]:
    """Every article of an NCBI PubMed/MEDLINE XML file (optionally gzipped); memory stays flat.

    Raises ``DocumentReadError`` (file and line) on broken XML or a truncated file."""
    try:
        with open_file(path) as handle:
            context = ET.iterparse(handle, events=("start", "end"))
            _, root = next(context)
            for event, element in context:
                if event != "end" or element.tag != "PubmedArticle":
                    continue
                article = parse_pubmed_article(element)
                element.clear()
                root.clear()  # drop finished articles from the root too
                if article is not None:
                    yield article
    except ET.ParseError as error:
        raise DocumentReadError(f"{path}: not well-formed XML ({error})", path=path, line=error.position[0]) from None
    except StopIteration:
        return
    except (OSError, EOFError) as error:  # truncated gzip
        raise DocumentReadError(f"{path}: cannot read ({error})", path=path) from None


def read_pubmed_xml(path: Path) -> Iterator[SourceDocument]:
    """``PubmedArticle`` records of an NCBI PubMed/MEDLINE XML file (baseline or update files).

    Title is ``ArticleTitle``; text is the ``AbstractText`` parts, one per line, each
    structured part prefixed with its ``Label`` ("BACKGROUND: ..."). Id ``pmid:<PMID>``;
    meta holds ``pmid``, ``journal`` and ``year``.
    """
    for article in iter_pubmed_articles(path):
        meta = {"pmid": article.pmid, **({"journal": article.journal} if article.journal else {}),
                **({"year": article.year} if article.year else {})}
        yield SourceDocument(id=f"pmid:{article.pmid}", text="\n".join(article.sections), title=article.title,
                             meta=meta, source=str(path))


# ----------------------------------------------------------------------------
# Paths


def list_files(path: str | os.PathLike[str]) -> list[Path]:
    """The document files under ``path`` (a file is returned as is).

    Raises:
        MissingPathError: ``path`` does not exist, or a folder holds no supported file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingPathError(f"no such file or folder: {path}")
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and _suffix(p) in FOLDER_SUFFIXES
    )
    if not files:
        raise MissingPathError(f"no document files in {path} (looked for {', '.join(FOLDER_SUFFIXES)})")
    return files


def read_documents(
    path: str | os.PathLike[str],
    *,
    encoding_errors: EncodingErrors = "strict",
    skip_invalid: bool = False,
    invalid: list[DocumentReadError] | None = None,
) -> Iterator[SourceDocument]:
    """Every document under ``path``: a JSONL/text/PubMed XML file (optionally gzipped) or a folder.

    Args:
        encoding_errors: ``"strict"`` (non-UTF-8 bytes are a ``DocumentReadError``) or
            ``"replace"`` (U+FFFD, one warning per file).
        skip_invalid: skip a bad record (or the unreadable rest of a file) instead of raising.
        invalid: when given, every skipped record's ``DocumentReadError`` is appended to it.
    """
    if encoding_errors not in ("strict", "replace"):
        raise InvalidArgumentError(f"encoding_errors must be 'strict' or 'replace', got {encoding_errors!r}")
    root = Path(path).expanduser()
    for file in list_files(root):
        suffix = _suffix(file)
        try:
            if suffix.removesuffix(".gz") in JSONL_SUFFIXES:
                yield from read_jsonl(file, encoding_errors, skip_invalid=skip_invalid, invalid=invalid)
            elif suffix.removesuffix(".gz") in XML_SUFFIXES:
                yield from read_pubmed_xml(file)
            else:
                doc_id = file.name if file == root else file.relative_to(root).as_posix()
                yield read_text_file(file, doc_id, encoding_errors)
        except DocumentReadError as error:
            if not skip_invalid:
                raise
            _skip(error, invalid)


def read_sample_corpus() -> Iterator[SourceDocument]:
    """The short medical passages shipped with the package (written for it; ids ``sample:*``)."""
    return read_jsonl(SAMPLE_CORPUS)


__all__ = [
    "SAMPLE_CORPUS",
    "DocumentReadError",
    "SourceDocument",
    "list_files",
    "read_documents",
    "read_jsonl",
    "read_pubmed_xml",
    "read_sample_corpus",
    "read_text_file",
    "record_to_document",
]
