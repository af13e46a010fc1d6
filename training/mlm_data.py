"""MLM data: a cached token stream, packed windows in a resumable order, dynamic masking.

Design choices:

- **Tokenize once.** A prepared corpus is tokenized a single time into flat ``.npy``
  streams (``uint16`` when the vocabulary fits), each document followed by ``[SEP]``;
  the cache sits in the run folder, keyed by the corpus fingerprint and the tokenizer's
  sha256, and is memory-mapped by every process.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/mlm_data.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .corpus import iter_corpus_texts, read_manifest

NUM_SPECIAL_TOKENS = 5  # [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 (medeir_rag.model.tokenization)

# ----------------------------------------------------------------------------
# Token cache


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's serialised form (ids, normaliser, everything)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]


def cache_dir_for(corpus_dir: str | os.PathLike[str], tokenizer, root: str | os.PathLike[str]) -> Path:
    fingerprint = read_manifest(corpus_dir)["fingerprint"]
    return Path(root) / f"tokens-{fingerprint}-{tokenizer_fingerprint(tokenizer)}"


def build_token_cache(
    corpus_dir: str | os.PathLike[str], tokenizer, root: str | os.PathLike[str], *, batch_docs: int = 1024
) -> Path:
    """Tokenize ``train`` and ``heldout`` of a prepared corpus into ``<root>/tokens-.../*.npy``.

    Returns the cache folder; an existing complete cache is reused as is.
    """
    cache = cache_dir_for(corpus_dir, tokenizer, root)
    if (cache / "meta.json").is_file():
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if len(tokenizer) <= 2**16 else np.int32
    sep = tokenizer.sep_token_id
    meta: dict[str, Any] = {"dtype": np.dtype(dtype).name, "vocab_size": len(tokenizer)}
    for split in ("train", "heldout"):
        pieces: list[np.ndarray] = []
        docs, batch = 0, []
        texts = iter_corpus_texts(corpus_dir, split)
        for text in tqdm(texts, desc=f"tokenize {split}", unit=" doc", disable=None, file=sys.stderr, leave=False):
            batch.append(text)
            docs += 1
            if len(batch) >= batch_docs:
                pieces.extend(_tokenize_docs(tokenizer, batch, sep, dtype))
                batch = []
        pieces.extend(_tokenize_docs(tokenizer, batch, sep, dtype))
        stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
        np.save(cache / f"{split}.npy", stream)
        meta[split] = {"docs": docs, "tokens": int(stream.size)}
    (cache / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks completion
    return cache


def _tokenize_docs(tokenizer, texts: list[str], sep: int, dtype) -> list[np.ndarray]:
    """One array per document: its ids (no special tokens) followed by ``[SEP]``."""
    if not texts:
        return []
    return [np.asarray([*ids, sep], dtype=dtype) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def load_stream(cache: str | os.PathLike[str], split: str) -> np.ndarray:
    """The memory-mapped token stream of one split."""
    return np.load(Path(cache) / f"{split}.npy", mmap_mode="r")


# ----------------------------------------------------------------------------
# Packed windows and their order


class PackedWindows:
    """Non-overlapping windows ``[CLS] + stream[i*(L-1):(i+1)*(L-1)]`` of one stream."""

    def __init__(self, stream: np.ndarray, seq_len: int, cls_id: int) -> None:
        self.stream = stream
        self.seq_len = seq_len
        self.cls_id = cls_id
        self.span = seq_len - 1
        self.num_windows = len(stream) // self.span

    def __len__(self) -> int:
        return self.num_windows

    def get(self, indices: np.ndarray) -> torch.Tensor:
        """``(len(indices), seq_len)`` int64 input ids."""
        out = np.empty((len(indices), self.seq_len), dtype=np.int64)
        out[:, 0] = self.cls_id
        for row, i in enumerate(indices):
            start = int(i) * self.span
            out[row, 1:] = self.stream[start : start + self.span]
        return torch.from_numpy(out)


@lru_cache(maxsize=4)
def _permutation(seed: int, phase: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, phase, epoch]).permutation(n)


def sample_indices(seed: int, phase: int, n: int, start: int, count: int) -> np.ndarray:
    """Window indices of global samples ``start ... start + count - 1`` of a phase (epochs wrap)."""
    out = np.empty(count, dtype=np.int64)
    for j in range(count):
        g = start + j
        out[j] = _permutation(seed, phase, g // n, n)[g % n]
    return out


def phase_bounds(fractions: list[float], max_steps: int) -> list[int]:
    """First step of each phase plus ``max_steps`` at the end: ``[0, s1, ..., max_steps]``."""
    bounds, acc = [0], 0.0
    for f in fractions[:-1]:
        acc += f
        bounds.append(min(max_steps, round(acc * max_steps)))
    bounds.append(max_steps)
    return bounds


def mixing_seed(*parts: int) -> int:
    """A 63-bit seed from integers (for per-step generators)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------
# Masking


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    vocab_size: int,
    mask_id: int,
    rate: float,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
    num_special: int = NUM_SPECIAL_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT dynamic masking; returns ``(inputs, labels)`` with ``labels == -100`` where unmasked.

    Ids below ``num_special`` are never chosen. At least one token per batch is chosen, so a
    loss always exists.
    """
    inputs = input_ids.clone()
    candidates = input_ids >= num_special
    chosen = (torch.rand(input_ids.shape, generator=generator) < rate) & candidates
    if not chosen.any() and candidates.any():
        chosen.view(-1)[candidates.view(-1).nonzero()[0]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = chosen & (action < mask_prob)
    to_random = chosen & (action >= mask_prob) & (action < mask_prob + random_prob)
    random_ids = torch.randint(num_special, vocab_size, input_ids.shape, generator=generator)
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


# ----------------------------------------------------------------------------
# Bits per byte


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """Bytes each token id stands for: piece without ``##`` (+1 separator if word-initial); specials 0."""
    vocab = tokenizer.get_vocab()
    lengths = torch.zeros(max(vocab.values()) + 1, dtype=torch.float64)
    special = set(tokenizer.all_special_ids)
    for piece, i in vocab.items():
        if i in special:
            continue
        if piece.startswith("##"):
            lengths[i] = len(piece[2:].encode("utf-8"))
        else:
            lengths[i] = len(piece.encode("utf-8")) + 1
    return lengths


def bits_per_byte(nats: float, num_bytes: float) -> float:
    return nats / (math.log(2) * num_bytes) if num_bytes > 0 else float("nan")
