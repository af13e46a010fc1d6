"""Packaging trained models: fp16 storage, fp32 loading, measured drift, size budget."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from medeir_rag.encoder import MedeirEncoder
from medeir_rag.training import package_model


def test_package_stores_fp16_and_loads_fp32(tmp_path, tiny_model_dir, tiny_reranker_dir, capsys):
    card = tmp_path / "card.md"
    card.write_text("# tiny card\n")
    assets = tmp_path / "assets"
    code = package_model.main([
        "--embedder", str(tiny_model_dir), "--reranker", str(tiny_reranker_dir),
        "--card", str(card), "--assets", str(assets),
    ])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["max_drift_fp16"] < 1e-2 for r in report["packaged"]] == [True, True]
    embedder = assets / "medeir-small"
    weights = load_file(str(embedder / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert (embedder / "README.md").read_text() == "# tiny card\n"
    encoder = MedeirEncoder(embedder)
    assert encoder.model.dtype == torch.float32
    assert (assets / "medeir-small-reranker" / "model.safetensors").is_file()


def test_package_refuses_to_exceed_the_budget(tmp_path, tiny_model_dir):
    code = package_model.main(["--embedder", str(tiny_model_dir), "--assets", str(tmp_path), "--budget-mb", "0.001"])
    assert code == 1
