"""What is particular to the Qdrant Edge backend: folders, locks, swaps cut by a crash, the old format.

The store's contract itself (ids, resuming, modes, fusion, model checks) runs against both
backends in ``test_vector_store.py``.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from medeir_rag.cli import index as indexing
from medeir_rag.cli import query as querying
from medeir_rag.errors import InvalidArgumentError
from medeir_rag.inference.encoder import MedeirEncoder
from medeir_rag.rag.documents import SourceDocument, count_records, read_sample_corpus
from medeir_rag.rag.store import (
    LegacyStoreError,
    MedeirVectorStore,
    StorageLockedError,
    open_backend,
)
from medeir_rag.rag.store_backends import READY_MARKER, EdgeBackend, copy_store


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> MedeirEncoder:
    return MedeirEncoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def corpus() -> list[SourceDocument]:
    return list(read_sample_corpus())


def docs(prefix: str, n: int) -> list[SourceDocument]:
    return [SourceDocument(id=f"{prefix}{i}", text=f"Document {i} about asthma and inhalers, {prefix}.") for i in range(n)]


def doc_ids(store: MedeirVectorStore) -> set[str]:
    return {r.payload["doc_id"] for r in store.scroll(with_payload=["doc_id"])}


def test_layout_payload_indexes_and_optimize(encoder, corpus, tmp_path):
    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:
        stats = store.index(corpus, show_progress=False)
        assert stats.optimize_seconds >= 0 and store.engine == "edge"
        shard = store.backend._load("medeir")
        assert set(shard.info().payload_schema) >= {"doc_id", "source", "chunk_index"}
        store.create_index("meta.kind", "keyword")
        assert "meta.kind" in shard.info().payload_schema
        assert isinstance(store.optimize(), bool)
    folder = tmp_path / "q" / "medeir"
    assert {"edge_config.json", "segments", "wal", "medeir.json"} <= {p.name for p in folder.iterdir()}
    record = json.loads((folder / "medeir.json").read_text())
    assert record["medeir"]["fingerprint"] and record["dimension"] == encoder.embedding_dimension
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [".medeir.lock", "medeir"]


def test_memory_store_is_a_temporary_folder(encoder):
    store = MedeirVectorStore(encoder, path=":memory:")
    root = store.backend.root
    store.index(docs("m", 2), show_progress=False)
    assert store.count() == 2 and root.is_dir()
    store.close()
    assert not root.exists()


def test_a_second_opener_is_refused_at_once_and_other_collections_work(encoder, tmp_path):
    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:
        store.index(docs("a", 3), show_progress=False)
        started = time.perf_counter()
        with pytest.raises(StorageLockedError, match="open in another process"):
            MedeirVectorStore(encoder, path=tmp_path / "q")
        with pytest.raises(StorageLockedError, match="collection 'medeir'"):
            open_backend(tmp_path / "q", collection="medeir")
        assert time.perf_counter() - started < 2
        with MedeirVectorStore(encoder, path=tmp_path / "q", collection="other") as other:
            other.index(docs("b", 2), show_progress=False)
            assert other.count() == 2
        assert store.count() == 3
    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:  # released on close
        assert store.count() == 3 and store.backend.collections() == ["medeir", "other"]


def test_edge_would_block_is_a_storage_locked_error(encoder, tmp_path):
    from qdrant_edge import EdgeShard

    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:
        store.index(docs("a", 2), show_progress=False)
    holder = EdgeShard.load(str(tmp_path / "q" / "medeir"))  # another program, without our lock file
    try:
        with MedeirVectorStore(encoder, path=tmp_path / "q") as store, pytest.raises(
            StorageLockedError, match="open in another process"
        ):
            store.count()
    finally:
        holder.close()


def test_bad_collection_names_are_refused(encoder, tmp_path):
    for bad in ("../escape", ".hidden", "a/b", "", "-x"):
        with pytest.raises(InvalidArgumentError, match="cannot be a folder name"):
            MedeirVectorStore(encoder, path=tmp_path / "q", collection=bad)


def _build(encoder, root, name, documents):
    with MedeirVectorStore(encoder, path=root, collection=name) as store:
        store.index(documents, show_progress=False)
    return root / name


def test_a_swap_cut_between_its_renames_is_finished_or_undone(encoder, tmp_path):
    root = tmp_path / "q"
    _build(encoder, root, "medeir", docs("old", 3))
    new = _build(encoder, tmp_path / "elsewhere", "medeir", docs("new", 2))

    # killed after the old folder was renamed away and before the new one was renamed in
    shutil.move(root / "medeir", root / ".medeir.old-aaaa")
    copy_store(new, root / ".medeir.build-bbbb")
    (root / ".medeir.build-bbbb" / READY_MARKER).touch()
    with MedeirVectorStore(encoder, path=root) as store:
        assert doc_ids(store) == {"new0", "new1"}
    assert sorted(p.name for p in root.iterdir()) == [".medeir.lock", "medeir"]

    # killed while the rebuild was still being written (no marker): the old folder comes back
    shutil.move(root / "medeir", root / ".medeir.old-cccc")
    copy_store(new, root / ".medeir.build-dddd")
    with MedeirVectorStore(encoder, path=root) as store:
        assert doc_ids(store) == {"new0", "new1"}
    assert sorted(p.name for p in root.iterdir()) == [".medeir.lock", "medeir"]

    # killed mid-rebuild or mid-delete with the collection in place: leftovers go, nothing else
    copy_store(new, root / ".medeir.build-eeee")
    copy_store(new, root / ".medeir.old-ffff")
    copy_store(new, root / ".medeir.trash-0000")
    with MedeirVectorStore(encoder, path=root) as store:
        assert store.count() == 2
    assert sorted(p.name for p in root.iterdir()) == [".medeir.lock", "medeir"]


def test_recreate_failure_keeps_the_old_collection_and_success_swaps(encoder, tmp_path):
    root = tmp_path / "q"
    _build(encoder, root, "medeir", docs("old", 3))

    def broken():
        yield from docs("new", 4)
        raise RuntimeError("disk on fire")

    with MedeirVectorStore(encoder, path=root) as store:
        with pytest.raises(RuntimeError, match="disk on fire"):
            store.index(broken(), recreate=True, batch_size=1, show_progress=False)
        assert doc_ids(store) == {"old0", "old1", "old2"}
        assert sorted(p.name for p in root.iterdir()) == [".medeir.lock", "medeir"]
        store.index(docs("new", 2), recreate=True, show_progress=False)
        assert doc_ids(store) == {"new0", "new1"}
        assert [h.doc_id for h in store.search("asthma", mode="sparse", top_k=5)]  # searchable at once
    assert sorted(p.name for p in root.iterdir()) == [".medeir.lock", "medeir"]


def test_filters_from_qdrant_client_models_work_on_edge(encoder, corpus, tmp_path):
    from qdrant_client import models

    query = "asthma inhaler"
    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:
        store.index(corpus, show_progress=False)
        first = store.search(query, mode="dense", top_k=1)[0].doc_id
        not_first = models.Filter(must_not=[models.FieldCondition(key="doc_id", match=models.MatchValue(value=first))])
        assert first not in {h.doc_id for h in store.search(query, mode="dense", top_k=10, query_filter=not_first)}
        one_of = models.Filter(should=[models.FieldCondition(key="doc_id", match=models.MatchAny(any=[first]))])
        assert {h.doc_id for h in store.search(query, mode="hybrid", top_k=10, query_filter=one_of)} == {first}
        chunk_zero = models.Filter(must=[models.FieldCondition(key="chunk_index", range=models.Range(lte=0))])
        assert all(h.chunk_index == 0 for h in store.search(query, mode="sparse", top_k=10, query_filter=chunk_zero))
        with pytest.raises(InvalidArgumentError, match="query_filter"):
            store.search(query, mode="dense", query_filter=42)


def test_a_qdrant_client_local_mode_folder_is_recognised_and_migrated(encoder, corpus, tiny_model_dir, tmp_path, capsys):
    old = tmp_path / "old"
    query = "inhaled corticosteroids for asthma"
    with MedeirVectorStore(encoder, path=old, engine="qdrant-client") as store:
        store.index(corpus, show_progress=False)
        store.index(corpus[:20], recreate=True, show_progress=False)  # leaves an alias, as recreate did
        before = [(h.id, h.score) for h in store.search(query, mode="dense", top_k=5)]
    assert (old / "meta.json").is_file() and (old / "collection").is_dir()

    with pytest.raises(LegacyStoreError, match=f"medeir index --migrate --qdrant-path {old}"):
        MedeirVectorStore(encoder, path=old)
    assert querying.main(["asthma", "--model", str(tiny_model_dir), "--qdrant-path", str(old), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "written by qdrant-client's local mode" in err and "Traceback" not in err

    assert indexing.main(["--migrate", "--qdrant-path", str(old), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["migrated"] == {"medeir": 20}
    assert (tmp_path / "old.qdrant-client-backup" / "meta.json").is_file()  # the old files are kept
    with MedeirVectorStore(encoder, path=old) as store:
        assert store.count() == 20 and store.check()["fingerprint"]
        after = [(h.id, h.score) for h in store.search(query, mode="dense", top_k=5)]
        assert [i for i, _ in after] == [i for i, _ in before]
        assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-5)
        assert store.index(corpus[:20], show_progress=False).skipped_existing == 20  # nothing re-embedded


def test_migration_refuses_folders_not_built_by_medeir(tmp_path):
    from qdrant_client import QdrantClient, models

    from medeir_rag.rag.store_backends import migrate_local_store

    client = QdrantClient(path=str(tmp_path / "llamaindex"))
    client.create_collection("pubmed", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    client.close()
    with pytest.raises(InvalidArgumentError, match="'pubmed' .* was not built by medeir"):
        migrate_local_store(tmp_path / "llamaindex", show_progress=False)
    assert (tmp_path / "llamaindex" / "meta.json").is_file() and not (tmp_path / "llamaindex.qdrant-client-backup").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["llamaindex"]


def test_copy_store_keeps_the_wal_files_sparse(encoder, tmp_path):
    _build(encoder, tmp_path / "q", "medeir", docs("a", 3))
    copy = copy_store(tmp_path / "q", tmp_path / "copy")

    def allocated(folder):
        return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())

    assert allocated(copy) <= 2 * allocated(tmp_path / "q") + 2**20 < 8 * 2**20
    assert (copy / "medeir" / "wal" / "open-1").stat().st_size == 32 * 2**20
    with MedeirVectorStore(encoder, path=copy) as store:
        assert doc_ids(store) == {"a0", "a1", "a2"}


def test_an_empty_meta_json_is_not_a_legacy_store(encoder, tmp_path):
    from qdrant_client import QdrantClient

    QdrantClient(path=str(tmp_path / "q")).close()  # qdrant-client writes meta.json on any open
    with MedeirVectorStore(encoder, path=tmp_path / "q") as store:
        store.index(docs("a", 1), show_progress=False)
        assert store.count() == 1
    backend = open_backend(tmp_path / "q", create=False)
    assert isinstance(backend, EdgeBackend)
    backend.close()


def test_indexing_progress_shows_documents_chunks_points_per_second_and_eta(tiny_model_dir, tmp_path, capsys):
    file = tmp_path / "docs.jsonl"
    file.write_text("".join(json.dumps({"id": f"r{i}", "text": f"Gout flare {i} treated with colchicine."}) + "\n"
                            for i in range(40)) + "\n", encoding="utf-8")
    assert count_records(file) == 40 and count_records(None) == len(list(read_sample_corpus()))
    argv = [str(file), "--model", str(tiny_model_dir), "--qdrant-path", str(tmp_path / "q"), "--device", "cpu",
            "--batch-size", "8"]
    assert indexing.main(argv) == 0
    err = capsys.readouterr().err
    assert "Indexing: 100%" in err and "40/40" in err  # a total, so tqdm shows the ETA ("<00:00")
    assert "chunks=40" in err and "pts_s=" in err
    assert indexing.main([*argv, "--limit", "10"]) == 0
    assert "10/10" in capsys.readouterr().err
