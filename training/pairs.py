"""Training pairs for the bi-encoder and the reranker: sources, mixing, BM25 hard negatives.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``training/pairs.py``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import PairData
from .text_sources import check_trainable, default_data_dir, is_held_out, iter_jsonl, record_key

SOURCE_FILES: dict[str, str] = {
    "medquad": "medquad/medquad_train_pairs.jsonl.gz",
    "title_abstract": "pretrain/pubmed_abstracts_bionlp.jsonl.gz",
    "go_definition": "pretrain/go_definitions.jsonl.gz",
    "wordnet": "general/wordnet30_glosses.jsonl.gz",
    "gcide": "general/gcide.jsonl.gz",
    "spans": "pretrain/pubmed_abstracts_bionlp.jsonl.gz",
    "ict": "pretrain/pubmed_abstracts_bionlp.jsonl.gz",
}
GENERATED_SOURCES = ("spans", "ict")  # pairs made from abstracts by ``generated_pairs``
ICT_KEEP_SENTENCE = 0.1
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\[])")


@dataclass
class Pair:
    anchor: str
    positive: str
    source: str
    meta: dict[str, str] = field(default_factory=dict)
    negatives: list[str] = field(default_factory=list)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def _strip_headword(title: str, text: str) -> str:
    """``"Acerous , a. [Gr. ...] Destitute of..."`` -> ``"a. [Gr. ...] Destitute of..."``."""
    if title and text.lower().startswith(title.lower()):
        text = text[len(title):].lstrip(" ,;:")
    return text


# ----------------------------------------------------------------------------
# Readers per source


def iter_source_records(
    source: str, data: PairData, split: str = "train"
) -> Iterator[dict[str, Any]]:
    """Records of one pair source, ``train`` or ``heldout`` part, capped by ``max_records``."""
    data_dir = Path(data.data_dir) if data.data_dir else default_data_dir()
    relpath = SOURCE_FILES[source]
    check_trainable(relpath)
    for n, record in enumerate(iter_jsonl(data_dir / relpath)):
        if data.max_records is not None and n >= data.max_records:
            break
        if is_held_out(record_key(record), data.holdout_percent) != (split == "heldout"):
            continue
        yield record


def record_to_pair(source: str, record: dict[str, Any], data: PairData) -> Pair | None:
    """A record -> ``Pair`` for the title/term sources; None when a side is empty."""
    if source == "medquad":
        anchor, positive = record.get("question", ""), record.get("answer", "")
        meta = {"qtype": str(record.get("qtype") or ""), "collection": str(record.get("collection") or "")}
    elif source in ("title_abstract", "go_definition", "wordnet", "gcide"):
        anchor, positive = str(record.get("title") or ""), str(record.get("text") or "")
        if source == "gcide":
            positive = _strip_headword(anchor, positive)
        meta = {"ontology": str(record.get("ontology") or "")} if source == "go_definition" else {}
    else:
        raise ValueError(f"no record pairs for source {source!r}")
    anchor, positive = anchor.strip(), positive.strip()
    if not anchor or not positive:
        return None
    return Pair(_clip(anchor, data.max_anchor_chars), _clip(positive, data.max_positive_chars), source, meta)


def span_pair(text: str, rng: random.Random, data: PairData) -> Pair | None:
    """DeCLUTR-style: an anchor span and a positive span overlapping or adjacent to it."""
    words = text.split()
    if len(words) < 2 * data.span_min_words:
        return None
    a_len = rng.randint(data.span_min_words, min(data.span_max_words, len(words) - data.span_min_words))
    a_start = rng.randint(0, len(words) - a_len)
    p_len = rng.randint(data.span_min_words, min(data.span_max_words, len(words)))
    lo, hi = max(0, a_start - p_len), min(len(words) - p_len, a_start + a_len)  # overlap or adjacency
    p_start = rng.randint(lo, max(lo, hi))
    anchor = " ".join(words[a_start : a_start + a_len])
    positive = " ".join(words[p_start : p_start + p_len])
    if anchor == positive:
        return None
    return Pair(anchor, positive, "spans")


def split_sentences(text: str) -> list[str]:
    """Sentences of an abstract: split after . ! ? before a capital, digit or bracket."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def ict_pair(title: str, text: str, rng: random.Random, data: PairData) -> Pair | None:
    """Inverse Cloze Task: a sentence of the abstract -> title + the rest of the abstract."""
    sentences = split_sentences(text)
    candidates = [i for i, s in enumerate(sentences) if len(s.split()) >= data.span_min_words]
    if len(sentences) < 3 or not candidates:
        return None
    index = rng.choice(candidates)
    rest = sentences if rng.random() < ICT_KEEP_SENTENCE else sentences[:index] + sentences[index + 1 :]
    positive = " ".join([title.strip(), *rest]).strip()
    return Pair(_clip(sentences[index], data.max_anchor_chars), _clip(positive, data.max_positive_chars), "ict")


