"""Cutting documents into token windows of the medical tokenizer, with exact character offsets.

Design choices:

- **Windows are counted in the model's own tokens.** A chunk of ``chunk_size`` tokens is
  exactly what the encoder sees (plus ``[CLS]``/``[SEP]``), so a chunk never goes over the
  window and is never silently truncated. The default ``chunk_size`` is the model's long
  window (8,192 minus the two special tokens minus the document prompt), not 512:
  the encoder uses ALiBi and is trained for long inputs.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/rag/chunking.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from medeir_rag.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

SPECIAL_TOKENS_PER_INPUT = 2  # [CLS] ... [SEP]
DEFAULT_BOUNDARY_FRACTION = 0.2
# Tokens per chunk for the framework splitters: context an LLM can take at top_k of a few, and
# the size that most often puts a whole abstract in the top chunk (benchmarks/chunk_size.py).
DEFAULT_CHUNK_SIZE = 512
SENTENCE_END = frozenset(".?!;")


@dataclass(frozen=True)
class Chunk:
    """One window of a document: ``text == document[start:end]``."""

    text: str
    start: int
    end: int
    num_tokens: int
    index: int


# ----------------------------------------------------------------------------
# The model's window


@dataclass(frozen=True)
class TokenWindow:
    """What a chunker needs to know about a model, read without loading its weights.

    ``max_length`` counts special tokens; ``prompt`` is the document prompt the embedder
    prepends to every chunk.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    prompt: str = ""

    @property
    def prompt_tokens(self) -> int:
        return count_tokens(self.tokenizer, self.prompt)

    @property
    def max_chunk_size(self) -> int:
        """The most tokens a chunk (plus any reserved text) may have and still fit the window."""
        return self.max_length - SPECIAL_TOKENS_PER_INPUT - self.prompt_tokens

    def resolve_chunk_size(self, chunk_size: int | None) -> int:
        """``None`` -> the full window; otherwise check that ``chunk_size`` fits in it.

        ``DEFAULT_CHUNK_SIZE`` adapts to a model whose window is shorter than it.
        """
        if chunk_size is None:
            return self.max_chunk_size
        if chunk_size == DEFAULT_CHUNK_SIZE:
            chunk_size = min(chunk_size, self.max_chunk_size)
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
            raise InvalidArgumentError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if chunk_size > self.max_chunk_size:
            raise InvalidArgumentError(
                f"chunk_size={chunk_size} does not fit the model window: {self.max_length} tokens minus "
                f"{SPECIAL_TOKENS_PER_INPUT} special tokens minus {self.prompt_tokens} prompt tokens "
                f"leaves {self.max_chunk_size}"
            )
        return chunk_size


def load_token_window(model_name_or_path: str | os.PathLike[str] | None = None) -> TokenWindow:
    """The tokenizer, window and document prompt of a model directory (weights are not loaded).

    ``None`` gives the tokenizer shipped with the package, its 8,192-token window and the
    default document prompt, so a splitter works before any model is trained.
    """
    from transformers import PreTrainedTokenizerFast

    from medeir_rag.model.export import DEFAULT_PROMPTS
    from medeir_rag.model.files import read_json, read_st_folder, resolve_model_path
    from medeir_rag.model.tokenization import MODEL_MAX_LENGTH, load_tokenizer

    if model_name_or_path is None:
        return TokenWindow(load_tokenizer(), MODEL_MAX_LENGTH, DEFAULT_PROMPTS["document"])
    path = resolve_model_path(model_name_or_path)
    folder = read_st_folder(path, require_st_config=False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder.transformer_dir), local_files_only=True)
    config = read_json(folder.transformer_dir / "config.json")
    window = min(folder.max_seq_length or tokenizer.model_max_length,
                 config.get("max_position_embeddings", folder.max_seq_length))
    return TokenWindow(tokenizer, int(window), folder.document_prompt)


def count_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """Tokens of ``text`` without special tokens."""
    if not text:
        return 0
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


# ----------------------------------------------------------------------------
# Chunking


def _boundary_before(text: str, offsets: Sequence[tuple[int, int]], i: int) -> int:
    """How good a cut before token ``i`` is: 3 paragraph, 2 sentence end, 1 line break, 0 none."""
    gap = text[offsets[i - 1][1] : offsets[i][0]]
    if "\n\n" in gap or "\n\r\n" in gap:
        return 3
    previous = text[offsets[i - 1][0] : offsets[i - 1][1]]
    if gap and gap.isspace() and previous and previous[-1] in SENTENCE_END:
        return 2
    if "\n" in gap:
        return 1
    return 0


