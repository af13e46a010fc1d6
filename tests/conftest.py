"""Shared fixtures: a tiny tokenizer and tiny models built in-process (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch

MEDICAL_LINES = [
    "Metformin lowers blood glucose in patients with type 2 diabetes mellitus.",
    "Hypertension is a major risk factor for stroke and myocardial infarction.",
    "The patient was treated with amoxicillin for acute otitis media.",
    "Insulin resistance precedes the onset of diabetes in obese adults.",
    "Chest radiography showed bilateral infiltrates consistent with pneumonia.",
    "Beta blockers reduce mortality after myocardial infarction.",
    "Asthma exacerbations were treated with inhaled corticosteroids.",
    "Chronic kidney disease increases cardiovascular risk.",
    "What are the symptoms of glaucoma? Glaucoma damages the optic nerve.",
    "Vaccination prevents influenza infection in elderly patients.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A ~400-piece WordPiece tokenizer trained on a few medical sentences."""
    from medeir_rag.model.tokenization import train_wordpiece

    return train_wordpiece(MEDICAL_LINES * 20, vocab_size=400, min_frequency=1)


@pytest.fixture(scope="session")
def tiny_config(tiny_tokenizer):
    from medeir_rag import MedeirConfig

    return MedeirConfig.from_preset("tiny", vocab_size=len(tiny_tokenizer))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer, tiny_config) -> Path:
    """A randomly initialised tiny encoder saved as a sentence-transformers directory."""
    from medeir_rag import MedeirModel
    from medeir_rag.model.export import save_sentence_transformer

    torch.manual_seed(0)
    model = MedeirModel(tiny_config)
    return save_sentence_transformer(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory, tiny_tokenizer, tiny_config) -> Path:
    """A randomly initialised tiny cross-encoder (``num_labels=1``) saved as a CrossEncoder directory."""
    from medeir_rag import MedeirConfig, MedeirForSequenceClassification
    from medeir_rag.model.export import save_cross_encoder

    torch.manual_seed(0)
    model = MedeirForSequenceClassification(MedeirConfig(**{**tiny_config.to_dict(), "num_labels": 1}))
    return save_cross_encoder(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-ce"))
