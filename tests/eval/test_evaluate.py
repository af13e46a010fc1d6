"""medeir evaluate: metrics against hand-computed values, BEIR loading, fusion, mteb parity, end to end."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from medeir_rag.eval.beir import choose_split, document_text, load_beir
from medeir_rag.eval.metrics import score_run, top_k
from medeir_rag.rag.fusion import (
    HybridWeights,
    convex_combination,
    hybrid_runs,
    load_hybrid_weights,
    reciprocal_rank_fusion,
    rrf_runs,
    save_hybrid_weights,
)

DOCS = [
    ("d1", "Metformin", "Metformin lowers blood glucose in patients with type 2 diabetes mellitus."),
    ("d2", "", "Hypertension is a major risk factor for stroke and myocardial infarction."),
    ("d3", "Otitis", "The patient was treated with amoxicillin for acute otitis media."),
    ("d4", "", "Insulin resistance precedes the onset of diabetes in obese adults."),
    ("d5", "Pneumonia", "Chest radiography showed bilateral infiltrates consistent with pneumonia."),
    ("d6", "", "Beta blockers reduce mortality after myocardial infarction."),
    ("d7", "Asthma", "Asthma exacerbations were treated with inhaled corticosteroids."),
    ("d8", "", "Chronic kidney disease increases cardiovascular risk."),
]
QUERIES = [
    ("q1", "which drug lowers glucose in diabetes", "treatment"),
    ("q2", "risk factors for stroke", "causes"),
    ("q3", "treatment of asthma exacerbations", "treatment"),
    ("q4", "what causes insulin resistance", "causes"),
    ("q5", "an unjudged query", "other"),
]
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1, "d6": 1}, "q3": {"d7": 1}, "q4": {"d4": 1}}


def write_beir(folder: Path, split: str = "dev", gz: bool = True) -> Path:
    """A tiny BEIR folder: gzipped corpus, queries with metadata, qrels under ``split``."""
    (folder / "qrels").mkdir(parents=True)
    corpus = folder / ("corpus.jsonl.gz" if gz else "corpus.jsonl")
    with (gzip.open(corpus, "wt", encoding="utf-8") if gz else open(corpus, "w", encoding="utf-8")) as handle:
        for doc_id, title, text in DOCS:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for query_id, text, qtype in QUERIES:
            handle.write(json.dumps({"_id": query_id, "text": text, "qtype": qtype}) + "\n")
    rows = [f"{q}\t{d}\t{g}" for q, docs in QRELS.items() for d, g in docs.items()]
    (folder / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return folder


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tinymed")


# ----------------------------------------------------------------------------
# Metrics against hand-computed values


def test_score_run_matches_hand_computed_metrics() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1, "d3": 1}, "q3": {"d4": 1}}
    run = {
        "q1": {"d2": 0.9, "d1": 0.8, "d3": 0.1},  # relevant at rank 2
        "q2": {"d2": 0.9, "d1": 0.5, "d3": 0.4},  # relevant at ranks 1 and 3
        # q3 is missing from the run: it must count as 0, not leave the average
        "q9": {"d1": 1.0},  # unjudged: ignored
    }
    ndcg_q1 = (1 / math.log2(3)) / 1
    ndcg_q2 = (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
    expected = {
        "ndcg_at_10": (ndcg_q1 + ndcg_q2 + 0) / 3,
        "mrr_at_10": (1 / 2 + 1 + 0) / 3,
        "map_at_10": (1 / 2 + (1 / 1 + 2 / 3) / 2 + 0) / 3,
        "recall_at_1": (0 + 1 / 2 + 0) / 3,
        "recall_at_10": (1 + 1 + 0) / 3,
        "recall_at_100": (1 + 1 + 0) / 3,
        "precision_at_10": (1 / 10 + 2 / 10 + 0) / 3,
        "precision_at_1": (0 + 1 + 0) / 3,
    }
    scores = score_run(run, qrels)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=1e-5), name


def test_score_run_ties_and_graded_relevance() -> None:
    # Ties are broken by doc id descending (pytrec_eval's order): "b" ranks before "a".
    scores = score_run({"q": {"a": 1.0, "b": 1.0}}, {"q": {"a": 1}})
    assert scores["mrr_at_10"] == pytest.approx(0.5)
    # Grade 2 at rank 2, grade 1 at rank 1: DCG = 1 + 2/log2(3) (linear gain), IDCG = 2 + 1/log2(3).
    graded = score_run({"q": {"x": 2.0, "y": 1.0}}, {"q": {"x": 1, "y": 2}})
    assert graded["ndcg_at_10"] == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)), abs=1e-5)


def test_top_k_orders_by_score_then_id() -> None:
    assert list(top_k({"q": {"a": 0.5, "b": 0.9, "c": 0.5}}, 2)["q"]) == ["b", "c"]


def test_reciprocal_rank_fusion_by_hand() -> None:
    dense = {"a": 0.9, "b": 0.8, "c": 0.1}
    sparse = {"c": 12.0, "a": 3.0}
    fused = reciprocal_rank_fusion([dense, sparse], k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert fused["b"] == pytest.approx(1 / 62)
    assert list(fused) == ["a", "c", "b"]
    assert list(reciprocal_rank_fusion([dense, sparse], top_k=1)) == ["a"]
    assert rrf_runs([{"q": dense}, {"q": sparse, "r": {"z": 1.0}}])["r"] == {"z": pytest.approx(1 / 61)}


def test_convex_combination_by_hand() -> None:
    dense = {"a": 0.9, "b": 0.7, "c": 0.5}  # min-max: a 1, b 0.5, c 0
    sparse = {"c": 12.0, "a": 4.0, "d": 2.0}  # min-max: c 1, a 0.2, d 0
    fused = convex_combination(dense, sparse, alpha=0.25)
    assert fused == pytest.approx({"c": 0.75, "a": 0.25 + 0.75 * 0.2, "b": 0.125, "d": 0.0})
    assert list(fused) == ["c", "a", "b", "d"]
    assert list(convex_combination(dense, sparse, alpha=1.0, top_k=2)) == ["a", "b"]  # dense order alone
    assert list(convex_combination(dense, sparse, alpha=0.0))[:2] == ["c", "a"]  # sparse order alone
    assert convex_combination({"x": 3.0}, {}, 0.5) == {"x": 0.5}  # one-element list: normalised to 1
    with pytest.raises(ValueError, match="alpha"):
        convex_combination(dense, sparse, alpha=1.5)
    runs = hybrid_runs({"q": dense, "r": {"z": 1.0}}, {"q": sparse}, alpha=0.25)
    assert runs["q"] == fused and runs["r"] == {"z": 0.25}


def test_max_scaled_fusion_keeps_how_far_each_side_falls_behind_its_best() -> None:
    dense = {"a": 0.9, "b": 0.6, "c": 0.3}  # / 0.9: a 1, b 2/3, c 1/3 (missing: 1/3, the last)
    sparse = {"c": 10.0, "d": 8.0}  # / 10: c 1, d 0.8 (missing: 0.8)
    fused = convex_combination(dense, sparse, alpha=0.5, normalization="max")
    assert fused == pytest.approx({"a": 0.5 + 0.4, "b": 1 / 3 + 0.4, "c": 1 / 6 + 0.5, "d": 1 / 6 + 0.4})
    assert list(fused) == ["a", "b", "c", "d"]
    # min-max stretches each list to [0, 1]: c (last on the dense side) ties a (ties: higher id first)
    assert convex_combination(dense, sparse, alpha=0.5) == pytest.approx({"c": 0.5, "a": 0.5, "b": 0.25, "d": 0.0})
    assert list(convex_combination(dense, sparse, alpha=0.5)) == ["c", "a", "b", "d"]
    assert convex_combination({"x": -0.2}, {}, 0.5, normalization="max") == {"x": 0.5}  # no positive best: all 1
    with pytest.raises(ValueError, match="normalization"):
        convex_combination(dense, sparse, alpha=0.5, normalization="z-score")


def test_hybrid_weights_file_round_trip(tmp_path: Path) -> None:
    assert load_hybrid_weights(tmp_path).alpha == 0.5  # no hybrid.json: the default
    save_hybrid_weights(tmp_path, HybridWeights(alpha=0.3, provenance={"chosen_by": "test"}))
    loaded = load_hybrid_weights(tmp_path)
    assert loaded.alpha == 0.3 and loaded.provenance == {"chosen_by": "test"} and loaded.normalization == "min-max"
    save_hybrid_weights(tmp_path, HybridWeights(alpha=0.7, normalization="max"))
    assert load_hybrid_weights(tmp_path) == HybridWeights(alpha=0.7, normalization="max")
    assert "max-scaled" in load_hybrid_weights(tmp_path).label
    (tmp_path / "hybrid.json").write_text('{"alpha": 0.6}')  # a file from before the field: min-max
    assert load_hybrid_weights(tmp_path).normalization == "min-max"
    with pytest.raises(ValueError, match="normalization must be one of"):
        HybridWeights(alpha=0.5, normalization="rank")
    (tmp_path / "hybrid.json").write_text('{"alpha": "high"}')
    with pytest.raises(ValueError, match="not a valid hybrid weights file"):
        load_hybrid_weights(tmp_path)
    (tmp_path / "hybrid.json").write_text('{"alpha": 2}')
    with pytest.raises(ValueError, match="must be in"):
        load_hybrid_weights(tmp_path)


# ----------------------------------------------------------------------------
# BEIR loading


def test_load_beir_gz_corpus_and_other_split(beir_dir: Path) -> None:
    data = load_beir(beir_dir)
    assert data.split == "dev" and data.corpus_file.name == "corpus.jsonl.gz"
    assert data.query_ids == ["q1", "q2", "q3", "q4"]  # the unjudged q5 is left out
    assert data.query_metadata["q1"] == {"qtype": "treatment"}
    assert data.document_texts()[0] == "Metformin Metformin lowers blood glucose in patients with type 2 diabetes mellitus."
    assert data.document_texts()[1] == DOCS[1][2]
    assert document_text("", "  x ") == "x"


def test_choose_split_rules(tmp_path: Path) -> None:
    folder = write_beir(tmp_path / "plain", split="train", gz=False)
    (folder / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(ValueError, match="--split"):
        choose_split(folder)
    assert load_beir(folder, "dev").qrels == {"q1": {"d1": 1}}
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    assert choose_split(folder) == "test"
    with pytest.raises(ValueError, match="no split"):
        choose_split(folder, "validation")


# ----------------------------------------------------------------------------
# mteb parity and end to end


def test_mteb_dense_row_equals_own_run_dict_path(beir_dir: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from medeir_rag.eval.baselines import embed, load_medeir
    from medeir_rag.eval.embedding_cache import EmbeddingCache
    from medeir_rag.eval.mteb_tasks import mteb_dense_eval

    data = load_beir(beir_dir)
    model = load_medeir(tiny_model_dir, device="cpu")
    cache = EmbeddingCache(tmp_path / "cache")
    mteb_scores, mteb_run = mteb_dense_eval(model, data, cache, show_progress=False)

    # Our own path: embed with the same model, cosine, full ranking, scored by score_run.
    queries = embed(model, data.query_texts(), "query", cache)
    documents = embed(model, data.document_texts(), "document", cache)
    similarity = queries @ documents.T
    own_run = {q: {d: float(similarity[i, j]) for j, d in enumerate(data.doc_ids)} for i, q in enumerate(data.query_ids)}
    ours = score_run(own_run, data.qrels)
    for name in ("ndcg_at_10", "map_at_10", "recall_at_10", "recall_at_100", "precision_at_10", "mrr_at_10"):
        assert ours[name] == pytest.approx(mteb_scores[name], abs=1e-9), name
        assert score_run(mteb_run, data.qrels)[name] == mteb_scores[name]
    for query_id in data.query_ids:
        assert list(top_k(mteb_run, 8)[query_id]) == list(top_k(own_run, 8)[query_id])


def _run_main(folder: Path, out: Path, cache: Path, *extra: str) -> dict:
    from medeir_rag.cli.evaluate import main

    assert main([str(folder), "--output-dir", str(out), "--cache-dir", str(cache), "--quiet", "--device", "cpu", *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_main_end_to_end_with_cache(beir_dir, tiny_model_dir, tiny_reranker_dir, tmp_path, capsys) -> None:
    cache = tmp_path / "emb-cache"
    args = ("--model", str(tiny_model_dir), "--reranker", str(tiny_reranker_dir), "--rerank-top-k", "5")
    first = _run_main(beir_dir, tmp_path / "out1", cache, *args)
    rows = first["results"]["tinymed"]["rows"]
    assert set(rows) == {"bm25", "bm25_medeir", "minilm", "medeir", "medeir_rerank", "hybrid", "rrf"}
    assert first["results"]["tinymed"]["dataset"]["split"] == "dev"
    for row in rows.values():
        assert set(row["metrics"]) == {"ndcg_at_10", "map_at_10", "recall_at_10", "recall_at_100", "precision_at_10", "mrr_at_10"}
        assert all(0.0 <= v <= 1.0 for v in row["metrics"].values())
    assert first["checks"]["max_abs_diff_mteb_vs_score_run"]["tinymed"] == {"minilm": 0.0, "medeir": 0.0}
    assert len(first["models"]["medeir"]["weights_sha256"]) == 64 and "reranker" in first["models"]
    assert first["versions"]["mteb"] != "not installed" and first["seeds"]["python_numpy_torch"] == 0
    # BM25 finds every relevant document but d6, which shares no word with q2: (1 + 1/2 + 1 + 1) / 4.
    assert rows["bm25"]["metrics"]["recall_at_100"] == 0.875
    # Reranking only reorders the hybrid top 5: its recall@5 equals the hybrid recall@5.
    assert rows["medeir_rerank"]["all_scores"]["recall_at_5"] == rows["hybrid"]["all_scores"]["recall_at_5"]
    assert first["settings"]["hybrid_alpha"] == 0.5 and "convex, dense weight 0.5" in rows["hybrid"]["label"]
    npy = sorted(cache.glob("*.npy"))
    assert len(npy) == 4 and first["cache"]["misses"] == 4  # queries + documents, two models
    markdown = (tmp_path / "out1" / "results.md").read_text()
    assert "| all-MiniLM-L6-v2 |" in markdown and "MedicalQARetrieval" in markdown and "72.04" in markdown
    assert "### tinymed (split `dev`" in capsys.readouterr().out

    second = _run_main(beir_dir, tmp_path / "out2", cache, *args)
    assert second["cache"] == {"dir": str(cache), "hits": 4, "misses": 0}
    for key, row in rows.items():
        assert second["results"]["tinymed"]["rows"][key]["metrics"] == row["metrics"], key


def test_missing_models_are_skipped_with_a_note(beir_dir, tmp_path) -> None:
    report = _run_main(beir_dir, tmp_path / "out", tmp_path / "c", "--model", str(tmp_path / "no-such-model"),
                       "--no-minilm")
    block = report["results"]["tinymed"]
    assert set(block["rows"]) == {"bm25"}  # the sparse row is the store's search: it needs our model too
    assert set(block["skipped"]) == {"medeir", "bm25_medeir", "medeir_rerank", "hybrid", "rrf", "minilm"}
    assert "not found" in block["skipped"]["medeir"]
    assert "skipped medeir (dense): model not found" in (tmp_path / "out" / "results.md").read_text()


def test_missing_reranker_only_skips_its_row(beir_dir, tiny_model_dir, tmp_path) -> None:
    report = _run_main(beir_dir, tmp_path / "out", tmp_path / "c", "--model", str(tiny_model_dir), "--no-minilm",
                       "--reranker", str(tmp_path / "absent"), "--no-cache")
    block = report["results"]["tinymed"]
    assert "medeir_rerank" not in block["rows"] and "hybrid" in block["rows"]
    assert "reranker not found" in block["skipped"]["medeir_rerank"]
    assert report["cache"]["dir"] is None


def test_alpha_option_sets_the_hybrid_weight(beir_dir, tiny_model_dir, tmp_path) -> None:
    report = _run_main(beir_dir, tmp_path / "out", tmp_path / "c", "--model", str(tiny_model_dir), "--no-minilm",
                       "--no-reranker", "--alpha", "1")
    rows = report["results"]["tinymed"]["rows"]
    # alpha 1 keeps the dense order (min-max is monotone; the dense run ranks every document).
    assert rows["hybrid"]["all_scores"] == pytest.approx(rows["medeir"]["all_scores"])
    assert report["settings"]["hybrid_alpha"] == 1.0 and report["models"]["hybrid"]["alpha"] == 1.0


def test_embedding_cache_key_changes_with_truncate_dim(beir_dir, tiny_model_dir, tmp_path) -> None:
    from medeir_rag.eval.baselines import embed, load_medeir
    from medeir_rag.eval.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "c")
    texts = load_beir(beir_dir).document_texts()
    full = embed(load_medeir(tiny_model_dir, device="cpu"), texts, "document", cache, source_sha256="x")
    cut = embed(load_medeir(tiny_model_dir, device="cpu", truncate_dim=16), texts, "document", cache, source_sha256="x")
    assert cut.shape == (len(texts), 16) and full.shape[1] > 16
    assert cache.misses == 2 and cache.hits == 0
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------
# One path: evaluate's and tune-hybrid's rankings are the store's search


def test_evaluate_and_tune_hybrid_rankings_are_the_store_search(beir_dir, tiny_model_dir, tiny_reranker_dir,
                                                                tmp_path) -> None:
    from medeir_rag.eval.baselines import embed, load_medeir
    from medeir_rag.eval.benchmark import benchmark_store, store_runs
    from medeir_rag.eval.embedding_cache import EmbeddingCache
    from medeir_rag.inference.rerank import MedeirReranker
    from medeir_rag.rag.documents import SourceDocument
    from medeir_rag.rag.store import MedeirVectorStore
    from medeir_rag.training.hybrid import sweep_runs

    data = load_beir(beir_dir)
    model = load_medeir(tiny_model_dir, device="cpu")
    cache = EmbeddingCache(tmp_path / "cache")
    queries = embed(model, data.query_texts(), "query", cache)
    documents = embed(model, data.document_texts(), "document", cache)
    reranker = MedeirReranker(tiny_reranker_dir, device="cpu")
    users = MedeirVectorStore(model.encoder, collection="users", path=tmp_path / "qdrant")
    users.index([SourceDocument(id=d, text=data.texts[d], title=data.titles[d]) for d in data.doc_ids],
                show_progress=False)  # `medeir index`'s path: the store embeds document_text(title, text) itself
    with users, benchmark_store(model.encoder, data, documents) as store:
        assert store.count() == len(data.doc_ids)
        runs = store_runs(store, data, queries, alpha=0.3, reranker=reranker, rerank_top_k=5, show_progress=False)
        sweep = sweep_runs(store, data, queries, grid=(0.0, 0.3, 1.0))
        for query_id in data.query_ids:
            query = data.queries[query_id]
            for key, kwargs in (("medeir", {"mode": "dense"}), ("bm25_medeir", {"mode": "sparse"}),
                                ("hybrid", {"mode": "hybrid", "alpha": 0.3}),
                                ("medeir_rerank", {"mode": "hybrid", "alpha": 0.3, "reranker": reranker,
                                                   "rerank_top_k": 5})):
                top = 5 if key == "medeir_rerank" else 100
                for searched in (store, users):  # the query encoded by search itself, as `medeir query` does
                    hits = searched.search(query, top_k=top, **kwargs)
                    assert runs[key][query_id] == pytest.approx({h.doc_id: h.score for h in hits}, abs=1e-5), key
            # tune-hybrid's sweep at alpha a is the store's hybrid at alpha a
            assert sweep["0.3"][query_id] == pytest.approx(runs["hybrid"][query_id], abs=1e-5)
            assert sweep["sparse"][query_id] == pytest.approx(runs["bm25_medeir"][query_id], abs=1e-5)
            # the reranked row reorders the hybrid top 5
            assert set(runs["medeir_rerank"][query_id]) == set(list(runs["hybrid"][query_id])[:5])


def test_json_prints_one_object_with_the_table_rows(beir_dir, tmp_path, capsys) -> None:
    from medeir_rag.cli.evaluate import main

    out = tmp_path / "out"
    assert main([str(beir_dir), "--output-dir", str(out), "--cache-dir", str(tmp_path / "c"), "--quiet", "--device", "cpu",
                 "--model", str(tmp_path / "no-such-model"), "--no-minilm", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    report = json.loads((out / "results.json").read_text())
    row = report["results"]["tinymed"]["rows"]["bm25"]
    assert printed["results"]["tinymed"]["rows"] == {"bm25": {"label": row["label"], **row["metrics"]}}
    assert set(printed["results"]["tinymed"]["skipped"]) == set(report["results"]["tinymed"]["skipped"])
    assert printed["results_json"] == str(out / "results.json") and printed["results_md"] == str(out / "results.md")
