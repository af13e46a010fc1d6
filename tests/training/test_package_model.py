"""Packaging trained models: fp16 storage, fp32 loading, measured drift, size budget."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file

from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.model.export import AUTO_MAP, remote_code_sources
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


def test_package_writes_the_model_code_and_drops_the_text_prompt(tmp_path, tiny_model_dir):
    # a folder as a trainer's re-save leaves it: no code files, no auto_map, an old "text" prompt
    trained = tmp_path / "trained"
    shutil.copytree(tiny_model_dir, trained, ignore=shutil.ignore_patterns("*.py"))
    config = json.loads((trained / "config.json").read_text())
    del config["auto_map"]
    (trained / "config.json").write_text(json.dumps(config))
    st_config = json.loads((trained / "config_sentence_transformers.json").read_text())
    st_config["prompts"]["text"] = st_config["prompts"]["document"]
    (trained / "config_sentence_transformers.json").write_text(json.dumps(st_config))

    assert package_model.main(["--embedder", str(trained), "--assets", str(tmp_path / "assets")]) == 0
    packaged = tmp_path / "assets" / "medeir-small"
    config = json.loads((packaged / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["dtype"] == "float32"
    for name, source in remote_code_sources().items():
        assert (packaged / name).read_text() == source
    assert set(json.loads((packaged / "config_sentence_transformers.json").read_text())["prompts"]) == {"query", "document"}


def test_package_refuses_to_exceed_the_budget(tmp_path, tiny_model_dir):
    code = package_model.main(["--embedder", str(tiny_model_dir), "--assets", str(tmp_path), "--budget-mb", "0.001"])
    assert code == 1
