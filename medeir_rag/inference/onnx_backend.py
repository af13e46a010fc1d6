"""``backend="onnx"``: exported medeir graphs run in ONNX Runtime behind the torch-model API.

Design choices:
- A model folder exported by ``medeir export --onnx`` holds ``onnx/model.onnx`` (fp32) and
  ``onnx/model_int8.onnx`` (ONNX Runtime dynamic quantisation), the sentence-transformers
  layout. ``onnx_path`` names another file, or a folder holding those names.
- ``OnnxEncoderModel`` stands where ``medeir_rag.inference.encode.encode`` expects a ``MedeirModel``:
  ``config``, ``device``, ``eval``/``train`` and a call returning ``last_hidden_state``. The
  token-budget batching, overlong policy and pooling are the same code for both backends.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/onnx_backend.py``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput, SequenceClassifierOutput

from medeir_rag.errors import InvalidArgumentError, MissingDependencyError, MissingPathError
from medeir_rag.model.configuration import MedeirConfig

ONNX_DIR = "onnx"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
ONNX_INPUTS = ("input_ids", "attention_mask")
# Above this many tokens a sequence costs far more in the exported graph than in torch: its
# attention holds the whole (batch, heads, L, L) bias (4.9 GB peak for one 8,192-token
# document against 0.8 GB in torch, README "Precision and runtimes").
ONNX_LONG_TOKENS = 2048


def import_onnxruntime():
    """``onnxruntime``, or a ``MissingDependencyError`` with the extra to install."""
    try:
        import onnxruntime
    except ImportError as error:
        raise MissingDependencyError(
            f"backend='onnx' needs onnxruntime ({error}); install it with: pip install 'medeir_rag[onnx]'"
        ) from error
    return onnxruntime


def onnx_file(model_dir: Path, precision: str, onnx_path: str | os.PathLike[str] | None = None) -> Path:
    """The ONNX file for ``precision``: ``onnx_path`` itself when it is a file, else
    ``model.onnx``/``model_int8.onnx`` in ``onnx_path`` or in ``model_dir/onnx``.

    Raises:
        MissingPathError: no such file (the message names the export command to run).
    """
    name = ONNX_FILES[precision]
    if onnx_path is not None and Path(onnx_path).is_file():
        return Path(onnx_path)
    folder = Path(onnx_path) if onnx_path is not None else Path(model_dir) / ONNX_DIR
    path = folder / name
    if not path.is_file():
        argument = f"onnx_path={str(onnx_path)!r}" if onnx_path is not None else f"model folder {str(model_dir)!r}"
        raise MissingPathError(
            f"backend='onnx', precision={precision!r}: no {path} ({argument}); export one with "
            f"`medeir export --model {model_dir} --onnx {model_dir}` (writes onnx/{ONNX_FILES['fp32']} and "
            f"onnx/{ONNX_FILES['int8']})"
        )
    return path


def providers_for(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device``; a GPU needs onnxruntime's CUDA provider."""
    onnxruntime = import_onnxruntime()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InvalidArgumentError(
        f"backend='onnx' on device {str(device)!r} needs onnxruntime's CUDA provider (onnxruntime-gpu); "
        f"this onnxruntime has {onnxruntime.get_available_providers()}; use device='cpu'"
    )


def default_onnx_device() -> torch.device:
    """The device ``backend='onnx'`` uses when none is given: CUDA only when onnxruntime can use it."""
    if torch.cuda.is_available() and "CUDAExecutionProvider" in import_onnxruntime().get_available_providers():
        return torch.device("cuda")
    return torch.device("cpu")


def make_session(path: Path, device: torch.device, threads: int | None = None):
    """An ``InferenceSession`` of ``path`` with full graph optimisation and torch's thread count."""
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers_for(device))
    names = tuple(i.name for i in session.get_inputs())
    if names != ONNX_INPUTS:
        raise InvalidArgumentError(f"{path}: expected ONNX inputs {ONNX_INPUTS}, found {names} (not a medeir export?)")
    return session


def _feed(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict[str, np.ndarray]:
    if input_ids.shape[-1] > ONNX_LONG_TOKENS:
        warnings.warn(
            f"backend='onnx' got a {input_ids.shape[-1]}-token sequence: the exported graph's attention memory "
            f"grows with the square of the length (above {ONNX_LONG_TOKENS} tokens use backend='torch', "
            "or a smaller chunk_size)", RuntimeWarning, stacklevel=2,
        )
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    return {
        "input_ids": input_ids.detach().cpu().numpy().astype(np.int64, copy=False),
        "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64, copy=False),
    }


class OnnxEncoderModel:
    """An exported ``MedeirModel`` in ONNX Runtime, with the parts of its API ``encode`` uses.

    Args:
        path: the ``.onnx`` file (inputs ``input_ids``, ``attention_mask``; output
            ``last_hidden_state``).
        config: the model's ``MedeirConfig`` (window, width, heads).
        device: where the session runs (``cpu``, or ``cuda`` with onnxruntime-gpu).
    """

    training = False

    def __init__(self, path: Path, config: MedeirConfig, device: torch.device | str = "cpu") -> None:
        self.path = Path(path)
        self.config = config
        self.device = torch.device(device)
        self.session = make_session(self.path, self.device)

    def eval(self) -> OnnxEncoderModel:
        return self

    def train(self, mode: bool = True) -> OnnxEncoderModel:
        return self

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> BaseModelOutput:
        (hidden,) = self.session.run(["last_hidden_state"], _feed(input_ids, attention_mask))
        return BaseModelOutput(last_hidden_state=torch.from_numpy(hidden))

    def __repr__(self) -> str:
        return f"OnnxEncoderModel(path={str(self.path)!r}, device={str(self.device)!r})"


class OnnxSequenceClassifier(torch.nn.Module):
    """An exported ``MedeirForSequenceClassification`` in ONNX Runtime, shaped like the
    transformers model a ``CrossEncoder`` calls (``forward(input_ids, attention_mask, ...)``
    returning ``logits``)."""

    def __init__(self, path: Path, config, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float32
        self.session = make_session(self.path, self.device)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: object
    ) -> SequenceClassifierOutput:
        (logits,) = self.session.run(["logits"], _feed(input_ids, attention_mask))
        return SequenceClassifierOutput(logits=torch.from_numpy(logits).to(input_ids.device))

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}"


__all__ = [
    "ONNX_FILES",
    "OnnxEncoderModel",
    "OnnxSequenceClassifier",
    "default_onnx_device",
    "import_onnxruntime",
    "onnx_file",
    "providers_for",
]
