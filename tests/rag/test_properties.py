"""Property-based tests (hypothesis) of the readers and the chunker.

- **Readers**: whatever bytes or text a JSONL, text or PubMed XML file holds (gzipped or not),
  reading it either yields ``SourceDocument`` objects or raises ``DocumentReadError`` naming
  the file; with ``skip_invalid=True`` it never raises. Nothing else escapes.
- **Chunker**: for any text (unicode, whitespace runs, control characters; no surrogates,
  which no Python str from UTF-8 can hold), every chunk is the slice of the text its offsets
  name, chunks come in order, never exceed the budget, and together cover every token: what
  lies between them tokenises to nothing.

``max_examples`` stays moderate (CI time) and ``deadline=None`` (a loaded CI machine); the
tokenizer is trained once per module.
"""

from __future__ import annotations

import gzip
import itertools
import json
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medeir_rag.rag.chunking import chunk_text, count_tokens  # noqa: E402
from medeir_rag.rag.documents import DocumentReadError, SourceDocument, read_documents  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["metformin", "glucose", "HbA1c", "myocardial", "infarction", "Ménière", "µg", "β-blocker", "糖尿病",
         "e\u0301", "🙂", ".", "?", ";", "(", ")", "5", "mg/dL"]
WHITESPACE = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2003", " \n \n ", "\x0b", "\x00"])
# any text without lone surrogates (st.text() never yields them), mixed with words and whitespace runs
TEXTS = st.lists(st.one_of(st.sampled_from(WORDS), WHITESPACE, st.text(max_size=12)), max_size=60).map("".join)


@pytest.fixture(scope="module")
def tokenizer():
    from conftest import MEDICAL_LINES

    from medeir_rag.model.tokenization import train_wordpiece

    return train_wordpiece(MEDICAL_LINES * 5, vocab_size=300, min_frequency=1)


# -----------------------------------------------------------------------------
# readers


def _read(name: str, data: bytes, *, skip_invalid: bool = False, compress: bool = True) -> list[SourceDocument]:
    """Read ``data`` as file ``name`` (gzipped first for a ``.gz`` name when ``compress``)."""
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / name
        file.write_bytes(gzip.compress(data) if name.endswith(".gz") and compress else data)
        try:
            return list(read_documents(file, skip_invalid=skip_invalid))
        except DocumentReadError as error:
            assert not skip_invalid, f"skip_invalid=True raised {error}"
            assert str(file) in str(error) and error.path == str(file)
            return []


NAMES = st.sampled_from(["a.jsonl", "a.jsonl.gz", "a.txt", "a.txt.gz", "a.xml", "a.xml.gz", "a.md"])


@SETTINGS
@given(name=NAMES, data=st.binary(max_size=400), skip_invalid=st.booleans(), compress=st.booleans())
def test_readers_on_arbitrary_bytes(name, data, skip_invalid, compress):
    for doc in _read(name, data, skip_invalid=skip_invalid, compress=compress):
        assert isinstance(doc, SourceDocument) and isinstance(doc.id, str) and isinstance(doc.text, str)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
RECORDS = st.dictionaries(st.sampled_from(["id", "_id", "pmid", "title", "text", "abstract", "meta", "x"]),
                          JSON_VALUES, max_size=5)


@SETTINGS
@given(lines=st.lists(st.one_of(RECORDS.map(json.dumps), st.text(max_size=30)), max_size=8),
       gz=st.booleans(), skip_invalid=st.booleans())
def test_jsonl_reader_on_arbitrary_records_and_lines(lines, gz, skip_invalid):
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    for doc in _read("r.jsonl.gz" if gz else "r.jsonl", data, skip_invalid=skip_invalid):
        assert isinstance(doc.text, str) and isinstance(doc.title, str) and isinstance(doc.id, str)
        assert (doc.id + doc.title + doc.text).encode("utf-8")  # lone surrogates were replaced


@SETTINGS
@given(title=st.text(max_size=40), parts=st.lists(st.text(max_size=40), max_size=3), pmid=st.text(max_size=8))
def test_pubmed_reader_on_arbitrary_text(title, parts, pmid):
    from xml.sax.saxutils import escape

    abstract = "".join(f"<AbstractText>{escape(p)}</AbstractText>" for p in parts)
    xml = (f"<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>{escape(pmid)}</PMID><Article>"
           f"<ArticleTitle>{escape(title)}</ArticleTitle><Abstract>{abstract}</Abstract></Article>"
           "</MedlineCitation></PubmedArticle></PubmedArticleSet>")
    docs = _read("p.xml", xml.encode("utf-8", errors="surrogatepass"))
    assert all(d.id.startswith("pmid:") for d in docs)


# -----------------------------------------------------------------------------
# chunker


@SETTINGS
@given(text=TEXTS, chunk_size=st.integers(2, 24), overlap_share=st.floats(0, 0.9), boundary=st.sampled_from([0, 0.2, 0.5]))
def test_chunks_are_slices_in_order_and_cover_every_token(tokenizer, text, chunk_size, overlap_share, boundary):
    overlap = int(chunk_size * overlap_share) if chunk_size > 1 else 0
    overlap = min(overlap, chunk_size - 1)
    try:
        chunks = chunk_text(text, tokenizer, chunk_size, overlap, boundary_fraction=boundary)
    except ValueError as error:  # only a single character whose pieces exceed the whole budget
        assert "cannot fit the text at characters" in str(error)
        return
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.start : chunk.end] == chunk.text and chunk.text
        assert 0 < chunk.num_tokens <= chunk_size
        assert chunk.num_tokens == count_tokens(tokenizer, chunk.text)
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start and before.end < after.end  # in order, always moving on
        if overlap == 0:
            assert before.end <= after.start
    # coverage: nothing outside the chunks tokenises to anything
    covered_to = 0
    for chunk in chunks:
        if chunk.start > covered_to:
            assert count_tokens(tokenizer, text[covered_to : chunk.start]) == 0, (covered_to, chunk.start)
        covered_to = max(covered_to, chunk.end)
    assert count_tokens(tokenizer, text[covered_to:]) == 0
    if not chunks:
        assert count_tokens(tokenizer, text) == 0


@SETTINGS
@given(text=TEXTS)
def test_one_big_window_is_the_whole_text(tokenizer, text):
    chunks = chunk_text(text, tokenizer, 10_000)
    tokens = count_tokens(tokenizer, text)
    assert len(chunks) == (1 if tokens else 0)
    if chunks:
        assert text[chunks[0].start : chunks[0].end] == chunks[0].text
        assert not text[: chunks[0].start].strip() or count_tokens(tokenizer, text[: chunks[0].start]) == 0
