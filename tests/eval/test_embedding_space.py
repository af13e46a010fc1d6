"""medeir analyze: the metrics on known geometry, the probe's sampling, and an end-to-end run."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from medeir_rag.eval.embedding_space import (
    alignment,
    linear_probe,
    silhouette,
    stratified_subsample,
    uniformity,
)


def test_alignment_and_uniformity_on_known_points() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert alignment(x, x) == 0.0
    assert alignment(x, -x) == pytest.approx(4.0)  # antipodal pairs: ||x - y||^2 = 4
    # two antipodal points: one pair at squared distance 4 -> log exp(-2 * 4) = -8
    assert uniformity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-8.0)
    # three points: squared distances 2, 2, 4 -> log mean(exp(-4), exp(-4), exp(-8))
    three = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert uniformity(three) == pytest.approx(math.log((2 * math.exp(-4) + math.exp(-8)) / 3))


def _clusters(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 8)
    labels = np.repeat(["a", "b", "c"], n // 3)
    x = centres[np.searchsorted(["a", "b", "c"], labels)] + 0.05 * rng.normal(size=(n, 8))
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def test_silhouette_and_probe_on_separable_clusters() -> None:
    x, labels = _clusters()
    assert silhouette(x, labels) > 0.8
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(labels)
    assert silhouette(x, shuffled) < 0.1
    probe = linear_probe(x, labels, seed=0, probe_seeds=2)
    assert set(probe) == {"1%", "10%", "100%"}
    assert probe["100%"]["accuracy_mean"] == 1.0 and probe["100%"]["runs"] == 1
    assert probe["1%"]["train_size"] == 3 and probe["1%"]["runs"] == 2  # one item per class
    assert probe["100%"]["train_size"] == 48 and probe["100%"]["test_size"] == 12


def test_stratified_subsample_keeps_every_class() -> None:
    labels = np.array(["x"] * 90 + ["y"] * 10)
    picked = stratified_subsample(labels, 0.1, np.random.default_rng(0))
    assert sorted(labels[picked].tolist()) == ["x"] * 9 + ["y"]
    again = stratified_subsample(labels, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(picked, again)


QUESTIONS = {
    "symptoms": "What are the symptoms of {}?",
    "treatment": "What are the treatments for {}?",
    "causes": "What causes {}?",
}
DISEASES = ["asthma", "diabetes", "glaucoma", "pneumonia", "stroke", "hypertension", "otitis", "influenza"]


def _write_data(root: Path) -> Path:
    beir = root / "beir" / "medquad_qa"
    (beir / "qrels").mkdir(parents=True)
    queries, corpus, qrels = [], [], []
    for qtype, template in QUESTIONS.items():
        for disease in DISEASES:
            i = len(queries)
            queries.append({"_id": f"q{i}", "text": template.format(disease), "qtype": qtype})
            corpus.append({"_id": f"d{i}", "title": "", "text": f"The {qtype} of {disease} are described here."})
            qrels.append(f"q{i}\td{i}\t1")
    (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    with gzip.open(beir / "corpus.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(d) + "\n" for d in corpus)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(qrels) + "\n")
    (root / "pretrain").mkdir()
    terms = [{"id": f"GO:{i:07d}", "title": f"{word} process {i}", "text": f"A {word} activity of the cell.",
              "ontology": ont} for i, (word, ont) in enumerate(
                  [("metabolic", "BP"), ("binding", "MF"), ("membrane", "CC")] * 8)]
    with gzip.open(root / "pretrain" / "go_definitions.jsonl.gz", "wt") as handle:
        handle.writelines(json.dumps(t) + "\n" for t in terms)
    return root


def test_analyze_end_to_end(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from medeir_rag.cli.analyze import main

    data = _write_data(tmp_path / "data")
    out = tmp_path / "analysis"
    argv = ["--data-dir", str(data), "--model", str(tiny_model_dir), "--sample", "20", "--min-class-size", "5",
            "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--probe-seeds", "2"]
    assert main(argv) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert set(report["metrics"]) == {"medeir (tiny-st0)", "all-MiniLM-L6-v2"}
    assert report["data"]["positive_pairs"]["pairs"] == 20
    go_classes = report["data"]["go_namespace"]["classes"]
    assert set(go_classes) == {"BP", "MF", "CC"} and sum(go_classes.values()) == 20
    for values in report["metrics"].values():
        assert 0.0 <= values["alignment"] <= 4.0 and values["uniformity"] <= 0.0
        assert set(values["probe"]) == {"medquad_qtype", "go_namespace"}
    for png in ("projection.png", "metrics.png"):
        assert (out / png).stat().st_size > 10_000
    assert "| all-MiniLM-L6-v2 |" in capsys.readouterr().out
    assert main([*argv, "--projection", "tsne", "--no-minilm", "--output-dir", str(tmp_path / "again")]) == 0
    assert list(json.loads((tmp_path / "again" / "analysis.json").read_text())["metrics"]) == ["medeir (tiny-st0)"]


def test_analyze_without_any_model_fails_cleanly(tmp_path: Path, capsys) -> None:
    from medeir_rag.cli.analyze import main

    assert main(["--data-dir", str(_write_data(tmp_path)), "--no-model", "--no-minilm"]) == 1
    assert "no model to analyse" in capsys.readouterr().err


def test_analyze_json_prints_one_object_with_the_table_values(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from medeir_rag.cli.analyze import main

    out = tmp_path / "analysis"
    assert main(["--data-dir", str(_write_data(tmp_path / "data")), "--model", str(tiny_model_dir), "--no-minilm",
                 "--sample", "20", "--min-class-size", "5", "--output-dir", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--device", "cpu", "--probe-seeds", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    metrics = json.loads((out / "analysis.json").read_text())["metrics"]["medeir (tiny-st0)"]
    row = printed["models"]["medeir (tiny-st0)"]
    assert row["alignment"] == metrics["alignment"] and row["uniformity"] == metrics["uniformity"]
    assert row["silhouette"] == metrics["silhouette"]
    assert row["probe"]["go_namespace"]["10%"] == metrics["probe"]["go_namespace"]["10%"]["accuracy_mean"]
    assert printed["analysis_json"] == str(out / "analysis.json")
