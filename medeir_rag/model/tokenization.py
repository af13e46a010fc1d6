"""The medeir WordPiece tokenizer: train, wrap, load, and measure fragmentation.

Design choices:

- **WordPiece, BERT-style** (``BertNormalizer`` + ``BertPreTokenizer`` + ``##``
  continuation pieces). The encoder is a bidirectional BERT-like model trained with
  MLM, and WordPiece is the tokenizer that family was built around. It also makes
  the comparison against bert-base-uncased a like-for-like one: same normaliser, same
  pre-tokeniser, only the vocabulary differs, so any change in pieces per word comes
  from the medical vocabulary and nothing else.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/model/tokenization.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import string
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
# Order matters: the trainer assigns ids in this order, so [PAD]=0 ... [MASK]=4.
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)
PAD_TOKEN_ID, UNK_TOKEN_ID, CLS_TOKEN_ID, SEP_TOKEN_ID, MASK_TOKEN_ID = range(len(SPECIAL_TOKENS))

MODEL_MAX_LENGTH = 8192
MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
CONTINUING_SUBWORD_PREFIX = "##"
TOKENIZER_FILE = "tokenizer.json"
# The tokenizer shipped with the package (written by ``python -m medeir_rag.training.tokenizer``).
DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"

_GREEK = "".join(chr(c) for c in range(0x3B1, 0x3CA)) + "".join(chr(c) for c in range(0x391, 0x3AA))
_SYMBOLS = "µ°±×÷≤≥≈≠→←↑↓²³¹½¼¾‰§¶•·′″™®©€£¥"
INITIAL_ALPHABET: tuple[str, ...] = tuple(
    dict.fromkeys(c for c in string.digits + string.ascii_letters + string.punctuation + _GREEK + _SYMBOLS)
)

# ----------------------------------------------------------------------------
# Building and training


def _new_wordpiece(lowercase: bool) -> Tokenizer:
    """An untrained WordPiece pipeline: BERT normaliser and pre-tokeniser, ``##`` pieces."""
    tok = Tokenizer(
        models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX)
    )
    # strip_accents is always on: accents are folded even for a cased vocabulary, so
    # "Ménière" and "Meniere" share pieces.
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUING_SUBWORD_PREFIX)
    return tok