# ----------------------------------------------------------------------------
# Mixing


def source_quotas(data: PairData) -> dict[str, int]:
    """Pairs per source: ``num_pairs`` split by weight (largest remainder)."""
    weights = {k: v for k, v in data.weights.model_dump().items() if v > 0}
    total = sum(weights.values())
    raw = {k: data.num_pairs * w / total for k, w in weights.items()}
    quotas = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - quotas[k], reverse=True)[: data.num_pairs - sum(quotas.values())]:
        quotas[k] += 1
    return quotas


def generated_pairs(
    source: str, records: list[tuple[str, str]], quota: int, rng: random.Random, data: PairData
) -> list[Pair]:
    """Pairs made from ``(title, abstract)`` records.

    ``ict`` uses each abstract at most once (two pairs of one abstract would be each other's
    false negatives in a batch); ``spans`` draws abstracts with replacement until the quota
    is filled.
    """
    if source == "ict":
        rng.shuffle(records)
        return [p for title, text in records if (p := ict_pair(title, text, rng, data))][:quota]
    chosen: list[Pair] = []
    attempts = 0
    while records and len(chosen) < quota and attempts < 20 * quota:
        attempts += 1
        if pair := span_pair(rng.choice(records)[1], rng, data):
            chosen.append(pair)
    return chosen


def build_pairs(data: PairData, *, exclude_texts: set[str] | None = None) -> tuple[list[Pair], dict[str, int]]:
    """Training pairs mixed by weight (held-out records excluded); returns ``(pairs, counts)``.

    ``exclude_texts`` removes pairs whose anchor or positive is one of those texts (the
    evaluation pairs, as a second guard).
    """
    rng = random.Random(data.seed)
    exclude_texts = exclude_texts or set()
    pairs: list[Pair] = []
    counts: dict[str, int] = {}
    for source, quota in source_quotas(data).items():
        if quota == 0:
            continue
        if source in GENERATED_SOURCES:
            records = [(str(r.get("title") or ""), str(r.get("text") or "")) for r in iter_source_records(source, data)]
            records = [(t, a) for t, a in records if len(a.split()) >= 2 * data.span_min_words]
            chosen = generated_pairs(source, records, quota, rng, data)
        else:
            candidates = [p for r in iter_source_records(source, data) if (p := record_to_pair(source, r, data))]
            candidates = [p for p in candidates if p.anchor not in exclude_texts and p.positive not in exclude_texts]
            rng.shuffle(candidates)
            chosen = candidates[:quota]
        counts[source] = len(chosen)
        pairs.extend(chosen)
    if not pairs:
        raise ValueError("no training pairs: every weighted source was empty (check data.data_dir and max_records)")
    rng.shuffle(pairs)
    return pairs, counts


def heldout_medquad_pairs(data: PairData, limit: int | None = None) -> list[Pair]:
    """Held-out MedQuAD *training-split* pairs (never the test split), deduplicated, seeded order."""
    seen: set[str] = set()
    pairs = []
    for record in iter_source_records("medquad", data, split="heldout"):
        pair = record_to_pair("medquad", record, data)
        if pair and pair.anchor not in seen and pair.positive not in seen:
            seen.update((pair.anchor, pair.positive))
            pairs.append(pair)
    random.Random(data.seed).shuffle(pairs)
    return pairs[:limit] if limit else pairs


# ----------------------------------------------------------------------------
# BM25


_WORD = re.compile(r"\w+")


def _bm25_tokens(texts: list[str]) -> list[list[str]]:
    return [_WORD.findall(t.lower()) or ["_"] for t in texts]


