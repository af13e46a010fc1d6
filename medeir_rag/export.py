"""Saving medeir models as standard sentence-transformers directories.

Why stock modules: a ``modules.json`` that names only ``sentence_transformers`` classes
(``Transformer`` + ``Pooling`` + ``Normalize``) loads with ``SentenceTransformer(path)``
without ``trust_remote_code``; the custom part is the transformers ``model_type="medeir"``,
registered when ``medeir_rag`` is imported. Haystack and LlamaIndex load such a directory
with their default settings.

Prompts are saved under ``query``, ``document`` and ``text``: sentence-transformers'
``encode_document`` looks for ``document``; LlamaIndex asks for ``text``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

QUERY_PROMPT = "query: "
DOCUMENT_PROMPT = "passage: "
DEFAULT_PROMPTS = {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT, "text": DOCUMENT_PROMPT}


def _st_modules():
    """The Transformer/Pooling/Normalize classes, wherever this sentence-transformers keeps them."""
    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers releases before the 6.x package split
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


def save_sentence_transformer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    prompts: dict[str, str] | None = None,
    max_seq_length: int | None = None,
    normalize: bool = True,
) -> Path:
    """Save an encoder (``MedeirModel`` or the encoder inside an MLM) as an ST directory.

    Args:
        model: a ``MedeirModel``; a ``MedeirForMaskedLM`` is unwrapped to its encoder.
        tokenizer: the medical tokenizer.
        path: output directory.
        prompts: named prompts; defaults to ``DEFAULT_PROMPTS``.
        max_seq_length: the window encode uses; defaults to ``max_position_embeddings``.
        normalize: append a ``Normalize`` module (cosine similarity == dot product).
    """
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize = _st_modules()
    encoder = getattr(model, "medeir", model)
    path = Path(path)
    max_seq_length = max_seq_length or encoder.config.max_position_embeddings
    with tempfile.TemporaryDirectory() as staging:
        encoder.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        transformer = Transformer(staging, max_seq_length=max_seq_length)
        modules = [transformer, Pooling(encoder.config.hidden_size, pooling_mode="mean")]
        if normalize:
            modules.append(Normalize())
        st_model = SentenceTransformer(
            modules=modules, prompts=prompts or dict(DEFAULT_PROMPTS), similarity_fn_name="cosine", device="cpu"
        )
        st_model.save(str(path))
    return path


def save_cross_encoder(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    max_length: int = 512,
) -> Path:
    """Save a ``MedeirForSequenceClassification`` (``num_labels=1``) as a ``CrossEncoder`` directory.

    ``max_length`` is the pair window; rerankers rarely need more than 512 tokens, and every
    extra token costs quadratically on each of the ``top_k`` candidates.
    """
    from sentence_transformers import CrossEncoder

    path = Path(path)
    with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        cross_encoder = CrossEncoder(staging, num_labels=model.config.num_labels, max_length=max_length, device="cpu")
        cross_encoder.save(str(path))
    return path
