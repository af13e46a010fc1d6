# Generated from medeir_rag/model/attention.py (medeir_rag 0.1.0) when this model was saved,
# so the folder loads with trust_remote_code=True without medeir_rag installed. Do not edit.
"""ALiBi attention for a bidirectional encoder, with four interchangeable backends.

Design choices:
- The bias is symmetric, ``-slope_h * |i - j|`` (MosaicBERT's encoder ALiBi): a token
  prefers its neighbours on both sides equally. Slopes follow Press et al.: a geometric
  sequence for a power-of-two head count, and for other counts the slopes of the next
  power of two interleaved in.
- ``sdpa``: one additive bias, ALiBi plus padding, built once per forward in the compute
  dtype and shared by every layer, fed to ``scaled_dot_product_attention`` as ``attn_mask``.
  Fastest for ordinary batches; its bias is ``batch * heads * L**2`` elements.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/model/attention.py``.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# ALiBi maths


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (float32, shape ``(num_heads,)``), for any head count."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two_slopes(closest)
        slopes += power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(
    slopes: torch.Tensor,
    query_length: int,
    key_length: int,
    *,
    query_offset: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The ALiBi bias ``-slope_h * |i - j|`` of shape ``(heads, query_length, key_length)``.

    ``query_offset`` shifts the query positions, for one block of a longer sequence.
    """
    device = slopes.device
    query_positions = torch.arange(query_offset, query_offset + query_length, device=device)
    key_positions = torch.arange(key_length, device=device)
    distance = (query_positions[:, None] - key_positions[None, :]).abs().to(torch.float32)
    return (-slopes.to(torch.float32)[:, None, None] * distance).to(dtype)


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(batch, 1, 1, keys)`` additive bias: 0 for real tokens, the dtype's minimum for padding.

    The finite minimum (not ``-inf``) keeps fully padded rows from producing NaN.
    """
    keep = attention_mask.to(torch.bool)[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device).masked_fill(
        ~keep, torch.finfo(dtype).min
    )


# -----------------------------------------------------------------------------
# Backend availability and choice


def is_exporting() -> bool:
    """True while ``torch.export`` (and so ``torch.onnx.export(dynamo=True)``) traces the model.

    The traced graph must not branch on tensor values or shapes: ``auto`` then resolves to
    ``sdpa`` and the padding bias is always added (``medeir export --onnx``).
    """
    exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.5; copies in saved folders run on older ones
    return bool(exporting and exporting()) or torch.onnx.is_in_onnx_export()


@lru_cache(maxsize=1)
def flash_attn_available() -> bool:
    """True when the optional ``flash-attn`` package is importable."""
    return importlib.util.find_spec("flash_attn") is not None


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """FlexAttention on CUDA compiles through Triton."""
    return importlib.util.find_spec("triton") is not None


def choose_backend(
    requested: str,
    *,
    device: torch.device,
    batch_size: int,
    num_heads: int,
    length: int,
    blocked_threshold: int,
    training: bool,
    dropout: float,
) -> str:
    """Resolve ``requested`` (possibly ``"auto"``) into the backend to run.

    ``auto``: on CUDA, ``flash`` when flash-attn is installed, else ``flex`` when Triton is
    (both skip padding entirely); without attention dropout in training only, because neither
    packed path implements it. Elsewhere, ``sdpa`` unless the full bias would exceed
    ``blocked_threshold`` elements, then ``blocked``. While exporting (``is_exporting``), ``auto``
    is ``sdpa``: one graph for every batch size and length.
    """
    if requested == "flash":
        if device.type != "cuda" or not flash_attn_available():
            raise RuntimeError("attention_backend='flash' needs a CUDA device and the flash-attn package")
        return "flash"
    if requested in ("sdpa", "blocked", "flex"):
        return requested
    if is_exporting():
        return "sdpa"
    if device.type == "cuda" and not (training and dropout > 0):
        if flash_attn_available():
            return "flash"
        if triton_available():
            return "flex"
    if batch_size * num_heads * length * length > blocked_threshold:
        return "blocked"
    return "sdpa"


# -----------------------------------------------------------------------------
# Contexts: everything an attention call needs that is the same for all layers


@dataclass
class PaddedAttention:
    """Attention over padded ``(batch, heads, length, head_dim)`` tensors (``sdpa``/``blocked``).

    Built once per forward and shared by every layer. ``sdpa`` keeps the whole bias;
    ``blocked`` rebuilds one query block's bias at a time into buffers reused across blocks
    and layers (fresh 100+ MB allocations per block cost more than the attention itself);
    with autograd on, each block gets its own buffer because backward reads the masks.
    """

    slopes: torch.Tensor
    attention_mask: torch.Tensor  # (batch, length), 1 = real token
    dtype: torch.dtype
    blocked: bool
    block_size: int
    dropout: float = 0.0

    def __post_init__(self) -> None:
        length = self.attention_mask.shape[1]
        # a batch without padding skips the padding bias (eagerly only: under torch.export the
        # mask's values are unknown, so the bias, zero on real tokens, is always added)
        has_padding = is_exporting() or not bool(self.attention_mask.bool().all())
        self._padding = padding_bias(self.attention_mask, self.dtype) if has_padding else None  # (B,1,1,L)
        self._full_bias: torch.Tensor | None = None
        self._buffers: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        if not self.blocked:
            bias = alibi_bias(self.slopes, length, length, dtype=self.dtype)[None]  # (1, H, L, L)
            self._full_bias = bias + self._padding if self._padding is not None else bias

    def _block_bias(self, start: int, stop: int, length: int) -> torch.Tensor:
        """The ``(B or 1, H, stop - start, L)`` bias of one query block, in a reused buffer."""
        rows = stop - start
        if rows not in self._buffers or torch.is_grad_enabled():  # autograd keeps each block's mask
            heads = self.slopes.shape[0]
            alibi = torch.empty((1, heads, rows, length), dtype=self.dtype, device=self.slopes.device)
            full = None if self._padding is None else torch.empty(
                (self._padding.shape[0], heads, rows, length), dtype=self.dtype, device=self.slopes.device
            )
            self._buffers[rows] = (alibi, full)
        alibi, full = self._buffers[rows]
        device = self.slopes.device
        positions = torch.arange(length, device=device, dtype=torch.float32)
        distance = (positions[start:stop, None] - positions[None, :]).abs_().to(self.dtype)  # (rows, L)
        torch.mul(distance[None, None], -self.slopes.to(self.dtype)[None, :, None, None], out=alibi)
        if full is None:
            return alibi
        return torch.add(alibi, self._padding, out=full)

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``query/key/value``: ``(B, H, L, D)``; returns ``(B, H, L, D)``."""
        if not self.blocked:
            return F.scaled_dot_product_attention(
                query, key, value, attn_mask=self._full_bias, dropout_p=self.dropout
            )
        length = query.shape[2]
        output = torch.empty_like(query)
        for start in range(0, length, self.block_size):
            stop = min(start + self.block_size, length)
            output[:, :, start:stop] = F.scaled_dot_product_attention(
                query[:, :, start:stop], key, value, attn_mask=self._block_bias(start, stop, length),
                dropout_p=self.dropout,
            )
        return output


