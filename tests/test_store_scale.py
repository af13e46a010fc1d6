"""benchmarks/store_scale.py: its data is reproducible, its exact search is right, and a tiny run writes both files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "store_scale.py"
_spec = importlib.util.spec_from_file_location("store_scale", SCRIPT)
store_scale = importlib.util.module_from_spec(_spec)
sys.modules["store_scale"] = store_scale  # dataclasses look their module up
_spec.loader.exec_module(store_scale)


def test_batches_and_exact_search_agree_with_brute_force():
    data = store_scale.Synthetic(seed=3, dimension=16)
    pieces = list(data.batches(700, 256))
    assert [start for start, _, _ in pieces] == [0, 256, 512]
    dense = np.concatenate([d for _, d, _ in pieces])
    assert dense.shape == (700, 16) and np.allclose(dense, data.chunk_dense(0)[:700])  # same points, any order
    assert all(len(ids) == len(weights) > 0 for _, _, sparse in pieces for ids, weights in sparse)
    queries, _ = data.queries(7, 700)
    truth = np.argsort(-(queries @ dense.T), axis=1)[:, :10].tolist()
    assert data.exact_top(queries, 700) == truth


def test_a_tiny_run_writes_json_and_markdown(tmp_path):
    out, md = tmp_path / "s.json", tmp_path / "s.md"
    assert store_scale.main(["--sizes", "300", "--engines", "edge", "--queries", "8", "--dimension", "32",
                             "--json", str(out), "--markdown", str(md), "--workdir", str(tmp_path / "w")]) == 0
    (result,) = json.loads(out.read_text())["results"]
    assert result["engine"] == "edge" and result["size"] == 300 and result["points_per_second"] > 0
    assert 0.0 <= result["recall_at_10"] <= 1.0
    assert set(result["latency_ms"]) == {"dense", "sparse", "hybrid"}
    assert "### 300 points" in md.read_text() and "Edge vs local" in md.read_text()
