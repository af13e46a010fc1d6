"""Saving and loading: transformers round trips, sentence-transformers and CrossEncoder
directories without remote code, and clear errors for missing or corrupt files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from medeir_rag import MedeirConfig, MedeirForMaskedLM, MedeirForSequenceClassification, MedeirModel
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.model.export import DEFAULT_PROMPTS
from medeir_rag.model.files import ModelFileError

TEXTS = ["Metformin lowers blood glucose.", "Asthma is treated with inhaled corticosteroids.", ""]


@pytest.mark.parametrize(
    ("model_class", "auto_class"),
    [
        (MedeirModel, AutoModel),
        (MedeirForMaskedLM, AutoModelForMaskedLM),
        (MedeirForSequenceClassification, AutoModelForSequenceClassification),
    ],
)
def test_save_pretrained_round_trips_exactly(tmp_path, model_class, auto_class):
    torch.manual_seed(0)
    model = model_class(MedeirConfig.from_preset("tiny", vocab_size=300, num_labels=1)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "medeir"
    loaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_class
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)
    ids = torch.randint(5, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids)[0], model(input_ids=ids)[0], rtol=1e-5, atol=1e-6)


def test_masked_lm_decoder_is_tied_to_the_embeddings(tmp_path):
    model = MedeirForMaskedLM(MedeirConfig.from_preset("tiny", vocab_size=300))
    assert model.decoder.weight is model.medeir.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert loaded.decoder.weight is loaded.medeir.embeddings.word_embeddings.weight


def test_masked_lm_output_shapes_are_documented_and_asked_for():
    torch.manual_seed(0)
    model = MedeirForMaskedLM(MedeirConfig.from_preset("tiny", vocab_size=300)).eval()
    ids = torch.randint(5, 300, (2, 9))
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 0], labels[1, 5] = 7, 3, 9
    with torch.no_grad():
        plain = model(input_ids=ids)
        assert plain.logits.shape == (2, 9, 300) and plain.loss is None and plain.masked_logits is None
        assert model(input_ids=ids, return_logits=False).logits is None
        full = model(input_ids=ids, labels=labels, return_logits=True)
        lean = model(input_ids=ids, labels=labels, return_logits=False)
        legacy = model(input_ids=ids, labels=labels)
    assert full.logits.shape == (2, 9, 300) and full.masked_logits.shape == (3, 300)
    torch.testing.assert_close(full.logits, plain.logits)
    torch.testing.assert_close(full.masked_logits, full.logits[labels != -100])
    assert lean.logits is None and lean.masked_logits.shape == (3, 300)
    torch.testing.assert_close(lean.masked_logits, full.masked_logits, atol=1e-5, rtol=1e-5)
    expected_loss = F.cross_entropy(plain.logits[labels != -100], labels[labels != -100])
    for out in (full, lean, legacy):
        torch.testing.assert_close(out.loss, expected_loss, atol=1e-5, rtol=1e-5)
    # the default with labels: logits only ever means (B, L, vocab), so it is left out
    assert legacy.logits is None and legacy.masked_logits.shape == (3, 300)


def test_sentence_transformers_directory_names_only_stock_modules(tiny_model_dir):
    modules = json.loads((tiny_model_dir / "modules.json").read_text())
    assert [m["type"].split(".")[0] for m in modules] == ["sentence_transformers"] * 3
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    st_config = json.loads((tiny_model_dir / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == DEFAULT_PROMPTS
    assert set(st_config["prompts"]) == {"query", "document"}  # no "text": mteb warns about unknown names
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tiny_model_dir), device="cpu").max_seq_length == 8192
    assert MedeirEncoder(tiny_model_dir).max_length == 8192


def test_sentence_transformer_loads_without_remote_code_after_importing_medeir(tiny_model_dir):
    """A fresh interpreter whose only extra step is ``import medeir_rag``."""
    script = (
        "import sys, medeir_rag\n"
        "from sentence_transformers import SentenceTransformer\n"
        "m = SentenceTransformer(sys.argv[1], trust_remote_code=False, device='cpu')\n"
        "e = m.encode_query(['metformin dose'])\n"
        "print(type(m[0].auto_model).__name__, e.shape)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_model_dir)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "MedeirModel (1, 64)" in result.stdout


def test_encoder_matches_sentence_transformers(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(tiny_model_dir), device="cpu")
    encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32")  # parity with ST at ST's precision
    np.testing.assert_allclose(
        encoder.encode_document(TEXTS), reference.encode(TEXTS, prompt_name="document"), atol=1e-5
    )
    np.testing.assert_allclose(encoder.encode_query(TEXTS), reference.encode_query(TEXTS), atol=1e-5)
    assert reference.encode_document(TEXTS[:1]).shape == (1, 64)


def test_cross_encoder_loads_without_remote_code(tiny_reranker_dir):
    from sentence_transformers import CrossEncoder

    reranker = CrossEncoder(str(tiny_reranker_dir), trust_remote_code=False, device="cpu")
    assert type(reranker.model).__name__ == "MedeirForSequenceClassification"
    scores = reranker.predict([("metformin", TEXTS[0]), ("metformin", TEXTS[1])])
    assert scores.shape == (2,)
    ranked = reranker.rank("metformin", TEXTS[:2])
    assert sorted(r["corpus_id"] for r in ranked) == [0, 1]


# -----------------------------------------------------------------------------
# missing and corrupt files


@pytest.fixture()
def model_copy(tmp_path, tiny_model_dir) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_missing_weights_name_the_file(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MedeirEncoder(model_copy)


def test_pickle_weights_are_refused(model_copy):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="pickle weights are refused"):
        MedeirEncoder(model_copy)


def test_truncated_weights_name_the_file(model_copy):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="model.safetensors"):
        MedeirEncoder(model_copy)


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "modules.json"])
def test_corrupt_json_names_the_file(model_copy, name):
    (model_copy / name).write_text("{ not json")
    with pytest.raises(ModelFileError, match=name):
        MedeirEncoder(model_copy)


def test_missing_tokenizer_names_the_file(model_copy):
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        MedeirEncoder(model_copy)


def test_wrong_model_type_is_rejected(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["model_type"] = "bert"
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="model_type='bert'"):
        MedeirEncoder(model_copy)


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MedeirEncoder(tmp_path / "nowhere")


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    # a hub model must be asked for as hf:org/name; a bare org/name is a local path (no lookup)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub model 'medeir-org/not-in-the-local-cache' .*not available here"):
        MedeirEncoder("hf:medeir-org/not-in-the-local-cache")
    with pytest.raises(FileNotFoundError, match="does not exist .*hf:medeir-org/not-in-the-local-cache"):
        MedeirEncoder("medeir-org/not-in-the-local-cache")
