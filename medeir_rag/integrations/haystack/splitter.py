"""``MedeirDocumentSplitter``: Documents into windows of the medical tokenizer's tokens, up to the model's window.

Drop-in for core ``DocumentSplitter(split_by="token")``. It counts the
``meta_fields_to_embed`` values that the document embedder will prepend against
``split_length``, and ``split_length`` must fit the model window with the document prompt,
so a chunk is never truncated by the embedder. It writes Haystack's ``source_id``,
``page_number``, ``split_id``, ``split_idx_start`` (and ``_split_overlap`` when
``split_overlap > 0``), plus ``split_idx_end``; ``content == parent[split_idx_start:split_idx_end]``.
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict

from medeir_rag.errors import InvalidArgumentError
from medeir_rag.integrations._shared import get_token_window
from medeir_rag.integrations.haystack._loading import PUBLIC_MODULE, check_documents, meta_text
from medeir_rag.rag.chunking import DEFAULT_BOUNDARY_FRACTION, DEFAULT_CHUNK_SIZE, chunk_text, count_tokens

logger = logging.getLogger(__name__)


@component
class MedeirDocumentSplitter:
    """
    Splits Documents into windows of the medical tokenizer's tokens, up to the model's long window.

    Usage example:

    ```python
    from haystack import Document
    from medeir_rag.integrations.haystack import MedeirDocumentSplitter

    splitter = MedeirDocumentSplitter(model="path/to/medeir-st", split_length=1024, split_overlap=64)
    chunks = splitter.run([Document(content="A long PubMed abstract ...")])["documents"]
    ```
    """

    __module__ = PUBLIC_MODULE  # the serialised type: medeir_rag.integrations.haystack.MedeirDocumentSplitter

    def __init__(
        self,
        *,
        model: str | None = None,
        split_length: int | None = DEFAULT_CHUNK_SIZE,
        split_overlap: int = 0,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        skip_empty_documents: bool = True,
        boundary_fraction: float = DEFAULT_BOUNDARY_FRACTION,
    ) -> None:
        """
        Create a MedeirDocumentSplitter.

        :param model: the model whose tokenizer, window and document prompt apply; `None` uses the
            tokenizer shipped with the package and its 8,192-token window.
        :param split_length: tokens per chunk, including the `meta_fields_to_embed` values;
            512 by default (measured: ``benchmarks/chunk_size.py``; context an LLM can take at a
            few chunks, and most often a whole abstract in the top chunk); `None` is the whole
            window (minus special tokens and the document prompt), medeir's long-input case.
        :param split_overlap: tokens repeated at the start of the next chunk.
        :param meta_fields_to_embed: the metadata fields the document embedder will prepend
            (their tokens count against `split_length`).
        :param embedding_separator: the separator the document embedder will use.
        :param skip_empty_documents: skip Documents without any token (empty or whitespace-only).
        :param boundary_fraction: look back this share of a window for a paragraph or sentence end.
        """
        if split_length is not None and (not isinstance(split_length, int) or split_length <= 0):
            raise ValueError(f"split_length must be a positive integer or None, got {split_length!r}")
        if not isinstance(split_overlap, int) or split_overlap < 0:
            raise ValueError(f"split_overlap must be a non-negative integer, got {split_overlap!r}")
        if split_length is not None and split_overlap >= split_length:
            raise ValueError(f"split_overlap ({split_overlap}) must be smaller than split_length ({split_length})")
        if not 0 <= boundary_fraction < 1:
            raise ValueError(f"boundary_fraction must be in [0, 1), got {boundary_fraction}")
        self.model = None if model is None else str(model)
        self.split_length = split_length
        self.split_overlap = split_overlap
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.skip_empty_documents = skip_empty_documents
        self.boundary_fraction = boundary_fraction
        self.window = None
        self._length = 0

    def warm_up(self) -> None:
        """Load the tokenizer and check that `split_length` fits the model window."""
        if self.window is None:
            window = get_token_window(self.model)
            self._length = window.resolve_chunk_size(self.split_length)
            if self.split_overlap >= self._length:
                raise ValueError(f"split_overlap ({self.split_overlap}) must be smaller than {self._length}")
            self.window = window

    def to_dict(self) -> dict[str, Any]:
        """
        Serializes the component to a dictionary.

        :returns: Dictionary with serialized data.
        """
        return default_to_dict(
            self,
            model=self.model,
            split_length=self.split_length,
            split_overlap=self.split_overlap,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            skip_empty_documents=self.skip_empty_documents,
            boundary_fraction=self.boundary_fraction,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MedeirDocumentSplitter:
        """
        Deserializes the component from a dictionary.

        :param data: Dictionary to deserialize from.
        :returns: Deserialized component.
        """
        return default_from_dict(cls, data)

    def _split(self, doc: Document) -> list[Document]:
        tokenizer = self.window.tokenizer
        fields = meta_text(doc, self.meta_fields_to_embed)
        reserved = count_tokens(tokenizer, self.embedding_separator.join(fields)) if fields else 0
        budget = self._length - reserved
        if budget <= 0:
            raise ValueError(
                f"the metadata fields {self.meta_fields_to_embed} of document {doc.id} take {reserved} tokens, "
                f"not less than split_length={self._length}"
            )
        text = doc.content
        chunks = chunk_text(
            text, tokenizer, self._length, min(self.split_overlap, budget - 1), reserved_tokens=reserved,
            boundary_fraction=self.boundary_fraction,
        )
        if not chunks and not self.skip_empty_documents:
            chunks_spans = [("", 0, 0)]
        else:
            chunks_spans = [(c.text, c.start, c.end) for c in chunks]
        documents: list[Document] = []
        for index, (content, start, end) in enumerate(chunks_spans):
            meta = deepcopy(doc.meta)
            meta["source_id"] = doc.id
            meta["page_number"] = text.count("\f", 0, start) + 1
            meta["split_id"] = index
            meta["split_idx_start"] = start
            meta["split_idx_end"] = end
            new = Document(content=content, meta=meta)
            documents.append(new)
            if self.split_overlap <= 0:
                continue
            new.meta["_split_overlap"] = []
            if index == 0:
                continue
            previous = documents[index - 1]
            previous_start, previous_end = chunks_spans[index - 1][1], chunks_spans[index - 1][2]
            if start < previous_end:  # same bookkeeping as haystack's DocumentSplitter
                overlap = (start - previous_start, previous_end - previous_start)
                new.meta["_split_overlap"].append({"doc_id": previous.id, "range": overlap})
                previous.meta["_split_overlap"].append({"doc_id": new.id, "range": (0, previous_end - start)})
        return documents

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Split Documents into token windows.

        :param documents: the Documents to split.
        :returns: A dictionary with the key `documents`: the chunks, each with `source_id`,
            `page_number`, `split_id`, `split_idx_start`, `split_idx_end` (and `_split_overlap`
            when `split_overlap > 0`) added to a copy of its parent's metadata.
        :raises TypeError: if the input is not a list of Documents.
        :raises ValueError: if a Document's content is None.
        """
        check_documents(documents, "MedeirDocumentSplitter")
        if self.window is None:
            self.warm_up()
        split: list[Document] = []
        for doc in documents:
            if doc.content is None:
                raise InvalidArgumentError(
                    f"MedeirDocumentSplitter only works with text documents but content for document ID {doc.id} is None."
                )
            chunks = self._split(doc)
            if not chunks:
                logger.warning("Document ID %s has no text to split (empty or whitespace). Skipping it.", doc.id)
            split.extend(chunks)
        return {"documents": split}