@dataclass
class PackedAttention:
    """Attention over unpadded tokens packed into one row (``flex``/``flash``).

    ``cu_seqlens`` are the cumulative sequence lengths (``[0, l0, l0+l1, ...]``, int32).
    """

    slopes: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    backend: str  # "flex" or "flash"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        total = int(self.cu_seqlens[-1])
        if self.backend == "flex":
            lengths = self.cu_seqlens[1:] - self.cu_seqlens[:-1]
            document_ids = torch.repeat_interleave(
                torch.arange(len(lengths), device=self.cu_seqlens.device), lengths
            )
            self._score_mod, self._block_mask = _flex_alibi(self.slopes, document_ids, total)

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``query/key/value``: ``(total_tokens, H, D)``; returns ``(total_tokens, H, D)``."""
        if self.backend == "flash":
            try:  # optional; in a try block, transformers' remote-code check does not require it
                from flash_attn import flash_attn_varlen_func
            except ImportError as error:
                raise RuntimeError("attention_backend='flash' needs the flash-attn package") from error

            return flash_attn_varlen_func(
                query, key, value, self.cu_seqlens, self.cu_seqlens, self.max_seqlen, self.max_seqlen,
                dropout_p=self.dropout, causal=False, alibi_slopes=self.slopes.to(torch.float32),
            )
        # FlexAttention wants (1, H, T, D).
        out = _flex_attention(
            query.transpose(0, 1)[None], key.transpose(0, 1)[None], value.transpose(0, 1)[None],
            score_mod=self._score_mod, block_mask=self._block_mask,
        )
        return out[0].transpose(0, 1)


def _flex_alibi(slopes: torch.Tensor, document_ids: torch.Tensor, total: int):
    """The ALiBi ``score_mod`` and the document ``BlockMask`` of one packed batch.

    Sequences sit contiguously in the packed row, so within a document ``|q_idx - kv_idx|``
    is exactly the token distance; the mask forbids attention across documents.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    slopes = slopes.to(torch.float32)

    def alibi_score_mod(score, batch, head, q_idx, kv_idx):
        return score - slopes[head] * (q_idx - kv_idx).abs()

    def same_document(batch, head, q_idx, kv_idx):
        return document_ids[q_idx] == document_ids[kv_idx]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block_mask = create_block_mask(
            same_document, None, None, total, total, device=str(document_ids.device)
        )
    return alibi_score_mod, block_mask


def _flex_attention(query, key, value, *, score_mod, block_mask):
    """FlexAttention, compiled on CUDA (the fused kernel); eager elsewhere (reference maths)."""
    from torch.nn.attention.flex_attention import flex_attention

    if query.device.type == "cuda":
        return _compiled_flex_attention()(query, key, value, score_mod=score_mod, block_mask=block_mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return flex_attention(query, key, value, score_mod=score_mod, block_mask=block_mask)


@lru_cache(maxsize=1)
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)
