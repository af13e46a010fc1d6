"""Fitting the ecosystem: saved folders load without ``medeir_rag`` (``trust_remote_code``),
one meaning of ``truncate_dim``, a light ``medeir --help/--version``, quiet model loading.

The loading tests run fresh interpreters: one with ``medeir_rag`` made unimportable (a
clean environment, ``HF_HUB_OFFLINE=1``, and a meta-path finder that refuses the package),
one that only imports it first.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import medeir_cli
import medeir_rag
import medeir_rag.cli
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.model.export import AUTO_MAP, _package_imports, remote_code_sources
from medeir_rag.model.files import bundled_model_path

TEXTS = ["Metformin lowers blood glucose.", "Asthma is treated with inhaled corticosteroids.", ""]
CODE_FILES = ("configuration_medeir.py", "modeling_medeir.py", "attention_medeir.py")

# Loads every folder with trust_remote_code=True in an interpreter where importing
# medeir_rag fails, and prints what it computed as JSON.
REMOTE_SCRIPT = """
import json, sys

class RefuseMedeirRag:
    def find_spec(self, name, path=None, target=None):
        if name == "medeir_rag" or name.startswith("medeir_rag."):
            raise ImportError("medeir_rag is not installed in this test")

sys.meta_path.insert(0, RefuseMedeirRag())
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import AutoModel

st_dir, ce_dir, bundled_dir, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
out = {}
for name, path in (("tiny", st_dir), ("bundled", bundled_dir)):
    model = SentenceTransformer(path, trust_remote_code=True, device="cpu")
    out[name] = model.encode(texts, prompt_name="document").tolist()
    out[name + "_module"] = type(model[0].auto_model).__module__
out["auto_model"] = type(AutoModel.from_pretrained(st_dir, trust_remote_code=True)).__name__
reranker = CrossEncoder(ce_dir, trust_remote_code=True, device="cpu")
out["scores"] = reranker.predict([("metformin", t) for t in texts]).tolist()
out["medeir_rag_imported"] = any(m.split(".")[0] == "medeir_rag" for m in sys.modules)
print(json.dumps(out))
"""


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """Nothing inherited but PATH: a fresh HF cache (remote code is copied there), offline."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


# -----------------------------------------------------------------------------
# loading without medeir_rag (trust_remote_code) and with it (registered classes)


def test_saved_folders_carry_the_model_code(tiny_model_dir, tiny_reranker_dir):
    sources = remote_code_sources()
    assert sorted(sources) == sorted(CODE_FILES)
    for folder in (tiny_model_dir, tiny_reranker_dir):
        assert json.loads((folder / "config.json").read_text())["auto_map"] == AUTO_MAP
        for name in CODE_FILES:
            code = (folder / name).read_text()
            assert code == sources[name]
            assert _package_imports(code, name) == []  # only relative imports of medeir_rag modules
    relative = {n.module for n in ast.walk(ast.parse(sources["modeling_medeir.py"])) if isinstance(n, ast.ImportFrom) and n.level}
    assert relative == {"attention_medeir", "configuration_medeir"}


def test_an_import_that_cannot_be_made_relative_is_refused():
    with pytest.raises(RuntimeError, match="cannot copy"):
        _package_imports("import medeir_rag.model.attention\n", "modeling")
    with pytest.raises(RuntimeError, match="cannot copy"):
        _package_imports("from medeir_rag.integrations.shared import x\n", "modeling")
    assert _package_imports("from medeir_rag.model.attention import alibi_slopes\n", "modeling") == ["attention"]


