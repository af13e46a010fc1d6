"""The example scripts run end to end on a small slice, and their notebook copies match them."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

from medeir_rag.rag.documents import SAMPLE_CORPUS

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PUBMED = Path(__file__).resolve().parents[1] / "../shared/data/pretrain/pubmed_abstracts_bionlp.jsonl.gz"
DATA = PUBMED if PUBMED.is_file() else SAMPLE_CORPUS  # the shared PubMed file when present, else the shipped sample


def load(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name="example")


@pytest.mark.slow  # runs the example script
def test_llamaindex_example(tiny_model_dir, tiny_reranker_dir, tmp_path, capsys):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    hits = load("llamaindex_pubmed.py")["main"]([
        str(DATA), "--limit", "20", "--model", str(tiny_model_dir), "--reranker", str(tiny_reranker_dir),
        "--top-k", "3", "--qdrant-path", str(tmp_path / "qdrant"),
    ])
    assert len(hits) == 3 and all(hit["pmid"] and hit["text"] for hit in hits)
    assert "20 abstracts" in capsys.readouterr().out


@pytest.mark.slow  # runs the example script
def test_llamaindex_example_hybrid(tiny_model_dir, tmp_path):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    from qdrant_client import QdrantClient, models

    example = load("llamaindex_pubmed.py")
    folder = str(tmp_path / "qdrant")
    hits = example["main"]([str(DATA), "--limit", "12", "--model", str(tiny_model_dir), "--top-k", "3",
                            "--qdrant-path", folder, "--hybrid", "--chunk-size", "256"])
    assert len(hits) == 3 and all(hit["pmid"] and hit["text"] for hit in hits)
    client = QdrantClient(path=folder)
    try:
        sparse = client.get_collection("pubmed").config.params.sparse_vectors
        assert sparse["text-sparse-new"].modifier == models.Modifier.IDF  # medeir's sparse side, IDF on
    finally:
        client.close()
    png = example["embedding_space_png"](folder, hits, "blood pressure", model=str(tiny_model_dir))
    assert png.startswith(b"\x89PNG")  # the notebook's plot reads the named dense vector


@pytest.mark.slow  # runs the example script
def test_haystack_example(tiny_model_dir, tiny_reranker_dir, capsys):
    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    result = load("haystack_pubmed_qa.py")["main"]([
        str(DATA), "--limit", "20", "--model", str(tiny_model_dir), "--reranker", str(tiny_reranker_dir), "--top-k", "2",
    ])
    assert len(result["documents"]) == 2
    assert "Question:" in result["prompt"] and "[PMID " in result["prompt"]
    assert "medeir_rag.integrations.haystack.MedeirSimilarityRanker" in result["yaml"]
    assert "20 abstracts" in capsys.readouterr().out


def test_examples_do_not_rerank_by_default(tiny_model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    from medeir_rag.model import files as model_files

    monkeypatch.setattr(model_files, "BUNDLED_MODELS_DIR", tmp_path / "assets")  # no bundled reranker
    common = [str(DATA), "--limit", "8", "--model", str(tiny_model_dir), "--top-k", "2"]
    hits = load("llamaindex_pubmed.py")["main"]([*common, "--qdrant-path", str(tmp_path / "qdrant")])
    assert len(hits) == 2
    result = load("haystack_pubmed_qa.py")["main"](common)
    assert len(result["documents"]) == 2 and "MedeirSimilarityRanker" not in result["yaml"]
    assert "[PMID " in result["prompt"]


def test_examples_fall_back_to_the_sample_corpus(tmp_path, monkeypatch):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    for name in ("llamaindex_pubmed.py", "haystack_pubmed_qa.py"):
        default_data = load(name)["default_data"]
        monkeypatch.setenv("MEDEIR_DATA_DIR", str(tmp_path / "missing"))
        assert default_data() == str(SAMPLE_CORPUS)
        (tmp_path / "data" / "pretrain").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "pretrain" / "pubmed_abstracts_bionlp.jsonl.gz").write_bytes(b"")
        monkeypatch.setenv("MEDEIR_DATA_DIR", str(tmp_path / "data"))
        assert default_data() == str(tmp_path / "data" / "pretrain" / "pubmed_abstracts_bionlp.jsonl.gz")


@pytest.mark.parametrize("name", ["llamaindex_pubmed.py", "haystack_pubmed_qa.py", "train_tiny_model.py"])
def test_notebooks_are_current_copies_of_the_scripts(name):
    """The cells match the script (outputs aside): `python examples/make_notebooks.py` rewrites and reruns them."""
    make = load("make_notebooks.py")
    script = (EXAMPLES / name).read_text(encoding="utf-8")
    notebook = json.loads((EXAMPLES / name).with_suffix(".ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4 and notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert all({"cell_type", "id", "metadata", "source"} <= set(cell) for cell in notebook["cells"])
    expected = make["notebook_from_script"](name, script)
    assert make["cell_sources"](notebook) == make["cell_sources"](expected), (
        "notebook out of date: run python examples/make_notebooks.py"
    )
    code = [source for kind, source in make["cell_sources"](notebook) if kind == "code"]
    script_code = [c for c in make["code_cells"](script) if not c.startswith('if __name__ == "__main__":')]
    assert code[: len(script_code)] == script_code and len(code) >= 4
    assert "".join(notebook["cells"][0]["source"]).startswith(script.split('"""')[1].strip().splitlines()[0])


@pytest.mark.parametrize("name", ["llamaindex_pubmed.ipynb", "haystack_pubmed_qa.ipynb", "train_tiny_model.ipynb"])
def test_notebooks_are_committed_with_their_outputs(name):
    notebook = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    code_cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(isinstance(cell["execution_count"], int) for cell in code_cells), "run python examples/make_notebooks.py"
    outputs = [output for cell in code_cells for output in cell["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    tables = ["".join(o["data"]["text/markdown"]) for o in outputs if "text/markdown" in o.get("data", {})]
    assert any("|---" in table for table in tables)
    assert all("Traceback" not in "".join(o.get("text", "")) for o in outputs)


@pytest.mark.parametrize("name", ["llamaindex_pubmed.ipynb", "haystack_pubmed_qa.ipynb", "train_tiny_model.ipynb"])
def test_committed_outputs_name_no_folder_of_the_machine_that_ran_them(name):
    make = load("make_notebooks.py")
    outputs = json.dumps([cell.get("outputs", []) for cell in json.loads((EXAMPLES / name).read_text())["cells"]])
    for absolute, _ in make["machine_paths"]():
        assert absolute not in outputs
    notebook = {"cells": [{"outputs": [
        {"output_type": "stream", "text": ["read /data/repo/../shared/x and /venv/site/pkg\n", "/data/repo/runs\n"]},
        {"output_type": "display_data", "data": {"text/plain": "/data/repo/a", "image/png": "/data/repo/b"}}]}]}
    scrubbed = make["scrub_paths"](notebook, [("/venv/site", "<site-packages>"), ("/data/repo", ".")])
    stream, display = scrubbed["cells"][0]["outputs"]
    assert stream["text"] == ["read ./../shared/x and <site-packages>/pkg\n", "./runs\n"]
    assert display["data"] == {"text/plain": "./a", "image/png": "/data/repo/b"}  # images are not text