class Bm25Index:
    """A small ``bm25s`` index over a list of texts; ``search`` returns indices, best first."""

    def __init__(self, texts: list[str]) -> None:
        import bm25s

        self.texts = texts
        self.retriever = bm25s.BM25()
        self.retriever.index(_bm25_tokens(texts), show_progress=False)

    def search(self, queries: list[str], k: int) -> np.ndarray:
        k = min(k, len(self.texts))
        results, _ = self.retriever.retrieve(_bm25_tokens(queries), k=k, show_progress=False, n_threads=1)
        return np.asarray(results)


def mine_hard_negatives(pairs: list[Pair], data: PairData, count: int | None = None) -> None:
    """Fill ``pair.negatives`` in place with BM25 hits among same-source positives."""
    count = data.hard_negatives if count is None else count
    if count <= 0:
        return
    by_source: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_source.setdefault(p.source, []).append(i)
    for members in by_source.values():
        pool = [pairs[i].positive for i in members]
        if len(set(pool)) < 2:
            continue
        index = Bm25Index(pool)
        k = min(len(pool), 1 + data.mine_skip_top + max(count, data.mine_top_k))
        hits = index.search([pairs[i].anchor for i in members], k)
        for row, i in enumerate(members):
            own = pairs[i].positive
            ranked = [pool[j] for j in hits[row] if j != row and pool[j] != own]
            ranked = list(dict.fromkeys(ranked))[data.mine_skip_top :]
            pairs[i].negatives = ranked[:count]
    # pairs left short (tiny or one-text pools) get random positives of other pairs
    refill_negatives(pairs, count, data.seed)


def refill_negatives(pairs: list[Pair], count: int, seed: int) -> None:
    """Top up pairs holding fewer than ``count`` negatives with random positives of other pairs."""
    everything = list(dict.fromkeys(p.positive for p in pairs))
    rng = random.Random(seed)
    for pair in pairs:
        if len(pair.negatives) >= count:
            continue
        others = [t for t in everything if t != pair.positive and t not in pair.negatives]
        while len(pair.negatives) < count and others:
            pair.negatives.append(others.pop(rng.randrange(len(others))))
        if len(pair.negatives) < count:
            raise ValueError(f"cannot find {count} distinct negatives: only {len(everything)} distinct positives")


def drop_teacher_false_negatives(pairs: list[Pair], embed, keep: int, seed: int = 0) -> dict[str, int]:
    """Remove mined negatives the teacher scores at or above the pair's positive, keep the ``keep`` hardest.

    ``embed(texts) -> normalised matrix`` is the teacher (cached). BM25's top hits for a
    question often *answer* it (another collection's page on the same disease); training
    them apart from the question teaches the wrong thing. Pairs left short are refilled
    with random positives, as mining does.
    """
    texts = list(dict.fromkeys(t for p in pairs for t in (p.anchor, p.positive, *p.negatives)))
    index = {t: i for i, t in enumerate(texts)}
    vectors = embed(texts)
    dropped = 0
    for pair in pairs:
        anchor = vectors[index[pair.anchor]]
        positive_score = float(anchor @ vectors[index[pair.positive]])
        kept = [n for n in pair.negatives if float(anchor @ vectors[index[n]]) < positive_score]
        dropped += len(pair.negatives) - len(kept)
        pair.negatives = kept[:keep]
    short = sum(len(p.negatives) < keep for p in pairs)
    refill_negatives(pairs, keep, seed)
    return {"candidates_dropped": dropped, "pairs_refilled": short}


# ----------------------------------------------------------------------------
# Retrieval metric


def mrr_at_k(rankings: np.ndarray, k: int = 10) -> float:
    """MRR@k when query ``i``'s relevant document is document ``i``; ``rankings`` is ``(Q, >=k)``."""
    total = 0.0
    for i, row in enumerate(rankings):
        hits = np.nonzero(np.asarray(row[:k]) == i)[0]
        total += 1.0 / (hits[0] + 1) if hits.size else 0.0
    return total / max(len(rankings), 1)


def bm25_mrr(pairs: list[Pair], k: int = 10) -> float:
    """MRR@k of BM25 over the eval pairs' positives (a lexical reference point)."""
    index = Bm25Index([p.positive for p in pairs])
    return mrr_at_k(index.search([p.anchor for p in pairs], k), k)