def test_folders_load_with_remote_code_in_a_python_without_medeir_rag(tiny_model_dir, tiny_reranker_dir, tmp_path):
    from sentence_transformers import CrossEncoder

    bundled = bundled_model_path()
    done = _run([sys.executable, "-c", REMOTE_SCRIPT, str(tiny_model_dir), str(tiny_reranker_dir), str(bundled),
                 json.dumps(TEXTS)], _clean_env(tmp_path), tmp_path)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["medeir_rag_imported"] is False
    assert out["tiny_module"].startswith("transformers_modules.") and out["tiny_module"].endswith(".modeling_medeir")
    assert out["bundled_module"].endswith(".modeling_medeir")
    assert out["auto_model"] == "MedeirModel"
    # the copied code computes what the package computes
    np.testing.assert_allclose(out["tiny"], MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32").encode_document(TEXTS), atol=1e-5)
    np.testing.assert_allclose(out["bundled"], MedeirEncoder(bundled, device="cpu", precision="fp32").encode_document(TEXTS), atol=1e-5)
    local_scores = CrossEncoder(str(tiny_reranker_dir), device="cpu").predict([("metformin", t) for t in TEXTS])
    np.testing.assert_allclose(out["scores"], local_scores, atol=1e-5)


def test_bundled_folder_carries_the_model_code():
    folder = bundled_model_path()
    assert json.loads((folder / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert all((folder / name).is_file() for name in CODE_FILES)
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text())["prompts"]
    assert set(prompts) == {"query", "document"}


def test_registered_classes_load_without_remote_code_once_medeir_rag_is_imported(tiny_model_dir, tmp_path):
    script = (
        "import json, sys, medeir_rag\n"
        "from sentence_transformers import SentenceTransformer\n"
        "modules = [type(SentenceTransformer(sys.argv[1], device='cpu', **kw)[0].auto_model).__module__\n"
        "           for kw in ({}, {'trust_remote_code': False}, {'trust_remote_code': True})]\n"
        "print(json.dumps([modules, any(m.startswith('transformers_modules') for m in sys.modules)]))\n"
    )
    done = _run([sys.executable, "-c", script, str(tiny_model_dir)], _clean_env(tmp_path), tmp_path)
    modules, copied_code_imported = json.loads(done.stdout.strip().splitlines()[-1])
    # the registered class wins even with trust_remote_code=True (transformers prefers an explicit registration)
    assert modules == ["medeir_rag.model.modeling"] * 3
    assert copied_code_imported is False


# -----------------------------------------------------------------------------
# truncate_dim


def test_truncate_dim_gives_unit_vectors_that_sentence_transformers_reproduces(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    ours = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32", truncate_dim=32).encode(TEXTS, prompt_name="document")
    assert ours.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # cosine == dot
    st = SentenceTransformer(str(tiny_model_dir), truncate_dim=32, device="cpu")
    # sentence-transformers truncates after its Normalize module; normalize_embeddings=True
    # normalises the truncated vector again: the same vectors as ours
    same = st.encode(TEXTS, prompt_name="document", normalize_embeddings=True)
    np.testing.assert_allclose(same, ours, atol=1e-5)
    # without it, the vectors point the same way but are shorter: equal cosine similarities
    plain = st.encode(TEXTS, prompt_name="document")
    assert (np.linalg.norm(plain, axis=1) < 1 - 1e-3).all()
    np.testing.assert_allclose(st.similarity(plain, plain).numpy(), ours @ ours.T, atol=1e-5)


def test_llama_index_embedder_uses_the_document_prompt_without_a_text_prompt(tiny_model_dir):
    pytest.importorskip("llama_index.core")
    from medeir_rag.integrations.llama_index import MedeirEmbedding

    assert "text" not in MedeirEncoder(tiny_model_dir, device="cpu").prompts
    embed = MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", truncate_dim=32)
    assert embed.text_instruction == "passage: "
    ours = MedeirEncoder(tiny_model_dir, device="cpu", truncate_dim=32).encode_document(TEXTS[:2])  # both "auto"
    np.testing.assert_allclose(embed.get_text_embedding_batch(TEXTS[:2]), ours, atol=1e-5)


# -----------------------------------------------------------------------------
# the command line


def _imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output (``import time: self | cumulative | name``)."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_neither_torch_nor_medeir_rag(flag, tmp_path):
    script = Path(sys.executable).parent / "medeir"  # the installed console script
    command = [sys.executable, "-X", "importtime", str(script), flag] if script.is_file() else \
        [sys.executable, "-X", "importtime", "-c", "import medeir_cli, sys; sys.exit(medeir_cli.main())", flag]
    done = _run(command, {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp_path)
    imported = _imported_modules(done.stderr)
    assert "medeir_cli" in imported
    assert not {"torch", "transformers", "numpy", "medeir_rag"} & imported
    if flag == "--version":
        assert done.stdout == f"medeir_rag {medeir_rag.__version__}\n"
    else:
        assert all(name in done.stdout for name in medeir_rag.cli.SUBCOMMANDS)


def test_help_reads_the_one_command_table():
    assert medeir_cli.subcommands() == medeir_rag.cli.SUBCOMMANDS
    assert medeir_cli.version() == medeir_rag.__version__


def test_full_cli_answers_help_and_version_the_same(capsys):
    from medeir_rag.cli import main

    assert main(["--version"]) == 0 and main(["--help"]) == 0
    version, help_text = capsys.readouterr().out.split("\n", 1)
    assert version == f"medeir_rag {medeir_rag.__version__}"
    assert help_text == medeir_cli.usage(medeir_cli.subcommands()) + "\n"


def test_info_json(capsys):
    from medeir_rag.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["medeir_rag"] == medeir_rag.__version__
    assert {"python", "torch", "transformers", "sentence-transformers", "cuda"} <= set(info)


# -----------------------------------------------------------------------------
# quiet loading


def test_our_loaders_print_no_loading_bar(tiny_model_dir, tiny_reranker_dir, capfd):
    from transformers.utils import logging as hf_logging

    from medeir_rag import MedeirModel
    from medeir_rag.inference.rerank import MedeirReranker

    was_enabled = hf_logging.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_logging.enable_progress_bar()  # whatever HF_HUB_DISABLE_PROGRESS_BARS says here
    try:
        MedeirModel.from_pretrained(str(tiny_model_dir))  # the control: transformers' own bar
        assert "Loading weights" in capfd.readouterr().err
        MedeirEncoder(tiny_model_dir, device="cpu")
        MedeirReranker(tiny_reranker_dir, device="cpu")
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()  # put back afterwards
    finally:
        if not was_enabled:
            hf_logging.disable_progress_bar()


def test_transformers_verbosity_info_keeps_the_bar(tiny_model_dir, capfd):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()
    try:
        MedeirEncoder(tiny_model_dir, device="cpu")
    finally:
        hf_logging.set_verbosity(before)
    assert "Loading weights" in capfd.readouterr().err
