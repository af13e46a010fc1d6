"""``medeir export --onnx`` on the tiny models, and ``backend="onnx"`` behind the same APIs.

Parity is checked at two lengths, 64 tokens and 700 (past the 512 a model is usually trained at),
in padded batches and alone, fp32 (cosine > 0.9999) and int8 (> 0.98), against the torch model.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import MEDICAL_LINES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx

from medeir_rag import cli
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.inference.onnx_backend import OnnxEncoderModel, OnnxSequenceClassifier
from medeir_rag.inference.rerank import MedeirReranker
from medeir_rag.model.attention import is_exporting

LONG_TEXT = " ".join(MEDICAL_LINES * 20)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def text_of(encoder: MedeirEncoder, tokens: int) -> str:
    """A prefix of LONG_TEXT that is exactly ``tokens`` tokens with [CLS] and [SEP]."""
    encoding = encoder.tokenizer(LONG_TEXT, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    text = LONG_TEXT[: encoding["offset_mapping"][tokens - 3][1]]
    assert encoder.count_tokens(text) == tokens
    return text


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny embedder exported through the CLI into a new folder (a copy plus onnx/)."""
    out = tmp_path_factory.mktemp("export") / "tiny-onnx"
    assert cli.main(["export", "--onnx", str(out), "--model", str(tiny_model_dir)]) == 0
    return out


@pytest.fixture(scope="module")
def exported_reranker(tiny_reranker_dir, tmp_path_factory):
    """The tiny cross-encoder exported into its own folder (``--model X --onnx X``)."""
    folder = tmp_path_factory.mktemp("export-ce") / "ce"
    shutil.copytree(tiny_reranker_dir, folder)
    assert cli.main(["export", "--onnx", str(folder), "--model", str(folder), "--lengths", "64", "700"]) == 0
    return folder


@pytest.fixture(scope="module")
def torch_encoder(tiny_model_dir) -> MedeirEncoder:
    return MedeirEncoder(tiny_model_dir, device="cpu")


# -----------------------------------------------------------------------------
# The export


