"""``medeir index --ray``: a real two-node Ray cluster on this machine stores the single-process run's points.

The cluster is ``ray.cluster_utils.Cluster`` with two nodes of one CPU each (so two embedding
actors, one per node), bound to loopback. That test is marked ``slow`` (run it with ``-m slow``);
the one-line errors for a missing Ray and an unreachable address run by default. On the shared
2-core machine at load ~10 the slow test took 330 s (cluster start 25 s, both Ray runs 290 s,
mostly actors and read tasks importing torch); an idle machine should take well under a minute. The corpus mixes every reader: two JSON-lines
shards (one gzipped, with an empty record and a repeated id), a PubMed XML file and two
text files in a subfolder. Points are compared by id, payload and vector.
"""

from __future__ import annotations

import gzip
import json
import pickle
import sys
import time

import numpy as np
import pytest
from conftest import MEDICAL_LINES

from medeir_rag.cli import index as indexing
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.rag.distributed import ChunkEmbedder, RayIndexReport, RaySession, index_on_ray
from medeir_rag.rag.documents import SourceDocument
from medeir_rag.rag.store import MedeirVectorStore, model_fingerprint
from medeir_rag.rag.store_backends import EdgeBackend

CHUNK = ["--chunk-size", "24", "--batch-size", "4", "--no-progress", "--json"]


