"""``MedeirEncoder``: a saved medeir sentence-transformers directory, ready to embed.

Why not just ``SentenceTransformer``: the directory *is* a standard ST model (and loads as
one), but ``medeir_rag.inference.encode`` batches by token budget and handles over-long inputs
explicitly, which is faster and safer. This class reads the same files (prompts,
window, pooling, normalisation) so both paths give the same embeddings.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/inference/encoder.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerFast

from medeir_rag.errors import InvalidArgumentError, check_text
from medeir_rag.inference.encode import (
    DEFAULT_BATCH_TOKENS,
    OverlongPolicy,
    check_truncate_dim,
    encode,
    validate_texts,
)
from medeir_rag.inference.precision import (
    DEFAULT_PRECISION,
    autocast_dtype,
    check_device,
    check_options,
    default_device_for,
    quantize_int8,
    resolve_precision,
)
from medeir_rag.model.configuration import MedeirConfig
from medeir_rag.model.files import (
    DOCUMENT_PROMPT_NAMES,
    ModelFileError,
    check_st_kind,
    check_transformer_dir,
    read_json,
    read_st_folder,
    resolve_model_path,
)
from medeir_rag.model.loading import quiet_loading
from medeir_rag.model.modeling import MedeirModel
from medeir_rag.runtime import default_device

if TYPE_CHECKING:
    from medeir_rag.inference.onnx_backend import OnnxEncoderModel



def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` once it is known to be usable here (``None``: the default).

    Cheap (no model is loaded), so commands check ``--device`` before they load anything.

    Raises:
        InvalidArgumentError: not a device name torch knows, or a CUDA/MPS device that this
            machine does not have.
    """
    if device is None:
        return torch.device(default_device())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidArgumentError(f"device {device!r} is not a torch device (expected cpu, cuda, cuda:N or mps)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {device!r} needs a CUDA GPU, but torch sees none here "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use device 'cpu'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"numbered 0..{torch.cuda.device_count() - 1}"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidArgumentError(f"device {device!r}: MPS (Apple GPU) is not available here; use device 'cpu'")
    return resolved


class MedeirEncoder:
    """Embeds queries and documents with a medeir model directory.

    Args:
        model_name_or_path: a sentence-transformers directory, ``hf:org/name`` for a hub model,
            or ``None`` for the model bundled with the package.
        device: ``"cpu"``, ``"cuda"``, ...; defaults to CUDA when available (checked before
            the model loads, see ``resolve_device``), but to the CPU for ``precision="int8"``
            and for ``backend="onnx"`` without onnxruntime-gpu.
        precision: ``"auto"`` (default: ``"bf16"`` where the CPU or GPU runs bf16 natively,
            else ``"fp32"``; measured equal in nDCG@10, see ``medeir_rag.inference.precision``),
            ``"fp32"``, ``"bf16"`` (autocast; CPUs with oneDNN bf16 and GPUs),
            ``"fp16"`` (autocast, for GPUs) or ``"int8"`` (dynamic quantisation of the Linear
            layers, CPU; with ``backend="onnx"`` the exported int8 graph). See ``medeir_rag.inference.precision``.
        backend: ``"torch"`` (default) or ``"onnx"``: ONNX Runtime on the graph that
            ``medeir export --onnx`` wrote to ``<model>/onnx/`` (or to ``onnx_path``).
        onnx_path: an ``.onnx`` file, or a folder holding ``model.onnx``/``model_int8.onnx``
            (``backend="onnx"`` only; default ``<model>/onnx``).
        dtype: deprecated spelling of ``precision`` (``"float32"``/``"float16"``/``"bfloat16"``
            are ``"fp32"``/``"fp16"``/``"bf16"``); warns.
        truncate_dim: Matryoshka dimension for every call (overridable per call).
        overlong: policy for inputs over the window: ``"error"``, ``"truncate"``, ``"chunk"``.
        batch_tokens: padded tokens per forward pass.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        precision: str = DEFAULT_PRECISION,
        backend: str = "torch",
        onnx_path: str | os.PathLike[str] | None = None,
        dtype: str | None = None,
        truncate_dim: int | None = None,
        overlong: OverlongPolicy = "truncate",
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> None:
        precision = check_options(precision, backend, dtype=dtype, owner="MedeirEncoder")
        if onnx_path is not None and backend != "onnx":
            raise InvalidArgumentError(f"onnx_path is only used with backend='onnx', got backend={backend!r}")
        self.device = resolve_device(device) if device is not None else default_device_for(precision, backend)
        self.requested_precision = precision  # what was asked ("auto" stays "auto"): other processes resolve it again
        precision = resolve_precision(precision, backend, self.device)
        check_device(precision, backend, self.device)
        self.precision = precision  # concrete: "auto" resolved for this device
        self.backend = backend
        self.onnx_path = None if onnx_path is None else str(onnx_path)
        self.path = resolve_model_path(model_name_or_path)
        folder = read_st_folder(self.path, require_st_config=False)  # the kind checks come first
        transformer_dir = folder.transformer_dir
        check_st_kind(self.path, "embedder")
        check_transformer_dir(transformer_dir, role="embedder")
        hidden = read_json(transformer_dir / "config.json").get("hidden_size")
        if isinstance(hidden, int):  # before any weights load: a bad truncate_dim makes no store
            check_truncate_dim(truncate_dim, hidden)
        self.prompts: dict[str, str] = read_st_folder(self.path).prompts  # config_sentence_transformers.json is required
        window = folder.max_seq_length
        self.normalize = bool(folder.module_dirs("Normalize"))
        pooling_dirs = folder.module_dirs("Pooling")
        if pooling_dirs:
            pooling = read_json(pooling_dirs[0] / "config.json")
            is_mean = pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens", False)
            if not is_mean or not pooling.get("include_prompt", True):
                raise ModelFileError(f"{pooling_dirs[0] / 'config.json'}: only mean pooling over all tokens is supported")

        self.autocast_dtype = autocast_dtype(precision) if backend == "torch" else None
        if backend == "onnx":
            from medeir_rag.inference.onnx_backend import OnnxEncoderModel, onnx_file, providers_for

            graph = onnx_file(self.path, precision, onnx_path)  # before anything loads: a missing export
            providers_for(self.device)
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(str(transformer_dir))
        self.model: MedeirModel | OnnxEncoderModel
        if backend == "onnx":
            config = MedeirConfig.from_pretrained(str(transformer_dir))
            self.model = OnnxEncoderModel(graph, config, self.device)
        else:
            with quiet_loading():  # no "Loading weights" bar (see medeir_rag.model.loading)
                model = MedeirModel.from_pretrained(str(transformer_dir), use_safetensors=True).to(self.device).eval()
            self.model = quantize_int8(model) if precision == "int8" else model
        # ST omits max_seq_length when it equals the tokenizer's model_max_length
        window = window or self.tokenizer.model_max_length
        self.max_length = min(window, self.model.config.max_position_embeddings)
        self.truncate_dim = truncate_dim
        self.overlong: OverlongPolicy = overlong
        self.batch_tokens = batch_tokens

    @property
    def embedding_dimension(self) -> int:
        """Size of the returned vectors (after ``truncate_dim``)."""
        return self.truncate_dim or self.model.config.hidden_size

    def replica_options(self) -> dict[str, Any]:
        """Keyword arguments that build this encoder again in another process (a Ray actor, say).

        Why: a replica that embeds for this encoder's store must make the same vectors, so
        it needs the same backend, dimension and overlong policy. Precision goes as it was
        asked ("auto" is resolved again on the replica's own hardware); the device is left
        out, since the caller places the replica.
        """
        return {"precision": self.requested_precision, "backend": self.backend, "onnx_path": self.onnx_path,
                "truncate_dim": self.truncate_dim, "overlong": self.overlong, "batch_tokens": self.batch_tokens}

    @property
    def document_prompt(self) -> str:
        """The saved document prompt (``document``, else ``passage``/``corpus``/``text``)."""
        return next((self.prompts[n] for n in DOCUMENT_PROMPT_NAMES if n in self.prompts), "")

    def encode(
        self,
        texts: str | Sequence[str],
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        normalize: bool | None = None,
        overlong: OverlongPolicy | None = None,
        show_progress: bool | None = None,
        max_batch_size: int = 512,
    ) -> np.ndarray:
        """Embed texts; ``prompt_name`` picks a saved prompt, ``prompt`` gives one literally.

        Pass every text in one call: batches are cut inside, by token budget over the texts
        sorted by length, with at most ``max_batch_size`` texts per forward pass.

        Raises:
            TypeError: ``texts`` is not a string or a list of strings.
            InvalidTextError: a text (or ``prompt``) holds a lone surrogate; the message
                names ``texts[i]``. Nothing is replaced silently.
        """
        texts, single = validate_texts(texts)
        for index, text in enumerate(texts):
            check_text(text, "texts" if single else f"texts[{index}]")
        if prompt is not None:
            check_text(prompt, "prompt")
        if prompt is None:
            if prompt_name is not None and prompt_name not in self.prompts:
                raise KeyError(f"no prompt named {prompt_name!r}; saved prompts: {sorted(self.prompts)}")
            prompt = self.prompts.get(prompt_name, "") if prompt_name else ""
        return encode(
            self.model, self.tokenizer, texts[0] if single else texts, prompt=prompt, max_length=self.max_length,
            batch_tokens=self.batch_tokens, normalize=self.normalize if normalize is None else normalize,
            truncate_dim=self.truncate_dim if truncate_dim is None else truncate_dim, overlong=overlong or self.overlong,
            autocast_dtype=self.autocast_dtype, show_progress=show_progress, max_batch_size=max_batch_size,
        )

    def encode_query(self, texts: str | Sequence[str], **kwargs) -> np.ndarray:
        """Embed search queries with the ``query`` prompt."""
        return self.encode(texts, prompt=self.prompts.get("query", ""), **kwargs)

    def encode_document(self, texts: str | Sequence[str], **kwargs) -> np.ndarray:
        """Embed passages/documents with the document prompt."""
        return self.encode(texts, prompt=self.document_prompt, **kwargs)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` as the model sees it (special tokens included, no prompt)."""
        return len(self.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])

    def __repr__(self) -> str:
        return (f"MedeirEncoder(path={str(self.path)!r}, device={str(self.device)!r}, precision={self.precision!r}, "
                f"backend={self.backend!r}, dim={self.embedding_dimension})")

