# Generated from medeir_rag/model/modeling.py (medeir_rag 0.1.0) when this model was saved,
# so the folder loads with trust_remote_code=True without medeir_rag installed. Do not edit.
"""The medeir encoder: a BERT-style bidirectional transformer with ALiBi attention.

Design choices (anchors: MosaicBERT for ALiBi + GLU, ModernBERT/nanochat for pre-norm):
- No position embeddings. ALiBi (``attention.py``) encodes distance inside attention, so a
  model trained at 512 tokens runs at 8,192 without new parameters.
- Pre-norm residual blocks (``x + f(LN(x))``) plus a final LayerNorm. Pre-norm trains stably
  at the high learning rates a from-scratch MLM wants, with no warmup tricks; MosaicBERT's
  post-norm needs more care and gains little at our sizes.
- GeGLU feed-forward (MosaicBERT, ModernBERT): better MLM loss than a GELU MLP at the same
  parameter count, which is why presets use an ~8/3 x hidden branch width.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/model/modeling.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput, SequenceClassifierOutput

from .attention_medeir import PackedAttention, PaddedAttention, alibi_slopes, choose_backend
from .configuration_medeir import MedeirConfig

AttentionContext = PaddedAttention | PackedAttention

# -----------------------------------------------------------------------------
# Blocks


class MedeirEmbeddings(nn.Module):
    """Token embeddings, LayerNorm, dropout. Nothing positional: ALiBi does that."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        return self.dropout(self.norm(inputs_embeds))


class MedeirAttention(nn.Module):
    """Multi-head self-attention; the backend-specific part lives in the context object."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        qkv = self.qkv(hidden)
        if isinstance(context, PackedAttention):  # hidden: (T, C)
            q, k, v = qkv.view(-1, 3, self.num_heads, self.head_dim).unbind(1)  # (T, H, D) each
            attended = context(q, k, v).reshape(hidden.shape)
        else:  # hidden: (B, L, C)
            batch, length, _ = hidden.shape
            qkv = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            attended = context(qkv[0], qkv[1], qkv[2])  # (B, H, L, D)
            attended = attended.transpose(1, 2).reshape(hidden.shape)
        return self.out(attended)


class MedeirGeGLU(nn.Module):
    """``W_o(gelu(W_g x) * W_u x)``: the gated feed-forward."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__()
        self.wi = nn.Linear(config.hidden_size, 2 * config.intermediate_size)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = self.wi(hidden).chunk(2, dim=-1)
        return self.wo(F.gelu(gate) * up)


