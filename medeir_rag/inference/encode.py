"""The one encode path every integration uses: texts in, normalised embeddings out.

Design choices:
- Tokenise everything once (the Rust tokenizer parallelises a whole list), then sort by
  token length and cut batches by a *token budget* (``batch_tokens`` = batch x padded
  length), not a fixed batch size: short texts go in big batches, long ones in small
  batches, and padding stays near zero. A second, quadratic budget keeps each batch's
  ALiBi bias small enough for the full-speed attention backend. This is where the speed
  over ``SentenceTransformer.encode`` (fixed batches, character-length sort) comes from.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/encode.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.model.modeling import MedeirModel, mean_pool

logger = logging.getLogger(__name__)

OverlongPolicy = Literal["error", "truncate", "chunk"]
OVERLONG_POLICIES = ("error", "truncate", "chunk")
PROGRESS_BAR_MIN_TEXTS = 256
DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward pass: every encode path's default


def validate_texts(texts: object) -> tuple[list[str], bool]:
    """Return ``(texts_as_list, was_single_string)`` or raise ``TypeError`` naming the bad item."""
    if isinstance(texts, str):
        return [texts], True
    if texts is None:
        raise TypeError("texts must be a string or a list of strings, got None")
    if isinstance(texts, (bytes, Mapping, AbstractSet)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] must be a string, got {type(text).__name__}")
    return texts, False


def check_truncate_dim(truncate_dim: object, dimension: int, name: str = "truncate_dim") -> int | None:
    """``truncate_dim`` once it is ``None`` or an integer in ``1..dimension``.

    ``0`` does not mean "full size" and ``True`` does not mean 1: both are refused, like a
    negative value or one above the model's width (which would make an empty collection of
    the wrong size before the first encode failed).
    """
    if truncate_dim is None:
        return None
    if not isinstance(truncate_dim, int) or isinstance(truncate_dim, bool) or not 0 < truncate_dim <= dimension:
        raise InvalidArgumentError(
            f"{name} must be None or an integer in 1..{dimension} (the model's width), got {truncate_dim!r}"
        )
    return truncate_dim


def _warn_all_unknown(token_ids: Sequence[Sequence[int]], texts: Sequence[str], unk_id: int | None,
                      prompt_tokens: int) -> None:
    """Warn when a non-empty text tokenises to nothing but ``[UNK]`` (CJK text, for one, with the
    medical vocabulary): every such text of the same length embeds identically."""
    if unk_id is None:
        return
    unknown = [i for i, ids in enumerate(token_ids)
               if texts[i].strip() and len(ids) > 2 + prompt_tokens and ids.count(unk_id) >= len(ids) - 2 - prompt_tokens]
    if unknown:
        logger.warning(
            "%d of %d text(s) tokenise to nothing but [UNK] (texts%s): the tokenizer has no pieces for their "
            "characters (e.g. CJK script), so their embeddings carry no meaning and differ only by length",
            len(unknown), len(texts), unknown[:10],
        )


def batches_by_token_budget(
    lengths: Sequence[int], batch_tokens: int, max_batch_size: int, max_attention_elements: int | None = None
) -> list[list[int]]:
    """Group indices (sorted longest first) so that ``len(batch) * longest <= batch_tokens``
    and, when given, ``len(batch) * longest**2 <= max_attention_elements``.

    The second bound keeps a batch's attention bias (``batch * heads * L**2``) under the
    size at which the model would switch to the slower memory-bounded backend: long texts
    then run as small full-speed batches instead of one big blocked batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        size = len(current) + 1
        full = size * longest > batch_tokens or len(current) >= max_batch_size
        if max_attention_elements is not None:
            full = full or size * longest * longest > max_attention_elements
        if current and full:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _fit_to_window(
    token_ids: list[list[int]], window: int, policy: OverlongPolicy, cls_id: int, sep_id: int,
    prompt_ids: Sequence[int] = (),
) -> tuple[list[list[int]], list[int]]:
    """Apply the overlong policy. Returns ``(sequences, owner)``: ``owner[k]`` is the input
    that sequence ``k`` belongs to (several sequences per input when chunking).

    Each input is ``[CLS] prompt_ids text [SEP]``; when chunking, every window gets the
    prompt (``[CLS] prompt_ids piece [SEP]``), not only the first one.
    """
    over = [i for i, ids in enumerate(token_ids) if len(ids) > window]
    if over and policy == "error":
        worst = max(len(token_ids[i]) for i in over)
        raise ValueError(
            f"{len(over)} input(s) exceed the {window}-token window (longest {worst} tokens, "
            f"indices {over[:10]}); pass overlong='truncate' or 'chunk', or split the documents first"
        )
    if over:
        logger.warning(
            "%d of %d input(s) exceed the %d-token window (longest %d tokens); %s",
            len(over), len(token_ids), window, max(len(token_ids[i]) for i in over),
            "truncating them" if policy == "truncate" else "encoding them as averaged chunks",
        )
    prompt_ids = list(prompt_ids)
    body = window - 2 - len(prompt_ids)
    if over and policy == "chunk" and body <= 0:
        raise ValueError(
            f"the prompt takes {len(prompt_ids)} tokens, leaving no room for text in the {window}-token window"
        )
    sequences: list[list[int]] = []
    owner: list[int] = []
    for index, ids in enumerate(token_ids):
        if len(ids) <= window:
            sequences.append(ids)
            owner.append(index)
        elif policy == "truncate":
            sequences.append([*ids[: window - 1], sep_id])
            owner.append(index)
        else:
            content = ids[1 + len(prompt_ids) : -1]
            for start in range(0, len(content), body):
                sequences.append([cls_id, *prompt_ids, *content[start : start + body], sep_id])
                owner.append(index)
    return sequences, owner


