"""``medeir export --onnx DIR``: ONNX graphs of a medeir embedder or cross-encoder, fp32 and int8.

Design choices:
- torch's default exporter (``torch.onnx.export(..., dynamo=True)``: ``torch.export`` then
  onnxscript), with dynamic ``batch`` and ``length`` axes (length up to the model's
  ``max_position_embeddings``). The model code is export-safe: while exporting, ``auto``
  attention resolves to ``sdpa`` and the padding bias is always added
  (``medeir_rag.model.attention.is_exporting``), so one graph serves every batch shape.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/onnx_export.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medeir_rag.errors import InvalidArgumentError, MissingDependencyError
from medeir_rag.inference.onnx_backend import ONNX_DIR, ONNX_FILES, ONNX_INPUTS
from medeir_rag.model.files import ModelFileError, read_json, resolve_model_path

PARITY_LENGTHS = (64, 700)
FP32_MIN_COSINE = 0.9999
FP32_MAX_LOGIT_ERROR = 1e-3

# -----------------------------------------------------------------------------
# What is exported


class _EncoderGraph(nn.Module):
    """``MedeirModel`` with the graph's signature: ``(input_ids, attention_mask) -> last_hidden_state``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _ClassifierGraph(nn.Module):
    """``MedeirForSequenceClassification``: ``(input_ids, attention_mask) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def model_kind(folder: Path) -> str:
    """``"cross-encoder"`` (its ``config.json`` names ``MedeirForSequenceClassification``) or
    ``"embedder"`` (a sentence-transformers folder with a pooling module)."""
    from medeir_rag.model.export import transformer_folder

    config_file = transformer_folder(folder) / "config.json"
    config = read_json(config_file)
    if config.get("model_type") != "medeir":
        raise ModelFileError(f"{config_file}: model_type is {config.get('model_type')!r}, not 'medeir'")
    if any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return "cross-encoder"
    modules = read_json(folder / "modules.json") if (folder / "modules.json").is_file() else []
    if any(m.get("type", "").endswith("Pooling") for m in modules):
        return "embedder"
    raise ModelFileError(
        f"{folder}: neither a sentence-transformers embedder (modules.json with Pooling) nor a CrossEncoder "
        "(config.json architectures MedeirForSequenceClassification)"
    )


def load_torch_model(folder: Path, kind: str) -> tuple[nn.Module, Any, Path]:
    """``(graph module, config, folder of config.json)`` of a saved medeir folder, fp32, eval mode."""
    import medeir_rag  # noqa: F401  (registers the medeir model type)
    from medeir_rag.model.export import transformer_folder
    from medeir_rag.model.files import check_transformer_dir
    from medeir_rag.model.loading import quiet_loading
    from medeir_rag.model.modeling import MedeirForSequenceClassification, MedeirModel

    transformer_dir = transformer_folder(folder)
    check_transformer_dir(transformer_dir)
    with quiet_loading():
        if kind == "embedder":
            model = MedeirModel.from_pretrained(str(transformer_dir), use_safetensors=True)
            graph: nn.Module = _EncoderGraph(model)
        else:
            model = MedeirForSequenceClassification.from_pretrained(str(transformer_dir), use_safetensors=True)
            graph = _ClassifierGraph(model)
    return graph.float().eval(), model.config, transformer_dir


def _sample_batch(config: Any, length: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of random token ids: rows of ``length``, ``length // 2`` and 8 real tokens."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (3, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, max(2, length // 2):] = 0
    mask[2, min(8, length):] = 0
    ids = ids.masked_fill(mask == 0, config.pad_token_id)
    return ids, mask


# -----------------------------------------------------------------------------
# Export, quantisation, parity


def export_graph(graph: nn.Module, config: Any, path: Path, output_name: str, *, verbose: bool = False) -> None:
    """Write ``graph`` to ``path`` with dynamic batch and length axes (the dynamo exporter)."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's dependency)
    except ImportError as error:
        raise MissingDependencyError(
            f"the ONNX export needs onnx and onnxscript ({error}); install them with: pip install 'medeir_rag[onnx]'"
        ) from error
    ids, mask = _sample_batch(config, 16)
    batch = torch.export.Dim("batch")
    length = torch.export.Dim("length", max=config.max_position_embeddings)
    axes = {0: batch, 1: length}
    path.parent.mkdir(parents=True, exist_ok=True)
    captured = io.StringIO()
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(captured)
    exporter_logger = logging.getLogger("torch.onnx")
    level = exporter_logger.level
    if not verbose:
        exporter_logger.setLevel(logging.ERROR)  # "torchvision is not installed", ...
    try:
        with quiet, warnings.catch_warnings():
            if not verbose:
                warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, (ids, mask), str(path), input_names=list(ONNX_INPUTS), output_names=[output_name],
                dynamic_shapes={"input_ids": axes, "attention_mask": axes}, dynamo=True, external_data=False,
                optimize=True,
            )
    except Exception:
        if captured.getvalue():
            print(captured.getvalue())  # the exporter's own report of what failed
        raise
    finally:
        exporter_logger.setLevel(level)


