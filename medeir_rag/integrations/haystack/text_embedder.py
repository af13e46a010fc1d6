"""``MedeirTextEmbedder``: a query string to a dense vector, for an embedding retriever."""

from __future__ import annotations

from typing import Any

from haystack import component
from haystack.utils import ComponentDevice, Secret

from medeir_rag.integrations.haystack._dense import (
    Backend,
    ComputePrecision,
    DenseEmbedderBase,
    Dtype,
    OutputPrecision,
    Overlong,
)
from medeir_rag.integrations.haystack._loading import DEFAULT_TOKEN, PUBLIC_MODULE
from medeir_rag.model.files import DEFAULT_MODEL_NAME


@component
class MedeirTextEmbedder(DenseEmbedderBase):
    """
    Embeds a string (a query) with a medeir model.

    Usage example:

    ```python
    from medeir_rag.integrations.haystack import MedeirTextEmbedder

    embedder = MedeirTextEmbedder(model="path/to/medeir-st")
    print(embedder.run("first-line drug for type 2 diabetes")["embedding"][:4])
    ```
    """

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirTextEmbedder

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL_NAME,
        device: ComponentDevice | None = None,
        token: Secret | None = DEFAULT_TOKEN,
        prefix: str = "",
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = True,
        normalize_embeddings: bool = False,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        truncate_dim: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        config_kwargs: dict[str, Any] | None = None,
        precision: OutputPrecision = "float32",
        encode_kwargs: dict[str, Any] | None = None,
        backend: Backend = "torch",
        revision: str | None = None,
        quantization_ranges: list[list[float]] | None = None,
        prompt_name: str | None = "query",
        compute_precision: ComputePrecision = "auto",
        dtype: Dtype | None = None,
        overlong: Overlong = "truncate",
    ) -> None:
        """
        Create a MedeirTextEmbedder. The parameters shared with `SentenceTransformersTextEmbedder`
        have its meaning; where our model cannot honour one it is refused by name
        (`medeir_rag.integrations.haystack._loading` lists the decision for each).

        :param model: a medeir sentence-transformers directory, or `hf:org/name` for a hub model
            (default: the bundled model).
        :param device: the device to load the model on; `None` picks one automatically.
        :param token: hub token, used for `hf:` models only.
        :param prefix: a string added before the text (after the model's prompt).
        :param suffix: a string added after the text.
        :param batch_size: the most texts per forward pass.
        :param progress_bar: show a progress bar.
        :param normalize_embeddings: force L2 normalisation (`False` keeps the model's setting).
        :param trust_remote_code: accepted, no effect (the model code is this package's own).
        :param local_files_only: `hf:` models from the local hub cache only.
        :param truncate_dim: Matryoshka dimension; `None` keeps the full vector.
        :param model_kwargs: `None` or `{}` (keys are refused: use `compute_precision` for the dtype).
        :param tokenizer_kwargs: `None` or `{}` (the model's own tokenizer and window apply).
        :param config_kwargs: `None` or `{}`.
        :param precision: output embedding precision: `"float32"` (default), `"int8"`, `"uint8"`
            (both need `quantization_ranges`), `"binary"` or `"ubinary"`.
        :param encode_kwargs: ST encode options with a counterpart here: `prompt`, `prompt_name`.
        :param backend: `"torch"` (default) or `"onnx"` (the model folder's `onnx/` export, from `medeir export --onnx`).
        :param revision: hub revision of an `hf:` model (refused for a local folder).
        :param quantization_ranges: `(2, dim)` calibration ranges for `precision="int8"`/`"uint8"`.
        :param prompt_name: the saved prompt to prepend (`"query"`); `None` for none.
        :param compute_precision: `"auto"` (default: `"bf16"` where the hardware runs it natively, else `"fp32"`),
            `"fp32"`, `"bf16"`, `"fp16"` (GPUs) or `"int8"` (see `medeir_rag.inference.precision`).
        :param dtype: deprecated spelling of `compute_precision` (`"float32"`, `"float16"`, `"bfloat16"`); warns.
        :param overlong: text over the model window: `"truncate"` (with a warning), `"chunk"` or `"error"`.
        """
        # the @component decorator rebuilds the class, so zero-argument super() cannot be used
        DenseEmbedderBase._setup(
            self, "MedeirTextEmbedder", model=model, device=device, token=token, prefix=prefix, suffix=suffix,
            batch_size=batch_size, progress_bar=progress_bar, normalize_embeddings=normalize_embeddings,
            trust_remote_code=trust_remote_code, local_files_only=local_files_only, truncate_dim=truncate_dim,
            model_kwargs=model_kwargs, tokenizer_kwargs=tokenizer_kwargs, config_kwargs=config_kwargs,
            precision=precision, encode_kwargs=encode_kwargs, backend=backend, revision=revision,
            quantization_ranges=quantization_ranges, prompt_name=prompt_name, compute_precision=compute_precision,
            dtype=dtype, overlong=overlong,
        )

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, Any]:
        """
        Embed a single string.

        :param text: Text to embed.
        :returns: A dictionary with the key `embedding`: the embedding of the text.
        :raises TypeError: if `text` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(
                "MedeirTextEmbedder expects a string as input. "
                "In case you want to embed a list of Documents, please use the MedeirDocumentEmbedder."
            )
        if self.encoder is None:
            self.warm_up()
        return {"embedding": self._embed([self.prefix + text + self.suffix])[0]}
