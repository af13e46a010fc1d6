"""What the two dense embedders share: options, model loading, encoding, output quantisation.

- ``precision`` has Haystack's meaning, the *output* embedding precision: ``"float32"``
  (default) or a quantised ``"int8"``, ``"uint8"``, ``"binary"``, ``"ubinary"`` computed by
  ``sentence_transformers.quantization.quantize_embeddings`` after truncation and
  normalisation; ``int8``/``uint8`` need ``quantization_ranges`` (shape ``(2, dim)``,
  calibrated on a representative sample), as in sentence-transformers-haystack 2.0.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/integrations/haystack/_dense.py``.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from haystack.utils import ComponentDevice

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.encode import OVERLONG_POLICIES
from medeir_rag.inference.precision import DTYPE_TO_PRECISION, PRECISIONS, check_options
from medeir_rag.integrations._shared import get_encoder
from medeir_rag.integrations.haystack._loading import (
    StoredParams,
    check_encode_kwargs,
    check_load_options,
    check_positive,
    local_model,
)
from medeir_rag.integrations.haystack._telemetry import NoTelemetry

Dtype = Literal["float32", "float16", "bfloat16"]  # deprecated: ComputePrecision
ComputePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
OutputPrecision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
Backend = Literal["torch", "onnx"]
Overlong = Literal["truncate", "chunk", "error"]
OUTPUT_PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")


def check_output_precision(owner: str, precision: str, quantization_ranges: list[list[float]] | None) -> None:
    """``precision`` is Haystack's output precision; a compute name gets pointed at ``compute_precision``."""
    if precision in ("int8", "uint8") and quantization_ranges is None:
        raise InvalidArgumentError(
            f"{owner}: precision={precision!r} quantises the output embeddings and needs quantization_ranges "
            f"(calibrated on a sample); for {precision} compute pass compute_precision='int8' instead"
        )
    if precision not in OUTPUT_PRECISIONS:
        hint = f"; use compute_precision={precision!r} for the model's compute precision" if precision in PRECISIONS else ""
        raise InvalidArgumentError(
            f"{owner}: precision is the output embedding precision, one of {OUTPUT_PRECISIONS}, got {precision!r}{hint}"
        )


def resolve_compute_precision(owner: str, compute_precision: str, backend: str, dtype: str | None) -> str:
    """``compute_precision`` once valid, with the deprecated ``dtype`` folded in (warns)."""
    if dtype is not None:
        if dtype not in DTYPE_TO_PRECISION:
            raise InvalidArgumentError(f"dtype must be one of {tuple(DTYPE_TO_PRECISION)} (deprecated), got {dtype!r}")
        mapped = DTYPE_TO_PRECISION[dtype]
        if compute_precision not in ("auto", mapped):
            raise InvalidArgumentError(f"dtype={dtype!r} and compute_precision={compute_precision!r} disagree")
        warnings.warn(f"{owner}(dtype={dtype!r}) is deprecated; use compute_precision={mapped!r}",
                      DeprecationWarning, stacklevel=4)
        compute_precision = mapped
    try:
        return check_options(compute_precision, backend, owner=owner)
    except InvalidArgumentError as error:
        raise InvalidArgumentError(str(error).replace("precision", "compute_precision", 1)) from None


def migrate_old_precision(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A pipeline file from before ``compute_precision``: its ``precision`` was the compute one."""
    params = data.get("init_parameters", {})
    if "compute_precision" not in params and params.get("precision") in PRECISIONS:
        warnings.warn(
            f"{cls.__name__}: precision={params['precision']!r} in a saved pipeline is the compute precision, now "
            "named compute_precision (precision is the output embedding precision, as in Haystack)",
            DeprecationWarning, stacklevel=3,
        )
        params = {**params, "compute_precision": params["precision"], "precision": "float32"}
        data = {**data, "init_parameters": params}
    return data


class DenseEmbedderBase(NoTelemetry, StoredParams):
    """Shared state and encoding of the text and document embedders."""

    def _setup(self, owner: str, **params: Any) -> None:
        # every init parameter stored under its own name, as Haystack's to_dict expects
        check_positive("batch_size", params["batch_size"])
        if params["truncate_dim"] is not None:
            check_positive("truncate_dim", params["truncate_dim"])
        if params["overlong"] not in OVERLONG_POLICIES:
            raise InvalidArgumentError(f"overlong must be one of {OVERLONG_POLICIES}, got {params['overlong']!r}")
        check_output_precision(owner, params["precision"], params["quantization_ranges"])
        check_encode_kwargs(owner, params["encode_kwargs"])
        params["model"] = str(params["model"])
        check_load_options(owner, params["model"], revision=params["revision"], model_kwargs=params["model_kwargs"],
                           tokenizer_kwargs=params["tokenizer_kwargs"], config_kwargs=params["config_kwargs"])
        params["compute_precision"] = resolve_compute_precision(
            owner, params["compute_precision"], params["backend"], params.pop("dtype")
        )
        params["device"] = ComponentDevice.resolve_device(params["device"])
        self._store_params(params)
        self.encoder = None
        self._prompt = ""

    def warm_up(self) -> None:
        """Load the model (shared with other components that use the same one)."""
        if self.encoder is not None:
            return
        path = local_model(self.model, token=self.token, revision=self.revision, local_files_only=self.local_files_only)
        encoder = get_encoder(path, self.device.to_torch_str(), precision=self.compute_precision, backend=self.backend)
        overrides = self.encode_kwargs or {}
        prompt_name = overrides.get("prompt_name", self.prompt_name)
        if "prompt" in overrides:
            prompt = overrides["prompt"] or ""
        elif prompt_name is None:
            prompt = ""
        elif prompt_name in encoder.prompts:
            prompt = encoder.prompts[prompt_name]
        elif prompt_name == "document":
            prompt = encoder.document_prompt
        else:
            raise InvalidArgumentError(
                f"model {self.model!r} has no prompt named {prompt_name!r}; saved prompts: "
                f"{sorted(encoder.prompts)} (pass prompt_name=None for none)"
            )
        hidden = encoder.model.config.hidden_size
        if self.truncate_dim is not None and self.truncate_dim > hidden:
            raise InvalidArgumentError(
                f"truncate_dim must be at most {hidden} for model {self.model!r}, got {self.truncate_dim}"
            )
        self._prompt = prompt
        self.encoder = encoder

    @property
    def embedding_dimension(self) -> int:
        """Size of the float embeddings (after ``truncate_dim``); loads the model if needed."""
        self.warm_up()
        return self.truncate_dim or self.encoder.model.config.hidden_size

    def _embed(self, texts: list[str]) -> list[list[float]]:
        # every text in one call, so the encoder sorts them all by length before batching;
        # batch_size caps the texts per forward pass
        embeddings = self.encoder.encode(
            texts, prompt=self._prompt, truncate_dim=self.truncate_dim,
            normalize=True if self.normalize_embeddings else None, overlong=self.overlong,
            show_progress=self.progress_bar, max_batch_size=self.batch_size,
        )
        if self.precision != "float32":
            from sentence_transformers.quantization import quantize_embeddings

            ranges = None if self.quantization_ranges is None else np.asarray(self.quantization_ranges)
            embeddings = quantize_embeddings(embeddings, precision=self.precision, ranges=ranges)
        return embeddings.tolist()

    @classmethod
    def _upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        return migrate_old_precision(cls, data)

