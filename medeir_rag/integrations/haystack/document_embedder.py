"""``MedeirDocumentEmbedder``: Documents to dense vectors (each copy's ``embedding``), for a writer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from haystack import Document, component
from haystack.utils import ComponentDevice, Secret

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.integrations.haystack._dense import (
    Backend,
    ComputePrecision,
    DenseEmbedderBase,
    Dtype,
    OutputPrecision,
    Overlong,
)
from medeir_rag.integrations.haystack._loading import DEFAULT_TOKEN, PUBLIC_MODULE, check_documents, meta_text
from medeir_rag.model.files import DEFAULT_MODEL_NAME


@component
class MedeirDocumentEmbedder(DenseEmbedderBase):
    """
    Embeds Documents with a medeir model; the embedding goes to each Document's `embedding` field.

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirDocumentEmbedder

    embedder = MedeirDocumentEmbedder(model="path/to/medeir-st", meta_fields_to_embed=["title"])
    docs = embedder.run([Document(content="Metformin lowers glucose.", meta={"title": "Metformin"})])["documents"]
    print(docs[0].embedding[:4])
    ```
    """

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirDocumentEmbedder

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
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
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
        prompt_name: str | None = "document",
        compute_precision: ComputePrecision = "auto",
        dtype: Dtype | None = None,
        overlong: Overlong = "truncate",
    ) -> None:
        """
        Create a MedeirDocumentEmbedder. The parameters shared with
        `SentenceTransformersDocumentEmbedder` have its meaning; where our model cannot honour
        one it is refused by name (`medeir_rag.integrations.haystack._loading` lists the decision for each).

        :param model: a medeir sentence-transformers directory, or `hf:org/name` for a hub model
            (default: the bundled model).
        :param device: the device to load the model on; `None` picks one automatically.
        :param token: hub token, used for `hf:` models only.
        :param prefix: a string added before each document text (after the model's prompt).
        :param suffix: a string added after each document text.
        :param batch_size: the most documents per forward pass (all documents are sorted by length
            and batched by token budget in one encode call).
        :param progress_bar: show a progress bar.
        :param normalize_embeddings: force L2 normalisation (`False` keeps the model's setting).
        :param meta_fields_to_embed: metadata fields embedded together with the content.
        :param embedding_separator: separator between those fields and the content.
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
        :param prompt_name: the saved prompt to prepend (`"document"`); `None` for none.
        :param compute_precision: `"auto"` (default: `"bf16"` where the hardware runs it natively, else `"fp32"`),
            `"fp32"`, `"bf16"`, `"fp16"` (GPUs) or `"int8"` (see `medeir_rag.inference.precision`).
        :param dtype: deprecated spelling of `compute_precision` (`"float32"`, `"float16"`, `"bfloat16"`); warns.
        :param overlong: documents over the model window: `"truncate"` (with a warning), `"chunk"` or `"error"`.
        """
        # the @component decorator rebuilds the class, so zero-argument super() cannot be used
        DenseEmbedderBase._setup(
            self, "MedeirDocumentEmbedder", model=model, device=device, token=token, prefix=prefix, suffix=suffix,
            batch_size=batch_size, progress_bar=progress_bar, normalize_embeddings=normalize_embeddings,
            meta_fields_to_embed=meta_fields_to_embed or [], embedding_separator=embedding_separator,
            trust_remote_code=trust_remote_code, local_files_only=local_files_only, truncate_dim=truncate_dim,
            model_kwargs=model_kwargs, tokenizer_kwargs=tokenizer_kwargs, config_kwargs=config_kwargs,
            precision=precision, encode_kwargs=encode_kwargs, backend=backend, revision=revision,
            quantization_ranges=quantization_ranges, prompt_name=prompt_name, compute_precision=compute_precision,
            dtype=dtype, overlong=overlong,
        )

    def _text(self, doc: Document) -> str:
        fields = meta_text(doc, self.meta_fields_to_embed)
        return self.prefix + self.embedding_separator.join([*fields, doc.content or ""]) + self.suffix

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embed a list of Documents.

        :param documents: Documents to embed.
        :returns: A dictionary with the key `documents`: copies of the Documents with their embeddings.
        :raises TypeError: if the input is not a list of Documents.
        :raises InvalidArgumentError: if a Document's content is None (its ID is named).
        """
        check_documents(documents, "MedeirDocumentEmbedder", "MedeirTextEmbedder")
        if self.encoder is None:
            self.warm_up()
        if not documents:
            return {"documents": []}
        empty = next((doc for doc in documents if doc.content is None), None)
        if empty is not None:  # an empty vector would be stored as if it were this document's text
            raise InvalidArgumentError(f"MedeirDocumentEmbedder: document ID {empty.id} has no content (None)")
        embeddings = self._embed([self._text(doc) for doc in documents])
        return {"documents": [replace(doc, embedding=emb) for doc, emb in zip(documents, embeddings, strict=True)]}