class MedeirLayer(GradientCheckpointingLayer):
    """One pre-norm block: ``x + attn(LN(x))`` then ``x + ffn(LN(x))``."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = MedeirAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MedeirGeGLU(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        hidden = hidden + self.dropout(self.attention(self.attention_norm(hidden), context))
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden)))


# -----------------------------------------------------------------------------
# Models


class MedeirPreTrainedModel(PreTrainedModel):
    """Shared weight initialisation and metadata of the medeir models."""

    config_class = MedeirConfig
    config: MedeirConfig
    base_model_prefix = "medeir"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MedeirLayer"]
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Weights from safetensors only, on every path (``SentenceTransformer(dir)``, ``CrossEncoder``,
        ``AutoModel``): a pickle ``.bin`` can run code when it is loaded, so it is refused."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("medeir models load weights from safetensors only; use_safetensors=False is refused")
        folder = Path(str(pretrained_model_name_or_path))
        if folder.is_dir() and not any(folder.glob("*.safetensors")):
            pickled = sorted(p.name for p in folder.glob("*.bin"))
            if pickled:
                raise OSError(f"{folder} holds only pickle weights {pickled}, which medeir refuses to load "
                              "(a pickle can run code); convert them to model.safetensors")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Normal(0, initializer_range); output projections scaled by 1/sqrt(2 * layers) (GPT-2)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            is_output = getattr(module, "_is_residual_output", False)
            init.normal_(module.weight, mean=0.0, std=std / (2 * self.config.num_hidden_layers) ** 0.5 if is_output else std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MedeirModel):
            # a non-persistent buffer: from_pretrained builds the model on the meta device and
            # leaves such buffers uninitialised, so they are set here, not only in __init__
            init.copy_(module.alibi_slopes, alibi_slopes(self.config.num_attention_heads))


class MedeirModel(MedeirPreTrainedModel):
    """The bare encoder: token states of shape ``(batch, length, hidden)``."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__(config)
        self.embeddings = MedeirEmbeddings(config)
        self.layers = nn.ModuleList([MedeirLayer(config) for _ in range(config.num_hidden_layers)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        # (heads,) float32; not saved with the weights (old checkpoints load unchanged), and
        # computed once here rather than on every forward
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)
        for layer in self.layers:
            layer.attention.out._is_residual_output = True
            layer.mlp.wo._is_residual_output = True
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutput:
        """Encode a padded batch. ``token_type_ids`` and other extra keys are ignored.

        Raises ``ValueError`` for inputs longer than ``max_position_embeddings``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        batch, length = shape
        if length > self.config.max_position_embeddings:
            raise ValueError(
                f"input of {length} tokens exceeds max_position_embeddings={self.config.max_position_embeddings}; "
                "truncate or chunk it (see medeir_rag.inference.encode)"
            )
        hidden = self.embeddings(input_ids, inputs_embeds)
        if attention_mask is None:
            attention_mask = torch.ones(shape, dtype=torch.long, device=hidden.device)

        backend = choose_backend(
            self.config.attention_backend,
            device=hidden.device,
            batch_size=batch,
            num_heads=self.config.num_attention_heads,
            length=length,
            blocked_threshold=self.config.blocked_attention_threshold,
            training=self.training,
            dropout=self.config.attention_probs_dropout_prob,
        )
        dropout = self.config.attention_probs_dropout_prob if self.training else 0.0
        slopes = self.alibi_slopes.to(device=hidden.device, dtype=torch.float32)
        all_hidden: list[torch.Tensor] = []

        if backend in ("flex", "flash"):
            keep = attention_mask.reshape(-1).bool()
            indices = keep.nonzero().squeeze(1)
            lengths = attention_mask.sum(dim=1, dtype=torch.int32)
            cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
            context: AttentionContext = PackedAttention(
                slopes, cu_seqlens, int(lengths.max()), backend=backend, dropout=dropout
            )
            flat = hidden.reshape(batch * length, -1)
            packed = flat[indices]  # (T, C)

            def unpack(x: torch.Tensor) -> torch.Tensor:
                return flat.new_zeros(flat.shape).index_copy(0, indices, x).view(batch, length, -1)

            for layer in self.layers:
                if output_hidden_states:
                    all_hidden.append(unpack(packed))
                packed = layer(packed, context)
            hidden = unpack(self.final_norm(packed))
        else:
            context = PaddedAttention(
                slopes, attention_mask, dtype=self._compute_dtype(hidden), blocked=backend == "blocked",
                block_size=self.config.attention_block_size, dropout=dropout,
            )
            for layer in self.layers:
                if output_hidden_states:
                    all_hidden.append(hidden)
                hidden = layer(hidden, context)
            hidden = self.final_norm(hidden)

        if output_hidden_states:
            all_hidden.append(hidden)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=tuple(all_hidden) if output_hidden_states else None)

    def _compute_dtype(self, hidden: torch.Tensor) -> torch.dtype:
        """The dtype q/k/v will have: the autocast dtype when autocast is on, else the weights'.

        A dynamically quantised ``qkv`` (``torch.ao.quantization.quantize_dynamic``, the int8
        precision) has a ``weight()`` method, not a tensor, and returns float32 like its input:
        then the hidden states' dtype is the answer.
        """
        if torch.is_autocast_enabled(hidden.device.type):
            return torch.get_autocast_dtype(hidden.device.type)
        weight = self.layers[0].attention.qkv.weight if len(self.layers) else None
        return weight.dtype if isinstance(weight, torch.Tensor) else hidden.dtype


class MedeirPredictionHead(nn.Module):
    """Dense, GELU, LayerNorm: the transform before the MLM decoder or the classifier."""

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(hidden)))


@dataclass
class MedeirMaskedLMOutput(MaskedLMOutput):
    """``MaskedLMOutput`` plus ``masked_logits``: ``(num_masked, vocab)``, the logits at the
    labelled positions only, in the order of ``labels[labels != -100]`` (``None`` without labels)."""

    masked_logits: torch.FloatTensor | None = None


class MedeirForMaskedLM(MedeirPreTrainedModel):
    """Encoder plus masked-LM head, decoder tied to the token embeddings.

    Output shapes (``return_logits`` is a keyword of ``forward``):

    - without ``labels``: ``logits`` is ``(B, L, vocab)``; no loss.
    - with ``labels``: ``loss`` and ``masked_logits`` (``(num_masked, vocab)``, the labelled
      positions only, which is all the loss needs: the full ``(B, L, vocab)`` tensor would
      cost more memory than the whole encoder for a 30%-masking MLM step).
      ``return_logits=True`` adds the full ``(B, L, vocab)`` ``logits``; otherwise ``logits``
      is ``None``: ``logits`` is always ``(B, L, vocab)`` when it is present.
    """

    _tied_weights_keys = {"decoder.weight": "medeir.embeddings.word_embeddings.weight"}

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__(config)
        self.medeir = MedeirModel(config)
        self.head = MedeirPredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        return_logits: bool | None = None,
        **kwargs: Any,
    ) -> MedeirMaskedLMOutput:
        """Masked-LM forward; see the class docstring for the shapes of the outputs."""
        outputs = self.medeir(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        hidden = outputs.last_hidden_state
        if labels is None:
            logits = self.decoder(self.head(hidden)) if return_logits is not False else None
            return MedeirMaskedLMOutput(logits=logits, hidden_states=outputs.hidden_states)
        if return_logits:  # every position, then the labelled rows of it
            logits = self.decoder(self.head(hidden))
            selected = labels != -100
            masked_logits = logits[selected]
        else:
            selected = labels.reshape(-1) != -100
            masked_logits = self.decoder(self.head(hidden.reshape(-1, hidden.shape[-1])[selected]))
            logits = None
        loss = F.cross_entropy(masked_logits.float(), labels[labels != -100])
        return MedeirMaskedLMOutput(
            loss=loss, logits=logits, masked_logits=masked_logits, hidden_states=outputs.hidden_states
        )


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Average of the token states over real (unmasked) tokens: ``(B, L, C) -> (B, C)``."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class MedeirForSequenceClassification(MedeirPreTrainedModel):
    """Encoder, mean pooling, a dense head and a linear classifier (the cross-encoder).

    ``num_labels=1`` gives a relevance score (regression / BCE), which is what
    ``sentence_transformers.CrossEncoder`` expects of a reranker.
    """

    def __init__(self, config: MedeirConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.medeir = MedeirModel(config)
        self.head = MedeirPredictionHead(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        outputs = self.medeir(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )
        pooled = mean_pool(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(self.head(pooled)))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.binary_cross_entropy_with_logits(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


def register_auto_classes() -> None:
    """Register ``model_type="medeir"`` with transformers' Auto classes (idempotent).

    This is what lets ``AutoModel.from_pretrained``, ``SentenceTransformer(path)`` and
    ``CrossEncoder(path)`` load a medeir directory without ``trust_remote_code``.
    """
    AutoConfig.register("medeir", MedeirConfig, exist_ok=True)
    AutoModel.register(MedeirConfig, MedeirModel, exist_ok=True)
    AutoModelForMaskedLM.register(MedeirConfig, MedeirForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(MedeirConfig, MedeirForSequenceClassification, exist_ok=True)