def quantize_graph(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights (per output channel), activations per batch."""
    from medeir_rag.inference.onnx_backend import import_onnxruntime

    import_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


def _pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def parity(graph: nn.Module, config: Any, path: Path, kind: str, lengths: Sequence[int]) -> list[dict[str, Any]]:
    """ONNX Runtime against torch on a padded batch at each length: the lowest mean-pooled
    cosine (embedder) or the largest logit difference (cross-encoder)."""
    from medeir_rag.inference.onnx_backend import make_session

    session = make_session(path, torch.device("cpu"))
    rows = []
    for length in lengths:
        ids, mask = _sample_batch(config, length, seed=length)
        with torch.inference_mode():
            expected = graph(ids, mask).float().numpy()
        (got,) = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        row: dict[str, Any] = {"length": int(length), "batch": int(ids.shape[0])}
        if kind == "embedder":
            row["min_cosine"] = float(_cosines(_pooled(got, mask.numpy()), _pooled(expected, mask.numpy())).min())
        else:
            row["max_abs_logit_error"] = float(np.abs(got - expected).max())
        rows.append(row)
    return rows


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_output(source: Path, out: Path) -> None:
    """``out`` must be ``source`` itself, a new path or an empty folder."""
    if out.resolve() != source.resolve() and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidArgumentError(
            f"--onnx {out}: exists and is not an empty folder; choose a new folder, or pass the model "
            f"folder itself (--model {out} --onnx {out}) to add onnx/ to it"
        )


def _prepare_output(source: Path, out: Path) -> Path:
    """``out`` as a model folder: ``source`` itself, or a fresh copy of it (``onnx/`` left out)."""
    if out.resolve() == source.resolve():
        return source
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(ONNX_DIR, "__pycache__"), dirs_exist_ok=True)
    return out


def export_onnx(
    model: str | Path | None,
    out: str | Path,
    *,
    int8: bool = True,
    check: bool = True,
    lengths: Sequence[int] = PARITY_LENGTHS,
    verbose: bool = False,
) -> dict[str, Any]:
    """Export ``model`` (``None``: the bundled embedder) into the model folder ``out``; see the module doc.

    Returns what ``onnx/export.json`` records.

    Raises:
        MissingPathError / ModelFileError: no such model, or not a medeir folder.
        InvalidArgumentError: ``out`` is a non-empty folder other than the model itself.
        RuntimeError: the fp32 graph disagrees with the torch model (a bug in the export).
    """
    from medeir_rag.inference.onnx_backend import import_onnxruntime

    source = resolve_model_path(model)
    kind = model_kind(source)
    import_onnxruntime()  # before any work: the parity check and the int8 pass need it
    out = Path(out).expanduser()
    _check_output(source, out)
    started = time.perf_counter()
    graph, config, transformer_dir = load_torch_model(source, kind)
    folder = _prepare_output(source, out)
    onnx_dir = folder / ONNX_DIR
    onnx_dir.mkdir(exist_ok=True)
    output_name = "last_hidden_state" if kind == "embedder" else "logits"
    fp32_path = onnx_dir / ONNX_FILES["fp32"]
    export_graph(graph, config, fp32_path, output_name, verbose=verbose)
    files = {"fp32": fp32_path}
    if int8:
        files["int8"] = onnx_dir / ONNX_FILES["int8"]
        quantize_graph(fp32_path, files["int8"])
    else:
        (onnx_dir / ONNX_FILES["int8"]).unlink(missing_ok=True)  # never leave an int8 graph of older weights
    lengths = sorted({min(int(n), config.max_position_embeddings) for n in lengths})
    checks = {name: parity(graph, config, path, kind, lengths) for name, path in files.items()} if check else {}
    if check:
        fp32 = checks["fp32"]
        bad = [r for r in fp32 if r.get("min_cosine", 1.0) < FP32_MIN_COSINE
               or r.get("max_abs_logit_error", 0.0) > FP32_MAX_LOGIT_ERROR]
        if bad:
            raise RuntimeError(f"{fp32_path}: the ONNX graph disagrees with the torch model: {bad}")
    import onnx
    import onnxruntime

    weights = transformer_dir / "model.safetensors"
    record = {
        "kind": kind,
        "source": str(source),
        "source_weights_sha256": _sha256(weights) if weights.is_file() else None,
        "inputs": list(ONNX_INPUTS),
        "output": output_name,
        "dynamic_axes": {"batch": "any", "length": f"1..{config.max_position_embeddings}"},
        "files": {name: {"path": str(path.relative_to(folder)), "bytes": path.stat().st_size}
                  for name, path in files.items()},
        "opset": next((o.version for o in onnx.load(str(fp32_path), load_external_data=False).opset_import
                       if o.domain in ("", "ai.onnx")), None),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "parity": checks,
        "seconds": round(time.perf_counter() - started, 1),
        "folder": str(folder),
    }
    (onnx_dir / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record