def test_export_writes_a_model_folder_with_both_graphs(exported, tiny_model_dir):
    assert {p.name for p in (exported / "onnx").iterdir()} == {"model.onnx", "model_int8.onnx", "export.json"}
    assert (exported / "modules.json").read_text() == (tiny_model_dir / "modules.json").read_text()
    record = json.loads((exported / "onnx" / "export.json").read_text())
    assert record["kind"] == "embedder" and record["output"] == "last_hidden_state"
    assert record["versions"]["torch"] == torch.__version__ and record["opset"] >= 18
    assert [r["length"] for r in record["parity"]["fp32"]] == [64, 700]
    assert min(r["min_cosine"] for r in record["parity"]["fp32"]) > 0.9999
    assert min(r["min_cosine"] for r in record["parity"]["int8"]) > 0.98
    graph = onnx.load(str(exported / "onnx" / "model.onnx"))
    for tensor in graph.graph.input:  # batch and length are symbolic, not the example's 3 x 16
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param != "" for d in dims] == [True, True], tensor
    int8_ops = {n.op_type for n in onnx.load(str(exported / "onnx" / "model_int8.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= int8_ops
    assert (exported / "onnx" / "model_int8.onnx").stat().st_size < (exported / "onnx" / "model.onnx").stat().st_size
    assert not is_exporting()


@pytest.mark.parametrize(("precision", "threshold"), [("fp32", 0.9999), ("int8", 0.98)])
def test_onnx_encoder_parity_at_two_lengths(exported, torch_encoder, precision, threshold):
    encoder = MedeirEncoder(exported, device="cpu", backend="onnx", precision=precision)
    assert isinstance(encoder.model, OnnxEncoderModel) and encoder.model.path.name.startswith("model")
    short, long = text_of(torch_encoder, 64), text_of(torch_encoder, 700)
    assert torch_encoder.count_tokens(long) > 512
    texts = [short, long, "", MEDICAL_LINES[3]]  # one padded batch per length bucket, the empty text too
    assert _min_cosine(encoder.encode_document(texts), torch_encoder.encode_document(texts)) > threshold
    for text in (short, long):  # alone: batch of one, no padding
        assert _min_cosine(encoder.encode_query([text]), torch_encoder.encode_query([text])) > threshold
    assert encoder.embedding_dimension == torch_encoder.embedding_dimension


def test_onnx_warns_about_sequences_longer_than_its_comfortable_length(exported, torch_encoder, monkeypatch):
    from medeir_rag.inference import onnx_backend

    encoder = MedeirEncoder(exported, device="cpu", backend="onnx")
    monkeypatch.setattr(onnx_backend, "ONNX_LONG_TOKENS", 96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode_document([text_of(torch_encoder, 60)])  # under 96 with the prompt and special tokens
    with pytest.warns(RuntimeWarning, match="backend='torch'"):
        encoder.encode_document([text_of(torch_encoder, 150)])


def test_onnx_path_names_a_file_or_a_folder(exported, tmp_path, torch_encoder):
    moved = tmp_path / "graphs"
    shutil.copytree(exported / "onnx", moved)
    texts = [MEDICAL_LINES[0]]
    by_folder = MedeirEncoder(exported, device="cpu", backend="onnx", precision="int8", onnx_path=moved)
    by_file = MedeirEncoder(exported, device="cpu", backend="onnx", onnx_path=moved / "model.onnx")
    assert by_folder.model.path == moved / "model_int8.onnx" and by_file.model.path == moved / "model.onnx"
    assert _min_cosine(by_file.encode(texts), torch_encoder.encode(texts)) > 0.9999


def test_reranker_export_and_onnx_parity(exported_reranker, tiny_reranker_dir):
    record = json.loads((exported_reranker / "onnx" / "export.json").read_text())
    assert record["kind"] == "cross-encoder" and record["output"] == "logits"
    assert max(r["max_abs_logit_error"] for r in record["parity"]["fp32"]) < 1e-3
    passages = [MEDICAL_LINES[1], " ".join(MEDICAL_LINES * 5), MEDICAL_LINES[6]]
    reference = MedeirReranker(tiny_reranker_dir, device="cpu").score("asthma", passages, scale_score=False)
    fp32 = MedeirReranker(exported_reranker, device="cpu", backend="onnx")
    assert isinstance(fp32.model.model, OnnxSequenceClassifier)
    np.testing.assert_allclose(fp32.score("asthma", passages, scale_score=False), reference, atol=1e-4)
    int8 = MedeirReranker(exported_reranker, device="cpu", backend="onnx", precision="int8")
    np.testing.assert_allclose(int8.score("asthma", passages, scale_score=False), reference, atol=0.05)
    assert "backend='onnx'" in repr(int8)


# -----------------------------------------------------------------------------
# Components with backend="onnx"


def test_components_run_the_onnx_backend(exported, exported_reranker, torch_encoder):
    pytest.importorskip("llama_index.core")
    pytest.importorskip("haystack")
    from haystack import Document
    from haystack.utils import ComponentDevice
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from medeir_rag.integrations.haystack import MedeirSimilarityRanker, MedeirTextEmbedder
    from medeir_rag.integrations.llama_index import MedeirEmbedding, MedeirRerank

    embedding = MedeirEmbedding(model_name=str(exported), device="cpu", backend="onnx")
    assert isinstance(embedding._encoder.model, OnnxEncoderModel) and embedding.backend == "onnx"
    query = np.array(embedding.get_query_embedding("asthma"))[None]
    assert _min_cosine(query, torch_encoder.encode_query(["asthma"])) > 0.9999

    cpu = ComponentDevice.from_str("cpu")
    embedder = MedeirTextEmbedder(model=str(exported), device=cpu, backend="onnx", compute_precision="int8", progress_bar=False)
    assert embedder.to_dict()["init_parameters"]["backend"] == "onnx"
    vector = np.array(embedder.run("asthma")["embedding"])[None]
    assert _min_cosine(vector, torch_encoder.encode_query(["asthma"])) > 0.98

    ranker = MedeirSimilarityRanker(model=str(exported_reranker), device=cpu, backend="onnx", top_k=2)
    ranked = ranker.run(query="asthma", documents=[Document(content=t) for t in MEDICAL_LINES[:4]])["documents"]
    assert len(ranked) == 2 and isinstance(ranker.reranker.model.model, OnnxSequenceClassifier)
    rerank = MedeirRerank(model=str(exported_reranker), device="cpu", backend="onnx", top_n=1)
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in MEDICAL_LINES[:3]]
    assert len(rerank.postprocess_nodes(nodes, QueryBundle("asthma"))) == 1


# -----------------------------------------------------------------------------
# Command-line errors: one line, exit 1, before any export work


def test_export_cli_errors(exported, tmp_path, capsys, tiny_model_dir):
    assert cli.main(["export", "--onnx", str(exported), "--model", str(tiny_model_dir)]) == 1
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert cli.main(["export", "--onnx", str(tmp_path / "x"), "--model", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medeir export: ") and "does not exist" in err and len(err.strip().splitlines()) == 1
    not_medeir = tmp_path / "not-medeir"
    not_medeir.mkdir()
    (not_medeir / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert cli.main(["export", "--onnx", str(tmp_path / "y"), "--model", str(not_medeir)]) == 1
    assert "not 'medeir'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(SystemExit):
        cli.main(["export", "--model", str(tiny_model_dir)])  # --onnx is required
