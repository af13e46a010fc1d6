"""Run ``mteb.evaluate`` offline on a local BEIR folder and keep the ranking it produced.

Design choices:
- ``LocalRetrievalTask`` is an ``AbsTaskRetrieval`` whose ``TaskMetadata`` is built from
  the folder (name, split) and whose ``load_data`` fills ``self.dataset`` from a
  ``BeirDataset`` already in memory: nothing touches the Hugging Face hub.
- **The ranking mteb scored is kept.** ``AbsTaskRetrieval._evaluate_subset`` hands its
  results dict to ``task_specific_scores``, mteb's documented hook; the task stores it in
  ``self.runs[split]``. The dense row's rerank and hybrid rows start from exactly that
  ranking, and the evaluation checks that ``score_run`` on it gives mteb's own numbers.

The full notes (design choices, figures, history): ``docs/DESIGN.md``, ``medeir_rag/eval/mteb_tasks.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medeir_rag.eval.baselines import DenseModel, embed
from medeir_rag.eval.beir import BeirDataset
from medeir_rag.eval.embedding_cache import EmbeddingCache
from medeir_rag.eval.metrics import K_VALUES, Run

try:
    from mteb.abstasks import AbsTaskRetrieval
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.abs_encoder import AbsEncoder
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(f"mteb is required here: pip install 'medeir_rag[eval]' ({error})") from error


def _task_name(dataset: BeirDataset) -> str:
    return f"Local{''.join(part.capitalize() for part in dataset.name.replace('-', '_').split('_'))}"


def task_metadata(dataset: BeirDataset) -> TaskMetadata:
    """The metadata mteb requires, filled from the folder."""
    return TaskMetadata(
        name=_task_name(dataset),
        description=f"Local BEIR folder {dataset.path} (split {dataset.split}).",
        reference=None,
        dataset={"path": str(dataset.path), "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[dataset.split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=["Medical"],
        task_subtypes=None,
        license="not specified",
        annotations_creators=None,
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )


class LocalRetrievalTask(AbsTaskRetrieval):
    """One split of a local BEIR folder as an mteb retrieval task; build it with ``make_task``.

    mteb reads ``metadata`` from the class (``unload_data`` drops any instance copy), so
    ``make_task`` creates a subclass per dataset.
    """

    k_values = K_VALUES

    def __init__(self, dataset: BeirDataset, **kwargs: Any) -> None:
        self.beir = dataset
        self.runs: dict[str, Run] = {}
        super().__init__(**kwargs)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        from datasets import Dataset

        if self.data_loaded:
            return
        data = self.beir
        corpus = Dataset.from_dict({"id": data.doc_ids, "title": [data.titles[i] for i in data.doc_ids],
                                    "text": [data.texts[i] for i in data.doc_ids]})
        queries = Dataset.from_dict({"id": data.query_ids, "text": data.query_texts()})
        relevant = {q: dict(docs) for q, docs in data.qrels.items()}
        self.dataset = {"default": {data.split: {"corpus": corpus, "queries": queries,
                                                 "relevant_docs": relevant, "top_ranked": None}}}
        self.data_loaded = True

    def task_specific_scores(
        self, scores: dict[str, dict[str, float]], qrels: Any, results: dict[str, dict[str, float]],
        hf_split: str, hf_subset: str,
    ) -> dict[str, float]:
        self.runs[hf_split] = {q: dict(docs) for q, docs in results.items()}
        return {}


def make_task(dataset: BeirDataset) -> LocalRetrievalTask:
    """An mteb task over ``dataset`` (a ``LocalRetrievalTask`` subclass carrying its metadata)."""
    metadata = task_metadata(dataset)
    task_class = type(metadata.name, (LocalRetrievalTask,), {"metadata": metadata})
    return task_class(dataset)


class MtebDenseAdapter(AbsEncoder):
    """An mteb encoder over a ``DenseModel``, embedding through the cache."""

    def __init__(self, model: DenseModel, cache: EmbeddingCache, corpus_sha256: str | None = None) -> None:
        self.model = model
        self.cache = cache
        self.corpus_sha256 = corpus_sha256
        self.mteb_model_meta = None

    def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str,
               prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
        from mteb.types import PromptType

        texts = [text for batch in inputs for text in batch["text"]]
        if prompt_type == PromptType.query:
            return embed(self.model, texts, "query", self.cache)
        return embed(self.model, texts, "document", self.cache, source_sha256=self.corpus_sha256)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> Any:
        from mteb.similarity_functions import cos_sim

        return cos_sim(embeddings1, embeddings2)


def mteb_dense_eval(
    model: DenseModel, dataset: BeirDataset, cache: EmbeddingCache, *, corpus_sha256: str | None = None,
    show_progress: bool = True,
) -> tuple[dict[str, float], Run]:
    """``mteb.evaluate`` one dense model on one dataset: (mteb's scores, the ranking it scored)."""
    import mteb

    task = make_task(dataset)
    adapter = MtebDenseAdapter(model, cache, corpus_sha256=corpus_sha256)
    result = mteb.evaluate(adapter, tasks=[task], cache=None, show_progress_bar=show_progress,
                           encode_kwargs={"batch_size": 64, "show_progress_bar": show_progress})
    if result.exceptions:
        raise RuntimeError(f"mteb failed on {dataset.name}: {result.exceptions}")
    scores = dict(result.task_results[0].scores[dataset.split][0])
    return scores, task.runs[dataset.split]
