"""Token-window chunking: the window is never exceeded and every chunk is an exact slice."""

from __future__ import annotations

import itertools
import random

import pytest

from medeir_rag.model.tokenization import MODEL_MAX_LENGTH, load_tokenizer
from medeir_rag.rag.chunking import TokenWindow, chunk_text, count_tokens, load_token_window

WORDS = (
    "Metformin lowers glucose. Hypertension\n\nis a risk factor; stroke! HbA1c≥7% Ménière "
    "ctrl\x00char β-blocker 5 µg/kg 糖尿病 🙂 insulin-resistance end? \r\n line"
).split(" ")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def long_text() -> str:
    rng = random.Random(0)
    return " ".join(rng.choice(WORDS) for _ in range(2500))


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(("chunk_size", "overlap", "reserved"), [(40, 0, 0), (40, 10, 5), (7, 3, 0), (900, 100, 20)])
def test_chunks_fit_and_are_exact_slices(tokenizer, long_text, chunk_size, overlap, reserved):
    chunks = chunk_text(long_text, tokenizer, chunk_size, overlap, reserved_tokens=reserved)
    assert len(chunks) > 1
    for index, chunk in enumerate(chunks):
        assert chunk.index == index
        assert long_text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.num_tokens == count_tokens(tokenizer, chunk.text) <= chunk_size - reserved
    starts = [c.start for c in chunks]
    assert starts == sorted(set(starts))


def test_no_overlap_chunks_cover_every_token_once(tokenizer, long_text):
    chunks = chunk_text(long_text, tokenizer, 50, 0)
    joined = [i for c in chunks for i in ids(tokenizer, c.text)]
    assert joined == ids(tokenizer, long_text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(chunks))


def test_overlap_repeats_at_most_the_requested_tokens(tokenizer, long_text):
    chunks = chunk_text(long_text, tokenizer, 60, 12)
    for previous, current in itertools.pairwise(chunks):
        assert current.start < previous.end  # they do overlap
        shared = long_text[current.start : previous.end]
        assert 0 < count_tokens(tokenizer, shared) <= 12


def test_prefers_paragraph_then_sentence_boundaries(tokenizer):
    paragraph = "Asthma causes wheeze and cough. " * 5
    text = (paragraph.strip() + "\n\n") * 4
    chunks = chunk_text(text, tokenizer, count_tokens(tokenizer, paragraph) + 8)
    assert all(c.text == paragraph.strip() for c in chunks)
    sentences = "Insulin lowers glucose in diabetes. " * 30
    # 6 tokens per sentence: a 27-token window ends after 4 sentences (24 tokens), not mid-sentence
    for chunk in chunk_text(sentences, tokenizer, 27)[:-1]:
        assert chunk.text.endswith("diabetes.") and chunk.num_tokens == 24
    # ... unless no boundary lies in the last 20 % of the window
    assert not chunk_text(sentences, tokenizer, 23)[0].text.endswith(".")


def test_a_word_longer_than_the_window_is_cut_inside(tiny_tokenizer):
    word = "metforminhypertension" * 4  # 84 characters, many word pieces, no spaces
    text = f"start {word} end"
    assert count_tokens(tiny_tokenizer, word) > 12
    chunks = chunk_text(text, tiny_tokenizer, 4, 1)
    assert len(chunks) > 3
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert count_tokens(tiny_tokenizer, chunk.text) <= 4
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_empty_whitespace_and_bad_arguments(tokenizer):
    assert chunk_text("", tokenizer, 10) == []
    assert chunk_text(" \n\t  ", tokenizer, 10) == []
    with pytest.raises(TypeError):
        chunk_text(None, tokenizer, 10)
    with pytest.raises(ValueError, match="no room"):
        chunk_text("some text", tokenizer, 10, reserved_tokens=10)
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_text("some text", tokenizer, 10, 8, reserved_tokens=2)


def test_default_window_is_the_long_one(tokenizer, tiny_model_dir):
    window = load_token_window()
    assert window.max_length == MODEL_MAX_LENGTH
    assert window.resolve_chunk_size(None) == MODEL_MAX_LENGTH - 2 - count_tokens(tokenizer, "passage: ")
    with pytest.raises(ValueError, match="does not fit the model window"):
        window.resolve_chunk_size(MODEL_MAX_LENGTH)
    with pytest.raises(ValueError, match="positive"):
        window.resolve_chunk_size(0)
    tiny = load_token_window(tiny_model_dir)
    assert tiny.max_length == 8192 and tiny.prompt == "passage: "
    # a document of ~20k tokens gives chunks near the full window, not 512-token ones
    text = "Hypertension raises the risk of stroke. " * 3000
    chunks = chunk_text(text, tokenizer, window.max_chunk_size)
    assert len(chunks) >= 2 and max(c.num_tokens for c in chunks) > 7000
    assert all(c.num_tokens <= window.max_chunk_size for c in chunks)


def test_token_window_counts_the_prompt(tiny_tokenizer):
    window = TokenWindow(tiny_tokenizer, 64, "passage: ")
    assert window.max_chunk_size == 64 - 2 - count_tokens(tiny_tokenizer, "passage: ")
