"""Inference precision on the tiny models: int8/bf16 close to fp32, components pass the options on,
the errors name the argument (and come before any model loads), the deprecated ``dtype`` still works."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import MEDICAL_LINES

from medeir_rag.errors import InvalidArgumentError, MissingPathError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.inference.precision import bf16_unsupported_reason, check_device, check_options
from medeir_rag.inference.rerank import MedeirReranker

# short, padded-batch and past-512-token inputs
TEXTS = [MEDICAL_LINES[0], " ".join(MEDICAL_LINES[:3]), " ".join(MEDICAL_LINES * 6), " ".join(MEDICAL_LINES * 12)]
BF16_REASON = bf16_unsupported_reason(torch.device("cpu"))
needs_bf16 = pytest.mark.skipif(BF16_REASON is not None, reason=f"no bf16 on this CPU: {BF16_REASON}")


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture(scope="module")
def fp32(tiny_model_dir) -> np.ndarray:
    encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32")
    assert encoder.count_tokens(TEXTS[-1]) > 512
    return encoder.encode_document(TEXTS)


# -----------------------------------------------------------------------------
# The encoder


def test_int8_is_dynamic_quantisation_close_to_fp32(tiny_model_dir, fp32):
    encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="int8")
    qkv = encoder.model.layers[0].attention.qkv
    assert type(qkv).__module__.startswith("torch.ao.nn.quantized.dynamic") and callable(qkv.weight)
    hidden = torch.zeros(1, 2, encoder.model.config.hidden_size)
    assert encoder.model._compute_dtype(hidden) == torch.float32  # qkv.weight is a method now
    assert (encoder.precision, encoder.backend, encoder.autocast_dtype) == ("int8", "torch", None)
    int8 = encoder.encode_document(TEXTS)
    assert _min_cosine(int8, fp32) > 0.98
    assert "precision='int8'" in repr(encoder)


@needs_bf16
def test_bf16_autocast_close_to_fp32(tiny_model_dir, fp32):
    encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="bf16")
    assert encoder.autocast_dtype == torch.bfloat16 and encoder.model.dtype == torch.float32
    bf16 = encoder.encode_document(TEXTS)
    assert bf16.dtype == np.float32 and _min_cosine(bf16, fp32) > 0.999


def test_deprecated_dtype_maps_to_precision(tiny_model_dir, fp32):
    with pytest.warns(DeprecationWarning, match="precision='fp32'"):
        encoder = MedeirEncoder(tiny_model_dir, device="cpu", dtype="float32")
    assert encoder.precision == "fp32"
    np.testing.assert_allclose(encoder.encode_document(TEXTS), fp32, atol=1e-6)
    with pytest.warns(DeprecationWarning, match="precision='bf16'"):
        assert check_options("auto", "torch", dtype="bfloat16") == "bf16"
    with pytest.raises(InvalidArgumentError, match="dtype='bfloat16' and precision='fp32' disagree"):
        check_options("fp32", "torch", dtype="bfloat16")
    with pytest.raises(InvalidArgumentError, match="dtype='float16' and precision='int8' disagree"):
        MedeirEncoder(tiny_model_dir, device="cpu", dtype="float16", precision="int8")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, r"precision must be one of \('auto', 'fp32', 'bf16', 'fp16', 'int8'\), got 'int4'"),
        ({"precision": "FP32"}, "precision must be one of"),
        ({"backend": "tensorrt"}, r"backend must be one of \('torch', 'onnx'\), got 'tensorrt'"),
        ({"backend": "onnx", "precision": "bf16"}, "precision='bf16' is not available with backend='onnx'"),
        ({"dtype": "half"}, "dtype must be one of"),
        ({"onnx_path": "x.onnx"}, "onnx_path is only used with backend='onnx'"),
    ],
)
def test_unknown_options_name_the_argument_before_loading(kwargs, message):
    # the model path does not exist: the option check comes first, so no model is looked for
    with pytest.raises(InvalidArgumentError, match=message):
        MedeirEncoder("no/such/model", device="cpu", **kwargs)
    if "dtype" not in kwargs:  # the reranker never had a dtype argument
        with pytest.raises(InvalidArgumentError, match=message):
            MedeirReranker("no/such/model", device="cpu", **kwargs)


@pytest.mark.parametrize(
    ("device", "bf16", "native", "speedup", "backend", "expected"),
    [
        ("cpu", None, True, 2.0, "torch", "bf16"),      # bf16 instructions, and measured faster
        ("cpu", None, True, 0.6, "torch", "fp32"),      # the flag, but slower products (AMX hidden by a VM)
        ("cpu", None, False, 2.0, "torch", "fp32"),     # oneDNN would emulate bf16
        ("cpu", "no oneDNN", False, 2.0, "torch", "fp32"),
        ("cpu", None, True, 2.0, "onnx", "fp32"),       # the exported fp32 graph
        ("cuda", None, False, 0.6, "torch", "bf16"),    # a GPU with bf16 (the CPU probe does not apply)
        ("cuda", "no bf16 on this GPU", False, 2.0, "torch", "fp32"),
    ],
)
def test_auto_is_bf16_only_where_bf16_is_native_and_faster(monkeypatch, device, bf16, native, speedup, backend,
                                                            expected):
    import medeir_rag.inference.precision as precision

    monkeypatch.setattr(precision, "bf16_unsupported_reason", lambda _: bf16)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda threads: speedup)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert precision.resolve_precision("auto", backend, torch.device(device)) == expected
    assert precision.resolve_precision("int8", backend, torch.device(device)) == "int8"  # explicit names stay


def test_the_cpu_probe_measures_once_per_thread_count():
    from medeir_rag.inference.precision import cpu_bf16_speedup, native_bf16_reason

    if native_bf16_reason(torch.device("cpu")) is not None:
        pytest.skip("no native bf16 on this CPU: auto never runs the probe")
    first = cpu_bf16_speedup(torch.get_num_threads())
    assert 0.05 < first < 50  # a ratio of two timings, not a constant
    assert cpu_bf16_speedup(torch.get_num_threads()) == first  # cached: the decision is stable in a process


def test_the_default_is_auto_resolved_on_this_machine(tiny_model_dir, fp32):
    from medeir_rag.inference.precision import resolve_precision

    encoder = MedeirEncoder(tiny_model_dir, device="cpu")
    expected = resolve_precision("auto", "torch", torch.device("cpu"))
    assert encoder.precision == expected and f"precision={expected!r}" in repr(encoder)
    assert _min_cosine(encoder.encode_document(TEXTS), fp32) > 0.999


def test_device_checks():
    with pytest.raises(InvalidArgumentError, match="precision='int8' .* runs on CPU only, not on device 'cuda'"):
        check_device("int8", "torch", torch.device("cuda"))
    check_device("int8", "onnx", torch.device("cpu"))
    check_device("fp32", "torch", torch.device("cpu"))


def test_bf16_refused_with_the_reason_where_unsupported(tiny_model_dir, monkeypatch):
    import medeir_rag.inference.precision as precision

    monkeypatch.setattr(precision, "bf16_unsupported_reason", lambda device: "this CPU (test) has no bf16")
    with pytest.raises(InvalidArgumentError, match="precision='bf16' cannot run here: this CPU .test. has no bf16"):
        MedeirEncoder(tiny_model_dir, device="cpu", precision="bf16")


def test_onnx_without_an_export_says_how_to_make_one(tiny_model_dir, tmp_path):
    with pytest.raises(MissingPathError, match="medeir export --model .* --onnx"):
        MedeirEncoder(tiny_model_dir, device="cpu", backend="onnx")
    with pytest.raises(MissingPathError, match=r"onnx_path=.*model_int8\.onnx"):
        MedeirEncoder(tiny_model_dir, device="cpu", backend="onnx", precision="int8", onnx_path=tmp_path)


# -----------------------------------------------------------------------------
# The reranker


def test_reranker_precisions_close_to_fp32(tiny_reranker_dir):
    passages = TEXTS[:3]
    reference = MedeirReranker(tiny_reranker_dir, device="cpu").score("asthma", passages, scale_score=False)
    int8 = MedeirReranker(tiny_reranker_dir, device="cpu", precision="int8")
    assert type(int8.model.model.classifier).__module__.startswith("torch.ao.nn.quantized.dynamic")
    np.testing.assert_allclose(int8.score("asthma", passages, scale_score=False), reference, atol=0.05)
    if BF16_REASON is None:
        bf16 = MedeirReranker(tiny_reranker_dir, device="cpu", precision="bf16")
        np.testing.assert_allclose(bf16.score("asthma", passages, scale_score=False), reference, atol=0.05)
    assert "precision='int8'" in repr(int8)


# -----------------------------------------------------------------------------
# The components pass the options on


def test_llama_index_components_pass_precision(tiny_model_dir, tiny_reranker_dir, fp32):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from medeir_rag.integrations.llama_index import MedeirEmbedding, MedeirRerank

    embedding = MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", precision="int8")
    assert (embedding.precision, embedding.backend) == ("int8", "torch")
    assert embedding._encoder.precision == "int8"
    vectors = np.array(embedding.get_text_embedding_batch(TEXTS))
    plain = MedeirEncoder(tiny_model_dir, device="cpu")
    assert _min_cosine(vectors, plain.encode(TEXTS, prompt=embedding.text_instruction)) > 0.98
    assert embedding.to_dict()["precision"] == "int8"
    with pytest.warns(DeprecationWarning):
        old = MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", dtype="float32")
    assert old.precision == "fp32" and old.dtype is None
    with pytest.raises(ValueError, match="precision must be one of"):
        MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", precision="int4")

    rerank = MedeirRerank(model=str(tiny_reranker_dir), device="cpu", precision="int8", top_n=2)
    assert rerank._reranker.precision == "int8" and rerank.precision == "int8"
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in TEXTS[:3]]
    assert len(rerank.postprocess_nodes(nodes, QueryBundle("asthma"))) == 2
    with pytest.raises(ValueError, match="backend must be one of"):
        MedeirRerank(model=str(tiny_reranker_dir), device="cpu", backend="tvm")


def test_haystack_components_pass_precision(tiny_model_dir, tiny_reranker_dir):
    pytest.importorskip("haystack")
    from haystack import Document
    from haystack.utils import ComponentDevice

    from medeir_rag.integrations.haystack import (
        MedeirDocumentEmbedder,
        MedeirSimilarityRanker,
        MedeirTextEmbedder,
    )

    cpu = ComponentDevice.from_str("cpu")
    text = MedeirTextEmbedder(model=str(tiny_model_dir), device=cpu, compute_precision="int8", progress_bar=False)
    data = text.to_dict()
    assert (data["init_parameters"]["compute_precision"], data["init_parameters"]["backend"]) == ("int8", "torch")
    assert "dtype" not in data["init_parameters"]
    assert MedeirTextEmbedder.from_dict(data).to_dict() == data
    assert len(text.run("asthma")["embedding"]) == 64 and text.encoder.precision == "int8"

    documents = MedeirDocumentEmbedder(model=str(tiny_model_dir), device=cpu, compute_precision="int8", progress_bar=False)
    out = documents.run([Document(content=t) for t in TEXTS[:2]])["documents"]
    assert len(out) == 2 and documents.encoder is text.encoder  # same (model, device, precision): one copy

    old = {**data, "init_parameters": {k: v for k, v in data["init_parameters"].items() if k not in ("compute_precision", "backend")}}
    old["init_parameters"]["dtype"] = "float32"  # a pipeline file written before precision existed
    with pytest.warns(DeprecationWarning, match="use compute_precision='fp32'"):
        loaded = MedeirTextEmbedder.from_dict(old)
    assert loaded.compute_precision == "fp32" and loaded.to_dict()["init_parameters"]["compute_precision"] == "fp32"

    ranker = MedeirSimilarityRanker(model=str(tiny_reranker_dir), device=cpu, precision="int8")
    assert ranker.to_dict()["init_parameters"]["precision"] == "int8"
    ranked = ranker.run(query="asthma", documents=[Document(content=t) for t in TEXTS[:3]])["documents"]
    assert len(ranked) == 3 and ranker.reranker.precision == "int8"
    with pytest.raises(ValueError, match="precision must be one of"):
        MedeirSimilarityRanker(model=str(tiny_reranker_dir), precision="q4")
    with pytest.raises(ValueError, match="backend must be one of"):
        MedeirTextEmbedder(model=str(tiny_model_dir), backend="openvino")


def test_no_warning_by_default(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MedeirEncoder(tiny_model_dir, device="cpu", precision="int8")  # quantize_dynamic's deprecation is silenced


def test_evaluate_precision_and_backend_options(tiny_model_dir):
    pytest.importorskip("mteb")
    from medeir_rag.cli import evaluate as evaluate_cli
    from medeir_rag.eval import benchmark as evaluate

    parser = evaluate_cli.build_parser()
    args = parser.parse_args(["--model", str(tiny_model_dir), "--precision", "int8", "--device", "cpu"])
    model = evaluate._load_model(args)
    assert model.settings["precision"] == "int8" and "backend" not in model.settings  # the cache key changes
    assert _min_cosine(model.encode_document(TEXTS), MedeirEncoder(tiny_model_dir, device="cpu").encode_document(TEXTS)) > 0.98
    default = evaluate._load_model(parser.parse_args(["--model", str(tiny_model_dir), "--device", "cpu"]))
    # the default is auto, keyed by what it resolved to: fp32 adds nothing, so embeddings cached
    # before the option existed stay valid; bf16 gets its own cache entries and results label
    resolved = default.encoder.precision
    assert default.settings.get("precision") == (None if resolved == "fp32" else resolved)
    fp32 = evaluate._load_model(parser.parse_args(["--model", str(tiny_model_dir), "--device", "cpu", "--precision", "fp32"]))
    assert "precision" not in fp32.settings
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "int4"])