def _add_post_processor(tok: Tokenizer) -> None:
    """``[CLS] $A [SEP]`` and ``[CLS] $A [SEP] $B [SEP]``; type ids stay 0 (they are never returned)."""
    cls_id, sep_id = tok.token_to_id(CLS_TOKEN), tok.token_to_id(SEP_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS_TOKEN} $A {SEP_TOKEN}",
        pair=f"{CLS_TOKEN} $A {SEP_TOKEN} $B {SEP_TOKEN}",
        special_tokens=[(CLS_TOKEN, cls_id), (SEP_TOKEN, sep_id)],
    )


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int = 32768,
    min_frequency: int = 2,
    lowercase: bool = True,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a WordPiece tokenizer on ``texts`` and return it wrapped for transformers.

    ``texts`` is consumed once, as a stream, so a generator over gzip files works and
    the corpus is never held in memory (the trainer keeps only word counts).
    ``min_frequency`` is the minimum count for a merge; 2 drops typos and one-off ids.
    """
    tok = _new_wordpiece(lowercase)
    # A lowercased corpus never contains upper-case letters: do not spend vocab slots on them.
    alphabet = sorted({c.lower() for c in INITIAL_ALPHABET}) if lowercase else list(INITIAL_ALPHABET)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=CONTINUING_SUBWORD_PREFIX,
        initial_alphabet=alphabet,
        show_progress=show_progress,
    )
    # initial_alphabet only seeds word-initial characters; "##c" exists only if c was seen
    # inside a word, so "m²" could still become [UNK]. One extra text with every character
    # in continuation position adds the "##c" pieces (count 1 < min_frequency: no merges).
    seed = " ".join("a" + c for c in alphabet)
    tok.train_from_iterator(itertools.chain(texts, [seed]), trainer=trainer)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        actual = tok.token_to_id(token)
        assert actual == expected_id, f"{token} got id {actual}, expected {expected_id}"
    _add_post_processor(tok)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a raw ``tokenizers.Tokenizer`` with the settings the model relies on.

    These settings (``model_max_length``, special tokens, ``model_input_names``,
    right padding) are written to ``tokenizer_config.json`` by ``save_pretrained``,
    so ``AutoTokenizer.from_pretrained`` on the saved folder gets them back.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=MODEL_MAX_LENGTH,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        cls_token=CLS_TOKEN,
        sep_token=SEP_TOKEN,
        mask_token=MASK_TOKEN,
        model_input_names=list(MODEL_INPUT_NAMES),
        padding_side="right",
    )


# ----------------------------------------------------------------------------
# Loading


def load_tokenizer(path: str | os.PathLike[str] = DEFAULT_TOKENIZER_DIR) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by ``save_pretrained`` (a folder) or a bare ``tokenizer.json``.

    Defaults to the tokenizer shipped in ``medeir_rag/assets/tokenizer``. The file is
    checked up front because transformers' own errors for a missing or broken
    ``tokenizer.json`` point at the Hub or at a Rust parser, not at the file.

    Raises:
        FileNotFoundError: the folder has no ``tokenizer.json``.
        ValueError: ``tokenizer.json`` is not valid JSON or not a tokenizers file.
    """
    path = Path(path)
    file = path if path.is_file() else path / TOKENIZER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"no tokenizer file: {file} does not exist")
    try:
        json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt tokenizer file {file}: not valid JSON ({e})") from e
    try:
        if path.is_file():  # a bare tokenizer.json: apply our wrapper settings
            return wrap_tokenizer(Tokenizer.from_file(str(file)))
        return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # the Rust parser raises a plain Exception on bad structure
        raise ValueError(f"corrupt tokenizer file {file}: {e}") from e


# ----------------------------------------------------------------------------
# Fragmentation


def _pieces(tokenizer: PreTrainedTokenizerFast, words: Sequence[str]) -> list[list[int]]:
    """Token ids of each word without special tokens; one batched (parallel, Rust) call."""
    if not words:
        return []
    return tokenizer(list(words), add_special_tokens=False)["input_ids"]


def pieces_per_word(tokenizer: PreTrainedTokenizerFast, words: Sequence[str]) -> float:
    """Mean number of WordPiece pieces per word (fertility); lower means less fragmentation."""
    ids = _pieces(tokenizer, words)
    return sum(map(len, ids)) / len(ids) if ids else float("nan")


def fragmentation_stats(tokenizer: PreTrainedTokenizerFast, words: Sequence[str]) -> dict[str, float]:
    """How badly ``tokenizer`` splits ``words``.

    Returns a dict with ``words`` (count), ``pieces_per_word`` (mean),
    ``whole_share`` (share of words that are one piece), ``split3_share`` (share of
    words cut into three or more pieces) and ``unk_share`` (share of words that contain
    an ``[UNK]`` piece: such a word has lost its meaning entirely). Each word is
    encoded separately, so a hyphenated term counts all pieces of all its parts.
    """
    ids = _pieces(tokenizer, words)
    n = len(ids)
    if n == 0:
        nan = float("nan")
        return {"words": 0, "pieces_per_word": nan, "whole_share": nan, "split3_share": nan, "unk_share": nan}
    unk = tokenizer.unk_token_id
    lengths = [len(x) for x in ids]
    return {
        "words": n,
        "pieces_per_word": sum(lengths) / n,
        "whole_share": sum(k == 1 for k in lengths) / n,
        "split3_share": sum(k >= 3 for k in lengths) / n,
        "unk_share": sum(unk in x for x in ids) / n,
    }
