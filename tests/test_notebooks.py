"""The committed notebooks run from top to bottom in a fresh kernel of this Python (nbclient), on small slices.

Each runs as a copy in a temporary folder, with the kernel environment of
``examples/make_notebooks.py`` (offline, no telemetry). The checks look for kinds of output
(a table, a PNG, the stage command lines), never for the committed numbers, which change
whenever the bundled model does.
"""

from __future__ import annotations

import json
import runpy
import shutil
from pathlib import Path

import pytest

from medeir_rag.rag.documents import SAMPLE_CORPUS

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow  # each notebook runs in a kernel for minutes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED = Path(__file__).resolve().parents[1] / "../shared/data"
CELL_TIMEOUT = 600


@pytest.fixture(scope="module")
def make() -> dict:
    return runpy.run_path(str(EXAMPLES / "make_notebooks.py"), run_name="make_notebooks")


def run_copy(make: dict, name: str, folder: Path, cells: int | None = None, **env: str) -> list[dict]:
    """Execute a copy of the committed notebook (its first ``cells`` cells) in ``folder``; its outputs."""
    copy = folder / name
    shutil.copy(EXAMPLES / name, copy)
    notebook = json.loads(copy.read_text(encoding="utf-8"))
    notebook["cells"] = notebook["cells"][:cells]
    executed = make["execute"](notebook, folder, env=env, timeout=CELL_TIMEOUT)
    return [output for cell in executed["cells"] if cell["cell_type"] == "code" for output in cell["outputs"]]


def text_of(outputs: list[dict]) -> str:
    return "".join("".join(o.get("text", "")) for o in outputs if o["output_type"] == "stream")


def markdown_tables(outputs: list[dict]) -> list[list[str]]:
    """The rows (header and rule included) of each Markdown table displayed."""
    texts = ["".join(o["data"]["text/markdown"]) for o in outputs if "text/markdown" in o.get("data", {})]
    tables = [[line for line in text.splitlines() if line.startswith("|")] for text in texts]
    return [rows for rows in tables if len(rows) > 1 and rows[1].startswith("|---")]


def pngs(outputs: list[dict]) -> list[str]:
    return [o["data"]["image/png"] for o in outputs if "image/png" in o.get("data", {})]


def test_llamaindex_notebook(make, tmp_path):
    pytest.importorskip("llama_index.vector_stores.qdrant")
    outputs = run_copy(make, "llamaindex_pubmed.ipynb", tmp_path, MEDEIR_NOTEBOOK_LIMIT="40")
    assert not [o for o in outputs if o["output_type"] == "error"]
    expected = "40 abstracts from" if (SHARED / "pretrain/pubmed_abstracts_bionlp.jsonl.gz").is_file() else "sample_corpus"
    assert expected in text_of(outputs)
    (table,) = markdown_tables(outputs)
    assert table[0].startswith("| rank | score | PMID") and len(table) == 2 + 5
    assert len(pngs(outputs)) == 1


def test_haystack_notebook_on_the_sample_corpus(make, tmp_path):
    """Without the shared data folder the notebook reads the sample corpus bundled with the package."""
    pytest.importorskip("haystack_integrations.document_stores.qdrant")
    outputs = run_copy(make, "haystack_pubmed_qa.ipynb", tmp_path, MEDEIR_NOTEBOOK_LIMIT="40",
                       MEDEIR_DATA_DIR=str(tmp_path / "no-shared-data"))
    text = text_of(outputs)
    assert f"40 abstracts from {SAMPLE_CORPUS} -> " in text and "Prompt for a generator:" in text
    (table,) = markdown_tables(outputs)
    assert table[0].startswith("| rank | score | PMID") and len(table) == 2 + 5
    assert len(pngs(outputs)) == 1


def test_train_tiny_model_notebook(make, tmp_path):
    pytest.importorskip("sentence_transformers")
    runs = tmp_path / "runs"
    outputs = run_copy(make, "train_tiny_model.ipynb", tmp_path, MEDEIR_NOTEBOOK_OUT=str(runs))
    text = text_of(outputs)
    for command in ("train-tokenizer", "distill-vocab", "distill", "finetune"):
        assert f"$ medeir {command} " in text
    assert len(pngs(outputs)) == 2  # the loss curves of distill and finetune
    (table,) = markdown_tables(outputs)
    assert table[0].startswith("| model |") and len(table) == 2 + 4 and "fine-tuned encoder" in table[4]
    assert (runs / "finetune" / "final" / "modules.json").is_file()
    for stage in ("distill", "finetune"):
        summary = json.loads((runs / stage / "summary.json").read_text())
        assert summary["steps"] > 0


def test_train_tiny_model_notebook_writes_synthetic_data_without_the_shared_folder(make, tmp_path):
    """The data cells alone (imports, slice or synthetic records, evaluation pairs): seconds, not minutes."""
    runs = tmp_path / "runs"
    notebook = json.loads((EXAMPLES / "train_tiny_model.ipynb").read_text(encoding="utf-8"))
    data_cell = next(i for i, cell in enumerate(notebook["cells"]) if "write_synthetic(DATA)" in "".join(cell["source"]))
    outputs = run_copy(make, "train_tiny_model.ipynb", tmp_path, cells=data_cell + 1,
                       MEDEIR_NOTEBOOK_OUT=str(runs), MEDEIR_DATA_DIR=str(tmp_path / "no-shared-data"))
    assert "synthetic records instead" in text_of(outputs)
    from medeir_rag.training.text_sources import DEFAULT_SOURCES, iter_training_texts

    assert len(list(iter_training_texts(runs / "data", DEFAULT_SOURCES, 2.0, None))) > 100
    pairs = json.loads((runs / "eval.json").read_text())
    assert len(pairs) >= 10 and all(pair["question"] and pair["answer"] for pair in pairs)
