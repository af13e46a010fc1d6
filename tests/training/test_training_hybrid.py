"""medeir tune-hybrid: validation sets from held-out training data, the alpha sweep, hybrid.json."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

from training_data import write_data_dir

from medeir_rag.rag.fusion import load_hybrid_weights
from medeir_rag.training.config import PairData
from medeir_rag.training.hybrid import ALPHA_GRID, build_validation_sets, claim_pair, main, setting_key
from medeir_rag.training.pairs import build_pairs


def _texts(folder: Path) -> tuple[list[str], list[str]]:
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as handle:
        docs = [json.loads(line)["text"] for line in handle]
    queries = [json.loads(line)["text"] for line in (folder / "queries.jsonl").read_text().splitlines()]
    return queries, docs


def test_validation_sets_hold_only_held_out_queries(tmp_path):
    data = PairData(data_dir=str(write_data_dir(tmp_path / "data")), holdout_percent=20.0)
    folders = build_validation_sets(data, tmp_path / "val", distractors=5)
    assert [f.name for f in folders] == ["medquad-heldout", "pubmed-heldout", "pubmed-claims-heldout"]
    training, _ = build_pairs(data.model_copy(update={"num_pairs": 10_000}))
    trained_positives = {p.positive for p in training}
    for folder in folders:
        queries, docs = _texts(folder)
        assert len(queries) >= 2 and len(docs) == len(queries) + 5  # held-out positives, then 5 distractors
        assert not trained_positives & set(docs[: len(queries)]), folder.name  # no relevant doc was trained on
        assert set(docs[len(queries):]) <= trained_positives, folder.name  # distractors come from training
        qrels = (folder / "qrels" / "validation.tsv").read_text().splitlines()
        assert qrels[0] == "query-id\tcorpus-id\tscore" and qrels[1:] == [f"q{i}\td{i}\t1" for i in range(len(queries))]


def test_a_claim_is_the_conclusion_cut_from_its_abstract():
    data = PairData()
    record = {"title": "Aspirin and stroke.", "text": "We studied 400 adults with atrial fibrillation for two years. "
              "Strokes were counted by two blinded neurologists at each site. "
              "In conclusion, low-dose aspirin reduces the risk of stroke in these patients."}
    pair = claim_pair(record, data)
    assert pair.anchor == "Low-dose aspirin reduces the risk of stroke in these patients."
    assert pair.positive == ("Aspirin and stroke. We studied 400 adults with atrial fibrillation for two years. "
                             "Strokes were counted by two blinded neurologists at each site.")
    assert claim_pair({**record, "text": "Too short. Two sentences only, which is not enough here."}, data) is None
    short_conclusion = {**record, "text": record["text"].replace("In conclusion, low-dose aspirin reduces the "
                                                                 "risk of stroke in these patients.", "It helps.")}
    assert claim_pair(short_conclusion, data) is None  # fewer words than span_min_words: no claim to ask


def test_tune_hybrid_writes_the_best_alpha_into_the_model(tiny_model_dir, tmp_path, capsys):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # the shared fixture stays untouched
    data_dir = write_data_dir(tmp_path / "data")
    argv = ["--model", str(model), "--data-dir", str(data_dir), "--holdout-percent", "20", "--distractors", "20",
            "--out", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    means = summary["mean_ndcg_at_10"]
    assert list(means) == [f"{a:g}" for a in ALPHA_GRID] + [f"max:{a:g}" for a in ALPHA_GRID]
    chosen = setting_key(summary["best_normalization"], summary["best_alpha"])
    assert summary["best_alpha"] in ALPHA_GRID and means[chosen] == max(means.values())
    for row in summary["ndcg_at_10"].values():
        for scale in ("", "max:"):
            assert abs(row[f"{scale}0"] - row["sparse"]) < 0.05  # alpha 0 ~ sparse alone (ties may reorder)
            assert abs(row[f"{scale}1"] - row["dense"]) < 1e-9  # alpha 1 = dense alone
    weights = load_hybrid_weights(model)
    assert (weights.alpha, weights.normalization) == (summary["best_alpha"], summary["best_normalization"])
    assert weights.provenance["chosen_by"] == "medeir tune-hybrid"
    out = capsys.readouterr().out
    assert "(chosen)" in out and "wrote" in out and "hybrid.json" in out
    assert main([*argv, "--no-write", "--out", str(tmp_path / "out2")]) == 0
    assert "not written" in capsys.readouterr().out