def _prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, texts: list[str], token_ids: list[list[int]], window: int
) -> list[int]:
    """The prompt's tokens, and make every over-long input start with exactly them.

    ``prompt + text`` is tokenised as one string (as sentence-transformers does); for a prompt
    that ends inside a word the pieces can merge across the join, so such an input is
    re-tokenised as prompt and text separately (only over-long ones: the rest stay as they are).
    """
    if not prompt:
        return []
    prompt_ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
    for index, ids in enumerate(token_ids):
        if len(ids) > window and ids[1 : 1 + len(prompt_ids)] != prompt_ids:
            text_ids = tokenizer(texts[index], add_special_tokens=False, verbose=False)["input_ids"]
            token_ids[index] = [ids[0], *prompt_ids, *text_ids, ids[-1]]
    return prompt_ids


@torch.inference_mode()
def encode(
    model: MedeirModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: str | Sequence[str],
    *,
    prompt: str = "",
    max_length: int | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch_size: int = 512,
    normalize: bool = True,
    truncate_dim: int | None = None,
    overlong: OverlongPolicy = "truncate",
    autocast_dtype: torch.dtype | None = None,
    show_progress: bool | None = None,
) -> np.ndarray:
    """Embed texts with a medeir encoder.

    Args:
        model: the encoder (a ``MedeirModel`` or an ``OnnxEncoderModel``); it stays on
            whatever device it is on.
        tokenizer: its tokenizer.
        texts: one string (returns shape ``(dim,)``) or a sequence of strings (``(n, dim)``).
        prompt: prepended to every text (e.g. ``"query: "``).
        max_length: the window in tokens, special tokens included; defaults to the model's
            ``max_position_embeddings`` (8,192).
        batch_tokens: padded tokens per forward pass; memory grows with it.
        max_batch_size: cap on texts per batch, however short.
        normalize: L2-normalise (after ``truncate_dim``).
        truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka).
        overlong: ``"error"``, ``"truncate"`` (with a logged warning) or ``"chunk"``.
        autocast_dtype: ``torch.bfloat16``/``torch.float16`` to run under autocast.
        show_progress: progress bar; ``None`` shows one for 256 texts or more.

    Returns:
        ``float32`` numpy array.
    """
    texts, single = validate_texts(texts)
    if overlong not in OVERLONG_POLICIES:
        raise ValueError(f"overlong must be one of {OVERLONG_POLICIES}, got {overlong!r}")
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
    dimension = model.config.hidden_size
    check_truncate_dim(truncate_dim, dimension)
    if not texts:
        return np.zeros((0, truncate_dim or dimension), dtype=np.float32)
    window = min(max_length or model.config.max_position_embeddings, model.config.max_position_embeddings)
    if window < 3:
        raise ValueError(f"max_length must be at least 3 tokens, got {window}")

    token_ids = tokenizer([prompt + text for text in texts], add_special_tokens=True, verbose=False)["input_ids"]
    prompt_tokens = len(tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]) if prompt else 0
    _warn_all_unknown(token_ids, texts, tokenizer.unk_token_id, prompt_tokens)
    prompt_ids = _prompt_token_ids(tokenizer, prompt, texts, token_ids, window) if overlong == "chunk" else []
    sequences, owner = _fit_to_window(
        token_ids, window, overlong, tokenizer.cls_token_id, tokenizer.sep_token_id, prompt_ids
    )
    lengths = [len(ids) for ids in sequences]
    attention_budget = model.config.blocked_attention_threshold // model.config.num_attention_heads
    batches = batches_by_token_budget(lengths, max(batch_tokens, window), max_batch_size, attention_budget)

    device = model.device
    pad_id = tokenizer.pad_token_id
    pooled = torch.empty((len(sequences), dimension), dtype=torch.float32)
    if show_progress is None:
        show_progress = len(texts) >= PROGRESS_BAR_MIN_TEXTS
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(sequences), desc="Encoding", unit="text", disable=not show_progress) as progress:
            for batch in batches:
                longest = lengths[batch[0]]
                input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
                for row, index in enumerate(batch):
                    input_ids[row, : lengths[index]] = torch.tensor(sequences[index])
                    attention_mask[row, : lengths[index]] = 1
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                pooled[batch] = mean_pool(hidden.float(), attention_mask).cpu()
                progress.update(len(batch))
    finally:
        model.train(was_training)

    if len(sequences) != len(texts):  # chunked inputs: token-weighted mean of their chunks
        weights = torch.tensor(lengths, dtype=torch.float32)[:, None]
        owner_index = torch.tensor(owner)
        summed = torch.zeros((len(texts), dimension)).index_add_(0, owner_index, pooled * weights)
        totals = torch.zeros((len(texts), 1)).index_add_(0, owner_index, weights)
        pooled = summed / totals
    if truncate_dim is not None:
        pooled = pooled[:, :truncate_dim]
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    embeddings = pooled.numpy()
    return embeddings[0] if single else embeddings
