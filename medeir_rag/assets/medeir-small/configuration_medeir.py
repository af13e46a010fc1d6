# Generated from medeir_rag/model/configuration.py (medeir_rag 0.1.0) when this model was saved,
# so the folder loads with trust_remote_code=True without medeir_rag installed. Do not edit.
"""The ``medeir`` model configuration and its size presets.

Design choices (see ``modeling.py`` for the block itself):
- No position embeddings. Attention carries a symmetric ALiBi bias ``-slope_h * |i - j|``,
  so the model runs at any length up to ``max_position_embeddings`` (8,192) even when it
  was trained on 512-token sequences.
- Pre-norm blocks with a GeGLU feed-forward. ``intermediate_size`` is the width of *one*
  GLU branch; presets use about 8/3 x hidden so a GLU layer costs what a 4x GELU MLP costs.
- ``attention_backend`` picks how attention is computed; ``"auto"`` chooses per call
  (see ``attention.py``). It is a runtime choice, not a property of the weights.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/model/configuration.py``.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

ATTENTION_BACKENDS = ("auto", "sdpa", "blocked", "flex", "flash")

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128),
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=2048),
}


class MedeirConfig(PretrainedConfig):
    """Configuration of a medeir ALiBi encoder.

    Args:
        vocab_size: size of the tokenizer's vocabulary.
        hidden_size: width of the residual stream.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: attention heads; ALiBi slopes are derived for any count.
        intermediate_size: width of each GeGLU branch.
        hidden_dropout_prob: dropout on the residual branches and embeddings.
        attention_probs_dropout_prob: dropout on attention weights (training only).
        max_position_embeddings: the longest input accepted (no table is allocated for it).
        layer_norm_eps: epsilon of every LayerNorm.
        initializer_range: std of the normal initialisation.
        attention_backend: ``auto``, ``sdpa``, ``blocked``, ``flex`` or ``flash``.
        attention_block_size: query-block length of the memory-bounded ``blocked`` backend.
        blocked_attention_threshold: ``auto`` switches to ``blocked`` when the full bias of a
            batch, ``batch * heads * length**2`` elements, would exceed this many elements.
        classifier_dropout: dropout before the sequence-classification head.
        pad_token_id: id of ``[PAD]``.
        tie_word_embeddings: share the MLM decoder with the input embeddings.
    """

    model_type = "medeir"

    def __init__(
        self,
        vocab_size: int = 32768,
        hidden_size: int = 384,
        num_hidden_layers: int = 6,
        num_attention_heads: int = 12,
        intermediate_size: int = 1024,
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        max_position_embeddings: int = 8192,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        attention_backend: str = "auto",
        attention_block_size: int = 512,
        blocked_attention_threshold: int = 2**26,
        classifier_dropout: float = 0.0,
        pad_token_id: int = 0,
        tie_word_embeddings: bool = True,
        **kwargs: Any,
    ) -> None:
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {ATTENTION_BACKENDS}, got {attention_backend!r}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.attention_backend = attention_backend
        self.attention_block_size = attention_block_size
        self.blocked_attention_threshold = blocked_attention_threshold
        self.classifier_dropout = classifier_dropout
        super().__init__(pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MedeirConfig:
        """Build the config of a named preset (``tiny``, ``small``, ``base``), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})