def _choose_end(
    text: str,
    offsets: Sequence[tuple[int, int]],
    word_start: Sequence[bool],
    start: int,
    budget: int,
    boundary_fraction: float,
) -> int:
    """Exclusive end token of the window that starts at ``start``."""
    n = len(offsets)
    end = min(start + budget, n)
    if end == n:
        return end
    cut = end
    while cut > start and not word_start[cut]:
        cut -= 1
    if cut == start:  # one word longer than the window: cut inside it
        return end
    lowest = max(start + 1, end - int(budget * boundary_fraction))
    best, best_rank = cut, 0
    for i in range(cut, lowest - 1, -1):
        if not word_start[i]:
            continue
        rank = _boundary_before(text, offsets, i)
        if rank > best_rank:
            best, best_rank = i, rank
            if rank == 3:
                break
    return best


def chunk_text(
    text: str,
    tokenizer: PreTrainedTokenizerBase,
    chunk_size: int,
    chunk_overlap: int = 0,
    *,
    reserved_tokens: int = 0,
    boundary_fraction: float = DEFAULT_BOUNDARY_FRACTION,
) -> list[Chunk]:
    """Cut ``text`` into windows of at most ``chunk_size - reserved_tokens`` tokens.

    Args:
        text: the document.
        tokenizer: a fast tokenizer (offsets are needed); the model's own.
        chunk_size: tokens per chunk, including ``reserved_tokens``, excluding ``[CLS]``/``[SEP]``.
        chunk_overlap: tokens repeated from the end of one chunk at the start of the next.
        reserved_tokens: budget for text embedded with every chunk (metadata, title).
        boundary_fraction: how far back from a full window to look for a paragraph or
            sentence boundary (0 disables it).

    Returns:
        Chunks in document order; ``[]`` for an empty or whitespace-only text.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: the budget left after ``reserved_tokens`` is not positive, or the
            overlap is not smaller than it.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    budget = chunk_size - reserved_tokens
    if budget <= 0:
        raise InvalidArgumentError(
            f"no room for text: chunk_size={chunk_size} minus reserved_tokens={reserved_tokens} "
            f"(metadata, title or prompt) is {budget}; raise chunk_size or shorten the metadata"
        )
    if chunk_overlap < 0 or chunk_overlap >= budget:
        raise InvalidArgumentError(
            f"chunk_overlap must be in 0..{budget - 1} (the chunk budget minus one), got {chunk_overlap}"
        )
    if not 0 <= boundary_fraction < 1:
        raise InvalidArgumentError(f"boundary_fraction must be in [0, 1), got {boundary_fraction}")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("chunking needs a fast tokenizer (character offsets)")

    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets: list[tuple[int, int]] = [tuple(o) for o in encoding["offset_mapping"]]
    n = len(offsets)
    if n == 0:
        return []
    word_ids = encoding.word_ids()
    word_start = [i == 0 or word_ids[i] is None or word_ids[i] != word_ids[i - 1] for i in range(n)]

    chunks: list[Chunk] = []
    start = 0
    previous_end = 0  # exclusive end token of the last chunk
    while start < n:
        end = _choose_end(text, offsets, word_start, start, budget, boundary_fraction)
        first, last = offsets[start][0], offsets[end - 1][1]
        # Re-tokenise the slice: a cut inside a word (or an unusual pre-tokeniser) can make
        # the slice longer than the tokens it came from; shrink it until it fits.
        count = count_tokens(tokenizer, text[first:last])
        while count > budget and end - start > 1:
            end -= 1
            last = offsets[end - 1][1]
            count = count_tokens(tokenizer, text[first:last])
        if end <= previous_end and start < previous_end:
            # the overlap moved to a word start leaves no new token: a chunk inside the last one
            # would add nothing, so this one starts where the last ended (no overlap this time)
            start = previous_end
            continue
        if count > budget:
            raise ValueError(f"cannot fit the text at characters {first}..{last} into {budget} tokens")
        previous_end = end
        chunks.append(Chunk(text=text[first:last], start=first, end=last, num_tokens=count, index=len(chunks)))
        if end >= n:
            break
        next_start = max(end - chunk_overlap, start + 1)
        while next_start < end and not word_start[next_start]:
            next_start += 1
        start = next_start
    return chunks