def _corpus(root):
    root.mkdir()
    lines = [{"id": f"a{i}", "title": f"Note {i}", "text": " ".join(MEDICAL_LINES[i % 10 : i % 10 + 1 + i % 3])}
             for i in range(14)]
    (root / "a.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    more = [{"pmid": 100 + i, "title": "", "text": MEDICAL_LINES[(3 * i) % 10] * (1 + i % 2)} for i in range(12)]
    more += [{"id": "blank", "text": "   "}, {"id": "a3", "text": "a repeated id: the first record is kept"}]
    with gzip.open(root / "b.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in more) + "\n")
    articles = "".join(
        f"<PubmedArticle><MedlineCitation><PMID>9{i}</PMID><Article><ArticleTitle>Trial {i}</ArticleTitle>"
        f"<Abstract><AbstractText Label='RESULTS'>{MEDICAL_LINES[i]}</AbstractText></Abstract>"
        "</Article></MedlineCitation></PubmedArticle>"
        for i in range(6)
    )
    (root / "c.xml").write_text(f"<PubmedArticleSet>{articles}</PubmedArticleSet>")
    (root / "notes").mkdir()
    (root / "notes" / "d_note.txt").write_text(" ".join(MEDICAL_LINES[:4]))
    (root / "notes" / "e.txt").write_text(MEDICAL_LINES[9])
    return root


def _points(folder, collection="medeir"):
    """``{id: (payload, dense vector)}`` read straight from the Edge shard."""
    backend = EdgeBackend(folder, create=False)
    try:
        ids = [r.id for r in backend.scroll(collection, with_payload=False)]
        shard = backend._load(collection)
        records = shard.retrieve(ids, with_payload=True, with_vector=True)
        return {str(r.id): (r.payload, np.asarray(r.vector["dense"], dtype=np.float32)) for r in records}
    finally:
        backend.close()


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray.data")
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    with pytest.MonkeyPatch.context() as patch:  # every Ray process on loopback (driver, GCS, raylets, workers)
        patch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        patch.setenv(ray_constants.RAY_WORKER_NICENESS, "0")  # Ray adds 15 by default: starved on a busy machine
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert cluster.address.startswith("127.0.0.1:")
        yield cluster
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow  # two Ray nodes, five read tasks and two actors that each import torch: minutes on 2 busy cores
def test_two_node_ray_run_stores_the_single_process_points(ray_cluster, tiny_model_dir, tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus")
    single, on_ray = tmp_path / "single", tmp_path / "ray"
    # fp32 on both sides: bf16 (what "auto" is on a CPU with fast bf16) moves vectors ~1e-4 with the batch
    # they are in; fp32 asked of the driver's encoder must reach the actors, or they differ here
    common = [str(corpus), "--model", str(tiny_model_dir), "--precision", "fp32", *CHUNK]
    assert indexing.main([*common, "--qdrant-path", str(single)]) == 0
    expected_summary = json.loads(capsys.readouterr().out)

    started = time.perf_counter()
    report = RayIndexReport()
    with RaySession.connect(ray_cluster.address) as session:
        assert session.owns
        encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32")
        with MedeirVectorStore(encoder, path=on_ray) as store:
            stats = index_on_ray(store, corpus, model=tiny_model_dir, device="cpu", chunk_size=24, batch_size=4,
                                 show_progress=False, report=report)
    seconds = time.perf_counter() - started
    print(f"ray run: {seconds:.1f} s, {report}", file=sys.stderr)

    for key in ("documents", "indexed", "chunks", "skipped_empty", "skipped_duplicate"):
        assert getattr(stats, key) == expected_summary[key], key
    assert stats.skipped_duplicate == 1 and stats.skipped_empty == 1
    assert report.actors == 2 and report.embedded_on_driver == 0  # every vector came from the actors
    assert sum(report.chunks_per_worker.values()) == stats.chunks
    want, got = _points(single), _points(on_ray)
    assert set(got) == set(want) and len(got) == expected_summary["points"]
    for point_id, (payload, vector) in want.items():
        assert got[point_id][0] == payload
        np.testing.assert_allclose(got[point_id][1], vector, rtol=1e-4, atol=1e-5)

    # the CLI on the same cluster: a rerun adds nothing and embeds nothing
    assert indexing.main([*common, "--qdrant-path", str(on_ray), "--ray", ray_cluster.address]) == 0
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["indexed"] == 0 and rerun["chunks"] == 0
    assert rerun["skipped_existing"] == expected_summary["indexed"] and rerun["points"] == len(want)
    assert set(_points(on_ray)) == set(want)


def test_an_actor_embeds_as_the_driver_encoder_does(tiny_model_dir):
    """What each Ray actor runs, built from the driver encoder's ``replica_options``: a truncated
    dimension (and backend, precision, overlong policy) reaches it, so its vectors fit the store."""
    import torch

    driver = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32", truncate_dim=16, overlong="error")
    options = driver.replica_options()
    assert options == {"precision": "fp32", "backend": "torch", "onnx_path": None, "truncate_dim": 16,
                       "overlong": "error", "batch_tokens": driver.batch_tokens}
    actor = ChunkEmbedder(model=str(tiny_model_dir), device="cpu", fingerprint=model_fingerprint(driver.path),
                          chunk_size=24, chunk_overlap=0, embed_title=True, done=np.array([], dtype="S32"),
                          threads=torch.get_num_threads(), encoder_options=options)
    doc = SourceDocument(id="a", title="Note", text=" ".join(MEDICAL_LINES[:3]))
    out = actor({"kind": np.array(["doc"]), "item": np.array([pickle.dumps(doc)], dtype=object)})
    texts = json.loads(out["texts"][0])
    vectors = np.frombuffer(out["vectors"][0], dtype=np.float32).reshape(len(texts), -1)
    assert len(texts) >= 2 and vectors.shape[1] == 16
    np.testing.assert_allclose(vectors, driver.encode_document(texts, show_progress=False), rtol=1e-5, atol=1e-6)


def test_ray_missing_is_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    for name in ("ray", "ray.data"):
        monkeypatch.setitem(sys.modules, name, None)
    code = indexing.main(["--qdrant-path", str(tmp_path / "q"), "--ray", "local", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error
    assert "medeir_rag[distributed]" in error and "--ray" in error


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.perf_counter()
    code = indexing.main(["--qdrant-path", str(tmp_path / "q"), "--ray", f"127.0.0.1:{port}", "--no-progress"])
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error and f"127.0.0.1:{port}" in error and "ray start --head" in error
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "q" / "medeir").exists()
