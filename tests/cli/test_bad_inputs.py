"""A catalogue of bad inputs: each gives the exact error type, a message that names the argument,
file or line, nothing stored is lost, and the cheap checks fail before any model loads.

The CLI cases also check the form of the report: one line ``medeir <command>: <message>``,
exit status 1, no traceback; Ctrl-C is exit 130; a real bug keeps its traceback.
"""

from __future__ import annotations

import json
import logging
import socket
import sys

import pytest

from medeir_rag.cli import index as indexing
from medeir_rag.cli import main as cli_main
from medeir_rag.cli import query as querying
from medeir_rag.errors import (
    InvalidArgumentError,
    InvalidTextError,
    MedeirError,
    MissingDependencyError,
    MissingPathError,
    NotAFolderError,
    replace_lone_surrogates,
)
from medeir_rag.inference.encoder import MedeirEncoder, resolve_device
from medeir_rag.model.files import ModelFileError, resolve_model_path
from medeir_rag.rag.documents import DocumentReadError, SourceDocument, read_documents, read_sample_corpus
from medeir_rag.rag.store import (
    CollectionMismatchError,
    CollectionNotFoundError,
    LegacyStoreError,
    MedeirVectorStore,
    ServerUnreachableError,
    StorageLockedError,
    open_backend,
)
from medeir_rag.rag.store_backends import copy_store

SAMPLE = len(list(read_sample_corpus()))


# -----------------------------------------------------------------------------
# helpers


def store_args(model_dir, qdrant_path, *extra):
    return ["--model", str(model_dir), "--qdrant-path", str(qdrant_path), "--device", "cpu", "--no-progress", *extra]


def query_args(model_dir, qdrant_path, *extra):
    return ["--model", str(model_dir), "--qdrant-path", str(qdrant_path), "--device", "cpu", *extra]


def points(qdrant_path, collection="medeir") -> int:
    backend = open_backend(qdrant_path, collection=collection, create=False)
    try:
        return backend.count(collection) if backend.exists(collection) else 0
    finally:
        backend.close()


def collections(qdrant_path) -> list[str]:
    """The store's collections, plus any hidden folder (an unfinished rebuild) left beside them."""
    backend = open_backend(qdrant_path, create=False)
    try:
        names = backend.collections()
    finally:
        backend.close()
    return sorted([*names, *(p.name for p in qdrant_path.iterdir() if p.is_dir() and p.name.startswith("."))])


def one_error_line(err: str, prog: str) -> str:
    """The single ``prog: ...`` line of ``err`` (warnings from logging may come before it)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ")]
    assert len(lines) == 1, err
    return lines[0]


def write_jsonl(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def record(i: int, text: str | None = None) -> str:
    return json.dumps({"id": f"r{i}", "title": f"Record {i}", "text": text or f"Metformin lowers glucose, record {i}."})


@pytest.fixture(scope="module")
def indexed(tiny_model_dir, tmp_path_factory):
    """An embedded Qdrant folder holding the sample corpus (copied per test)."""
    folder = tmp_path_factory.mktemp("indexed") / "qdrant"
    assert indexing.main(store_args(tiny_model_dir, folder)) == 0
    assert points(folder) == SAMPLE
    return folder


@pytest.fixture
def qdrant(indexed, tmp_path):
    return copy_store(indexed, tmp_path / "qdrant")  # shutil.copytree would write out Edge's 64 MB of WAL holes


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the cheap checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the cheap checks")

    import medeir_rag.inference.rerank

    monkeypatch.setattr(MedeirEncoder, "__init__", refuse)
    monkeypatch.setattr(medeir_rag.inference.rerank.MedeirReranker, "__init__", refuse)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# -----------------------------------------------------------------------------
# the error family


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (MissingPathError, FileNotFoundError),
        (NotAFolderError, NotADirectoryError),
        (InvalidArgumentError, ValueError),
        (InvalidTextError, ValueError),
        (MissingDependencyError, ImportError),
        (ModelFileError, ValueError),
        (DocumentReadError, ValueError),
        (CollectionMismatchError, ValueError),
        (CollectionNotFoundError, LookupError),
        (StorageLockedError, RuntimeError),
        (LegacyStoreError, ValueError),
        (ServerUnreachableError, ConnectionError),
    ],
)
def test_every_error_is_a_medeir_error_and_keeps_its_builtin_type(error, builtin):
    assert issubclass(error, MedeirError) and issubclass(error, builtin)
    assert str(error("the message")) == "the message"


# -----------------------------------------------------------------------------
# model paths: local unless hf:, checked before anything loads


def test_mistyped_model_path_names_it_and_makes_no_lookup(no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even with the hub allowed, no lookup
    with pytest.raises(MissingPathError) as caught:
        resolve_model_path("patients/model-typo")
    assert "patients/model-typo does not exist" in str(caught.value)
    assert "hf:patients/model-typo" in str(caught.value)  # says how to ask for the hub
    with pytest.raises(MissingPathError, match="model directory /nowhere/model does not exist"):
        MedeirEncoder("/nowhere/model")


def test_model_path_that_is_a_file(tmp_path):
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    with pytest.raises(NotAFolderError, match=f"model path {file} is a file"):
        resolve_model_path(file)


def test_hub_model_only_in_the_explicit_form(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingPathError, match="hub model 'medeir-org/not-cached' .* is not available here"):
        resolve_model_path("hf:medeir-org/not-cached")
    with pytest.raises(MissingPathError, match="not a hub model id; expected hf:org/name"):
        resolve_model_path("hf:no-slash")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "patients/model-typo"], "model directory patients/model-typo does not exist"),
        (["--device", "bogus"], "device 'bogus' is not a torch device"),
        (["--batch-size", "0"], "--batch-size must be > 0, got 0"),
        (["--chunk-overlap", "-1"], "--chunk-overlap must be >= 0, got -1"),
    ],
)
def test_index_cheap_checks_come_before_the_model(no_model_load, tiny_model_dir, tmp_path, capsys, extra, message):
    argv = [*store_args(tiny_model_dir, tmp_path / "q"), *extra]  # a later --model/--device wins
    assert indexing.main(argv) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert message in line


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(no_model_load, tiny_model_dir, tmp_path, capsys):
    with pytest.raises(InvalidArgumentError, match="device 'cuda' needs a CUDA GPU"):
        resolve_device("cuda")
    assert indexing.main([*store_args(tiny_model_dir, tmp_path / "q"), "--device", "cuda"]) == 1
    assert "device 'cuda' needs a CUDA GPU" in one_error_line(capsys.readouterr().err, "medeir index")
    assert querying.main(["diabetes", *query_args(tiny_model_dir, tmp_path / "q"), "--device", "cuda:0"]) == 1
    assert "needs a CUDA GPU" in one_error_line(capsys.readouterr().err, "medeir query")


def test_qdrant_path_that_is_a_file(no_model_load, tiny_model_dir, tmp_path, capsys):
    file = tmp_path / "store.sqlite"
    file.write_text("not a folder")
    assert indexing.main(["--sample", *store_args(tiny_model_dir, file)]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert f"the Qdrant path {file} is not a folder" in line
    assert querying.main(["diabetes", *query_args(tiny_model_dir, file / "sub")]) == 1
    assert f"({file} is a file)" in one_error_line(capsys.readouterr().err, "medeir query")
    assert file.read_text() == "not a folder"


def test_qdrant_engine_not_installed(no_model_load, tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # import qdrant_edge -> ImportError
    assert indexing.main(["--sample", *store_args(tiny_model_dir, tmp_path / "q")]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert "qdrant-edge-py (the embedded Qdrant engine) is not installed" in line
    assert "pip install 'medeir_rag[qdrant]'" in line
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # a server needs qdrant-client
    assert indexing.main(["--sample", *store_args(tiny_model_dir, "unused"), "--qdrant-url", "http://127.0.0.1:1"]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert "qdrant-client is not installed" in line and "pip install 'medeir_rag[qdrant]'" in line


def test_qdrant_server_that_does_not_answer(no_model_load, tiny_model_dir, capsys):
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert indexing.main(["--sample", *store_args(tiny_model_dir, "unused"), "--qdrant-url", url]) == 1
    assert f"cannot use the Qdrant server at {url}" in one_error_line(capsys.readouterr().err, "medeir index")
    assert querying.main(["diabetes", *query_args(tiny_model_dir, "unused"), "--qdrant-url", url]) == 1
    assert f"cannot use the Qdrant server at {url}" in one_error_line(capsys.readouterr().err, "medeir query")


def test_query_hnsw_ef_is_checked_before_the_model(no_model_load, tiny_model_dir, qdrant, capsys):
    assert querying.main(["diabetes", *query_args(tiny_model_dir, qdrant), "--hnsw-ef", "0"]) == 1
    assert "--hnsw-ef must be > 0, got 0" in one_error_line(capsys.readouterr().err, "medeir query")


def test_query_with_hnsw_ef_finds_what_the_default_finds(tiny_model_dir, qdrant, capsys):
    found = []
    for extra in ([], ["--hnsw-ef", "256"]):
        assert querying.main(["metformin glucose", "--json", *query_args(tiny_model_dir, qdrant), *extra]) == 0
        found.append([r["doc_id"] for r in json.loads(capsys.readouterr().out)["results"]])
    assert found[0] == found[1] and found[0]


def test_query_of_a_missing_collection_fails_before_the_model(no_model_load, tiny_model_dir, qdrant, tmp_path, capsys):
    missing = tmp_path / "never-indexed"
    assert querying.main(["diabetes", *query_args(tiny_model_dir, missing)]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir query")
    assert "collection 'medeir' does not exist" in line and "medeir index" in line
    assert not missing.exists()  # a query creates nothing
    assert querying.main(["diabetes", *query_args(tiny_model_dir, qdrant), "--collection", "other"]) == 1
    assert "collection 'other' does not exist" in one_error_line(capsys.readouterr().err, "medeir query")
    assert points(qdrant) == SAMPLE


# -----------------------------------------------------------------------------
# lone surrogates: replaced (with a warning) in files, refused by name in the API


def test_lone_surrogate_in_a_jsonl_file_is_replaced_with_a_warning(tiny_model_dir, tmp_path, caplog, capsys):
    file = write_jsonl(tmp_path / "escapes.jsonl", [
        record(1),
        '{"id": "r2\\ud800", "title": "Bad \\udfff escape", "text": "Insulin \\ud800 resistance.", "note": ["\\ud83d"]}',
        '{"id": "r3", "text": "A pair stays: \\ud83d\\ude00."}',
    ])
    with caplog.at_level(logging.WARNING, logger="medeir_rag.rag.documents"):
        docs = list(read_documents(file))
    assert [d.id for d in docs] == ["r1", "r2\ufffd", "r3"]
    assert docs[1].title == "Bad \ufffd escape" and docs[1].text == "Insulin \ufffd resistance."
    assert docs[1].meta == {"note": ["\ufffd"]} and docs[2].text == "A pair stays: \U0001f600."
    assert [r.getMessage() for r in caplog.records] == [
        f"{file}: line 2: 4 lone surrogate(s) (a JSON \\uD800-style escape without its pair) replaced by U+FFFD"
    ]
    qdrant = tmp_path / "q"
    assert indexing.main([str(file), "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    assert json.loads(capsys.readouterr().out)["indexed"] == 3
    assert points(qdrant) == 3


def test_lone_surrogate_in_api_input_is_refused_by_name(tiny_model_dir):
    encoder = MedeirEncoder(tiny_model_dir, device="cpu")
    with pytest.raises(InvalidTextError, match=r"texts\[1\] contains a lone surrogate U\+D800 at character 3"):
        encoder.encode(["fine", "bad\ud800"])
    with pytest.raises(InvalidTextError, match="^texts contains a lone surrogate U\\+DFFF"):
        encoder.encode_query("\udfff")
    with pytest.raises(InvalidTextError, match="^prompt contains"):
        encoder.encode(["fine"], prompt="query\ud800: ")
    assert replace_lone_surrogates("bad\ud800") == ("bad\ufffd", 1)
    assert encoder.encode([replace_lone_surrogates("bad\ud800")[0]]).shape == (1, encoder.embedding_dimension)

    with MedeirVectorStore(encoder, path=":memory:") as store:
        good = [SourceDocument(id=f"g{i}", text=f"Asthma is treated with inhalers, note {i}.") for i in range(3)]
        with pytest.raises(InvalidTextError, match="the text of document 'b1' contains a lone surrogate"):
            store.index([*good, SourceDocument(id="b1", text="x\ud800")], batch_size=32, show_progress=False)
        assert store.count() == 3  # the documents before it are stored
        with pytest.raises(InvalidTextError, match="^the query contains a lone surrogate"):
            store.search("asthma\ud800")


def test_lone_surrogate_in_the_integrations_and_the_reranker_is_refused_by_name(tiny_model_dir, tiny_reranker_dir):
    from medeir_rag.inference.rerank import MedeirReranker

    reranker = MedeirReranker(tiny_reranker_dir, device="cpu")
    with pytest.raises(InvalidTextError, match=r"^passages\[1\] contains a lone surrogate"):
        reranker.score("asthma", ["fine", "bad\ud800"])
    with pytest.raises(InvalidTextError, match="^query contains a lone surrogate"):
        reranker.score("asthma\ud800", ["fine"])
    pytest.importorskip("haystack")
    pytest.importorskip("llama_index.core")
    from haystack import Document

    from medeir_rag.integrations.haystack import MedeirDocumentEmbedder
    from medeir_rag.integrations.llama_index import MedeirEmbedding

    embedder = MedeirDocumentEmbedder(model=str(tiny_model_dir), progress_bar=False)
    with pytest.raises(InvalidTextError, match=r"^texts\[1\] contains a lone surrogate"):
        # (haystack cannot hash such a content into an id itself: the id is given)
        embedder.run([Document(content="fine"), Document(id="d2", content="bad\udfff")])

    with pytest.raises(InvalidTextError, match=r"^texts\[1\] contains a lone surrogate"):
        MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu").get_text_embedding_batch(["fine", "bad\ud800"])


def test_lone_surrogate_in_a_query_argument(tiny_model_dir, qdrant, capsys):
    # a non-UTF-8 byte in argv arrives as a lone surrogate (surrogateescape)
    assert querying.main(["asthma \udcff", *query_args(tiny_model_dir, qdrant)]) == 1
    assert "the query contains a lone surrogate U+DCFF" in one_error_line(capsys.readouterr().err, "medeir query")


# -----------------------------------------------------------------------------
# a malformed JSONL line: everything before it is stored; --skip-invalid indexes the rest


def test_malformed_line_keeps_the_pending_batch_and_names_file_and_line(tiny_model_dir, tmp_path, capsys):
    file = write_jsonl(tmp_path / "bad.jsonl", [record(1), record(2), record(3), "{not json", record(5), record(6)])
    qdrant = tmp_path / "q"
    # batch size 32: the three good records are still pending when line 4 fails
    assert indexing.main([str(file), *store_args(tiny_model_dir, qdrant)]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert f"{file}: line 4 is not valid JSON" in line and "--skip-invalid" in line
    assert "points stored before the error are kept" in line
    assert points(qdrant) == 3

    # the rerun without the flag stops at the same line and loses nothing
    assert indexing.main([str(file), *store_args(tiny_model_dir, qdrant)]) == 1
    assert "line 4" in one_error_line(capsys.readouterr().err, "medeir index")
    assert points(qdrant) == 3

    assert indexing.main([str(file), "--skip-invalid", "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped_existing"], summary["indexed"], summary["points"]) == (3, 2, 5)
    assert summary["skipped_invalid"] == 1
    assert [(e["path"], e["line"]) for e in summary["invalid"]] == [(str(file), 4)]
    assert points(qdrant) == 5


def test_skip_invalid_reports_how_many_and_where(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [record(1), "[1, 2]", '{"text": 5}', record(4)])
    (folder / "b.txt").write_bytes("Ménière".encode("latin-1"))
    (folder / "c.txt").write_text("Colchicine shortens gout flares.", encoding="utf-8")
    invalid: list[DocumentReadError] = []
    docs = list(read_documents(folder, skip_invalid=True, invalid=invalid))
    assert [d.id for d in docs] == ["r1", "r4", "c.txt"]
    assert [(e.path, e.line) for e in invalid] == [
        (str(folder / "a.jsonl"), 2), (str(folder / "a.jsonl"), 3), (str(folder / "b.txt"), None)
    ]
    assert "line 2 is a JSON list, not an object" in str(invalid[0]) and "not valid UTF-8" in str(invalid[2])

    assert indexing.main([str(folder), "--skip-invalid", *store_args(tiny_model_dir, tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert f"skipped 3 invalid record(s) (--skip-invalid): {folder}/a.jsonl:2, {folder}/a.jsonl:3, {folder}/b.txt" in out
    assert points(tmp_path / "q") == 3


def test_truncated_gzip_names_the_file(tmp_path):
    import gzip

    file = tmp_path / "cut.jsonl.gz"
    data = gzip.compress(("\n".join(record(i) for i in range(200)) + "\n").encode())
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(DocumentReadError, match="cut.jsonl.gz: cannot read past line") as caught:
        list(read_documents(file))
    assert caught.value.path == str(file) and caught.value.line > 1


# -----------------------------------------------------------------------------
# --recreate never leaves less than it found


def test_recreate_with_bad_input_keeps_the_collection(tiny_model_dir, qdrant, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    assert indexing.main([str(missing), "--recreate", *store_args(tiny_model_dir, qdrant)]) == 1
    assert f"no such file or folder: {missing}" in one_error_line(capsys.readouterr().err, "medeir index")
    assert points(qdrant) == SAMPLE

    bad_first = write_jsonl(tmp_path / "bad_first.jsonl", ["{oops", record(2)])
    assert indexing.main([str(bad_first), "--recreate", *store_args(tiny_model_dir, qdrant)]) == 1
    assert "bad_first.jsonl: line 1 is not valid JSON" in one_error_line(capsys.readouterr().err, "medeir index")
    assert points(qdrant) == SAMPLE

    # the bad line comes after batches were written into the rebuild: the rebuild is discarded
    bad_later = write_jsonl(tmp_path / "bad_later.jsonl", [record(1), record(2), record(3), "{oops"])
    assert indexing.main([str(bad_later), "--recreate", "--batch-size", "1", *store_args(tiny_model_dir, qdrant)]) == 1
    line = one_error_line(capsys.readouterr().err, "medeir index")
    assert "bad_later.jsonl: line 4 is not valid JSON" in line and "the collection is as it was" in line
    assert points(qdrant) == SAMPLE and collections(qdrant) == ["medeir"]


def test_recreate_interrupted_keeps_the_collection(tiny_model_dir, qdrant):
    encoder = MedeirEncoder(tiny_model_dir, device="cpu")

    def interrupted():
        yield from [SourceDocument(id=f"n{i}", text=f"New document {i} about gout.") for i in range(4)]
        raise KeyboardInterrupt

    with MedeirVectorStore(encoder, path=qdrant) as store:
        with pytest.raises(KeyboardInterrupt):
            store.index(interrupted(), recreate=True, batch_size=1, show_progress=False)
        assert store.count() == SAMPLE
        assert store.backend.collections() == ["medeir"]
    assert collections(qdrant) == ["medeir"]  # the unfinished rebuild folder is gone


def test_recreate_swaps_in_only_on_success_and_keeps_working(tiny_model_dir, qdrant, tmp_path, capsys):
    new = write_jsonl(tmp_path / "new.jsonl", [record(1), record(2)])
    assert indexing.main([str(new), "--recreate", *store_args(tiny_model_dir, qdrant)]) == 0
    capsys.readouterr()
    assert len(collections(qdrant)) == 1  # the old collection is gone, the rebuild took its name
    # the name keeps working for indexing, querying and another recreate
    more = write_jsonl(tmp_path / "more.jsonl", [record(3)])
    assert indexing.main([str(more), "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == 3
    assert querying.main(["metformin", "--mode", "sparse", "--json", *query_args(tiny_model_dir, qdrant)]) == 0
    assert {r["doc_id"] for r in json.loads(capsys.readouterr().out)["results"]} == {"r1", "r2", "r3"}
    assert indexing.main(["--sample", "--recreate", "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    assert json.loads(capsys.readouterr().out)["points"] == SAMPLE
    assert len(collections(qdrant)) == 1


# -----------------------------------------------------------------------------
# the command line: one line, exit 1; Ctrl-C 130; bugs keep their traceback


def test_ctrl_c_at_any_point_exits_130(tiny_model_dir, tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(MedeirEncoder, "__init__", interrupt)  # while the model loads
    assert indexing.main(["--sample", *store_args(tiny_model_dir, tmp_path / "q")]) == 130
    assert "interrupted before indexing started" in one_error_line(capsys.readouterr().err, "medeir index")
    monkeypatch.setattr(indexing, "build_parser", interrupt)  # anywhere in a subcommand
    assert cli_main(["index", "--sample"]) == 130
    assert one_error_line(capsys.readouterr().err, "medeir index") == "medeir index: interrupted"


def test_a_real_bug_keeps_its_traceback(tiny_model_dir, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("a bug, not a bad input")

    monkeypatch.setattr(MedeirVectorStore, "index", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main(["index", "--sample", *store_args(tiny_model_dir, tmp_path / "q")])


def test_cli_prints_a_medeir_error_from_any_subcommand_as_one_line(capsys, monkeypatch):
    import types

    import medeir_rag.cli

    def bad(argv):
        raise InvalidArgumentError("--alpha must be in [0, 1]\n(got 2)")

    module = types.ModuleType("medeir_fake_stage")
    module.main = bad
    monkeypatch.setitem(sys.modules, "medeir_fake_stage", module)
    monkeypatch.setitem(medeir_rag.cli.SUBCOMMANDS, "fake-stage", ("medeir_fake_stage", None, "a stand-in"))
    assert cli_main(["fake-stage"]) == 1
    assert capsys.readouterr().err == "medeir fake-stage: --alpha must be in [0, 1]; (got 2)\n"


# -----------------------------------------------------------------------------
# truncate_dim: 0 is not "full size", True is not 1 (issue 12, item 7)

BAD_TRUNCATE_DIMS = [0, True, -1, 1000]


@pytest.mark.parametrize("value", BAD_TRUNCATE_DIMS)
def test_encoder_refuses_a_bad_truncate_dim_before_loading(tiny_model_dir, value):
    with pytest.raises(InvalidArgumentError, match=rf"^truncate_dim must be None or an integer in 1\.\.64 .*got {value!r}$"):
        MedeirEncoder(tiny_model_dir, device="cpu", truncate_dim=value)


@pytest.mark.parametrize("value", BAD_TRUNCATE_DIMS)
def test_encode_call_refuses_a_bad_truncate_dim(tiny_model_dir, value):
    encoder = _shared_encoder(tiny_model_dir)
    with pytest.raises(InvalidArgumentError, match=rf"^truncate_dim must be None or an integer in 1\.\.64 .*got {value!r}$"):
        encoder.encode(["Gout affects the big toe."], truncate_dim=value)


def test_a_bad_truncate_dim_creates_no_collection(tiny_model_dir, qdrant):
    with pytest.raises(InvalidArgumentError, match="truncate_dim"):
        MedeirVectorStore(MedeirEncoder(tiny_model_dir, device="cpu", truncate_dim=1000), path=qdrant)
    assert collections(qdrant) == ["medeir"] and points(qdrant) == SAMPLE
    with MedeirVectorStore(MedeirEncoder(tiny_model_dir, device="cpu", truncate_dim=16), path=qdrant) as store:
        with pytest.raises(CollectionMismatchError, match="holds 64-dimensional vectors .* gives 16 .truncate_dim=16."):
            store.search("asthma")
        with pytest.raises(CollectionMismatchError):
            store.index(list(read_sample_corpus())[:2], show_progress=False)
    assert points(qdrant) == SAMPLE


_ENCODERS: dict[str, MedeirEncoder] = {}


def _shared_encoder(model_dir) -> MedeirEncoder:
    """One loaded tiny encoder for the cases that only call it."""
    key = str(model_dir)
    if key not in _ENCODERS:
        _ENCODERS[key] = MedeirEncoder(model_dir, device="cpu")
    return _ENCODERS[key]


# -----------------------------------------------------------------------------
# CJK text: all [UNK] with the medical vocabulary, so a warning (issue 12, item 7)


def test_text_of_only_unknown_pieces_warns(tiny_model_dir, caplog):
    encoder = _shared_encoder(tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger="medeir_rag.inference.encode"):
        encoder.encode(["Metformin lowers glucose.", "糖尿病の治療", "高血压"])
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("2 of 3 text(s) tokenise to nothing but [UNK] (texts[1, 2])")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medeir_rag.inference.encode"):
        encoder.encode_query(["Metformin 糖尿病", "", "   "])  # some known pieces; empty texts are not warned about
    assert caplog.records == []


def test_cjk_documents_warn_when_indexed(tiny_model_dir, caplog):
    encoder = _shared_encoder(tiny_model_dir)
    with MedeirVectorStore(encoder, path=":memory:") as store, caplog.at_level(logging.WARNING, logger="medeir_rag.inference.encode"):
        store.index([SourceDocument(id="zh", text="二型糖尿病")], embed_title=False, show_progress=False)
        assert store.count() == 1
    assert any("nothing but [UNK]" in r.getMessage() for r in caplog.records)


# -----------------------------------------------------------------------------
# the wrong kind of model folder, and a config.json that does not fit the weights


def copy_model(source, tmp_path, name="model"):
    import shutil

    return shutil.copytree(source, tmp_path / name)


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_reranker_folder_is_not_an_embedder(tiny_reranker_dir):
    with pytest.raises(ModelFileError, match=rf"^{tiny_reranker_dir} is a cross-encoder \(reranker\) folder"):
        MedeirEncoder(tiny_reranker_dir, device="cpu")


def test_an_embedder_folder_is_not_a_reranker(tiny_model_dir):
    from medeir_rag.inference.rerank import MedeirReranker

    with pytest.raises(ModelFileError, match=rf"^{tiny_model_dir} is an embedder folder .* not a cross-encoder"):
        MedeirReranker(tiny_model_dir, device="cpu")


def test_weights_decide_the_kind_when_the_st_config_is_gone(tiny_model_dir, tiny_reranker_dir, tmp_path):
    from medeir_rag.inference.rerank import MedeirReranker

    reranker = copy_model(tiny_reranker_dir, tmp_path, "ce")
    (reranker / "config_sentence_transformers.json").unlink()
    with pytest.raises(ModelFileError, match=r"holds a cross-encoder \(reranker: classifier.weight in its weights"):
        MedeirEncoder(reranker, device="cpu")
    embedder = copy_model(tiny_model_dir, tmp_path, "st")
    (embedder / "config_sentence_transformers.json").unlink()
    with pytest.raises(ModelFileError, match=r"has no classification head \(classifier.weight is not in its weights\)"):
        MedeirReranker(embedder, device="cpu")


@pytest.mark.parametrize(
    ("key", "value", "stored"),
    [("num_hidden_layers", 4, 2), ("hidden_size", 128, 64), ("vocab_size", 999, None)],
)
def test_config_that_disagrees_with_the_weights(tiny_model_dir, tmp_path, key, value, stored):
    model = copy_model(tiny_model_dir, tmp_path)
    edit_json(model / "config.json", **{key: value})
    stored = stored if stored is not None else json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"]
    with pytest.raises(ModelFileError, match=rf"^{model / 'config.json'}: {key}={value} but the weights hold {stored}"):
        MedeirEncoder(model, device="cpu")


def test_reranker_config_that_disagrees_with_the_weights(tiny_reranker_dir, tmp_path):
    from medeir_rag.inference.rerank import MedeirReranker

    model = copy_model(tiny_reranker_dir, tmp_path)
    edit_json(model / "config.json", num_hidden_layers=3)
    with pytest.raises(ModelFileError, match=r"config.json: num_hidden_layers=3 but the weights hold 2"):
        MedeirReranker(model, device="cpu")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("tokenizer.json", "{}", "tokenizer.json holds no tokenizer model"),
        ("config.json", "{not json", "corrupt model file .*config.json"),
        ("modules.json", "", "corrupt model file .*modules.json"),
        ("model.safetensors", "truncated", "corrupt weights file .*model.safetensors"),
    ],
)
def test_corrupt_model_files_are_named(tiny_model_dir, tmp_path, name, content, message):
    model = copy_model(tiny_model_dir, tmp_path)
    (model / name).write_text(content)
    with pytest.raises(ModelFileError, match=message):
        MedeirEncoder(model, device="cpu")


@pytest.fixture
def pickled_model(tiny_model_dir, tmp_path):
    """The tiny model with its weights as a pickle ``pytorch_model.bin`` only."""
    import torch
    from safetensors.torch import load_file

    model = copy_model(tiny_model_dir, tmp_path)
    torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    return model


@pytest.mark.parametrize("loader", ["SentenceTransformer", "AutoModel", "MedeirEncoder"])
def test_pickle_weights_are_refused_by_every_loader(pickled_model, loader):
    if loader == "MedeirEncoder":
        with pytest.raises(MissingPathError, match=r"model.safetensors \(found \['pytorch_model.bin'\]: pickle weights are refused"):
            MedeirEncoder(pickled_model, device="cpu")
        return
    import sentence_transformers
    import transformers

    load = {"SentenceTransformer": sentence_transformers.SentenceTransformer,
            "AutoModel": transformers.AutoModel.from_pretrained}[loader]
    with pytest.raises(OSError, match=r"holds only pickle weights \['pytorch_model.bin'\], which medeir refuses"):
        load(str(pickled_model), device="cpu") if loader == "SentenceTransformer" else load(str(pickled_model))


def test_cli_refuses_the_wrong_kind_of_folder_and_keeps_the_store(tiny_model_dir, tiny_reranker_dir, qdrant, capsys):
    assert indexing.main(["--sample", *store_args(tiny_reranker_dir, qdrant)]) == 1
    assert "is a cross-encoder (reranker) folder" in one_error_line(capsys.readouterr().err, "medeir index")
    assert points(qdrant) == SAMPLE
    argv = ["diabetes", *query_args(tiny_model_dir, qdrant), "--reranker", str(tiny_model_dir)]
    assert querying.main(argv) == 1
    assert "is an embedder folder" in one_error_line(capsys.readouterr().err, "medeir query")


# -----------------------------------------------------------------------------
# ids: 7 and "7" name the same points (issue 12, item 7)


def test_integer_and_string_id_in_the_api(tiny_model_dir, qdrant):
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        docs = [SourceDocument(id="7", text="Gout affects the big toe."), SourceDocument(id=7, text="Asthma.")]
        with pytest.raises(InvalidArgumentError, match=r"^document id 7 is a int; ids must be strings .*'7'"):
            store.index(docs, show_progress=False)
        assert store.count() == SAMPLE + 1  # the document before it is stored, nothing else is lost


def test_integer_and_string_id_in_a_jsonl_file(tiny_model_dir, tmp_path, capsys):
    file = write_jsonl(tmp_path / "ids.jsonl", [
        json.dumps({"id": 7, "text": "Gout affects the big toe."}),
        json.dumps({"id": 8, "text": "Metformin lowers glucose."}),
        json.dumps({"id": "7", "text": "Asthma is treated with inhalers."}),
        json.dumps({"id": 8, "text": "Metformin lowers glucose."}),  # an exact repeat: counted by the indexer
    ])
    with pytest.raises(DocumentReadError, match=r"ids.jsonl: line 3: id '7' is already the id of line 1") as caught:
        list(read_documents(file))
    assert (caught.value.path, caught.value.line) == (str(file), 3)
    qdrant = tmp_path / "q"
    assert indexing.main([str(file), *store_args(tiny_model_dir, qdrant)]) == 1
    assert "line 3: id '7' is already the id of line 1" in one_error_line(capsys.readouterr().err, "medeir index")
    assert points(qdrant) == 2
    assert indexing.main([str(file), "--skip-invalid", "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["skipped_invalid"], summary["skipped_duplicate"], summary["points"]) == (1, 1, 2)


# -----------------------------------------------------------------------------
# search arguments: never fewer hits than asked for without a word


def test_candidates_below_top_k(tiny_model_dir, qdrant):
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        with pytest.raises(InvalidArgumentError, match=r"^candidates \(1\) must be at least top_k \(5\)"):
            store.search("asthma", candidates=1, top_k=5)
        assert len(store.search("asthma", candidates=5, top_k=5)) == 5
        with pytest.raises(InvalidArgumentError, match=r"^candidates must be > 0, got 0"):
            store.search("asthma", candidates=0)


def test_rerank_candidates_below_top_k(tiny_model_dir, tiny_reranker_dir, qdrant):
    from medeir_rag.inference.rerank import MedeirReranker

    reranker = MedeirReranker(tiny_reranker_dir, device="cpu")
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        with pytest.raises(InvalidArgumentError, match=r"^rerank_top_k \(2\) must be at least top_k \(5\)"):
            store.search("asthma", top_k=5, reranker=reranker, rerank_top_k=2)
        with pytest.raises(InvalidArgumentError, match=r"^candidates \(10\) must be at least rerank_top_k \(20\)"):
            store.search("asthma", top_k=5, reranker=reranker, candidates=10)
        assert len(store.search("asthma", top_k=5, reranker=reranker)) == 5
    assert points(qdrant) == SAMPLE


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_k": 0}, InvalidArgumentError, "^top_k must be > 0, got 0$"),
        ({"top_k": True}, TypeError, "^top_k must be an integer, got bool$"),
        ({"mode": "semantic"}, InvalidArgumentError, "^mode must be one of .*got 'semantic'$"),
        ({"query": "   "}, InvalidArgumentError, "^query is empty$"),
        ({"alpha": 1.5}, InvalidArgumentError, "alpha"),
    ],
)
def test_bad_search_arguments(tiny_model_dir, qdrant, kwargs, error, message):
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        with pytest.raises(error, match=message):
            store.search(**{"query": "asthma", **kwargs})
    assert points(qdrant) == SAMPLE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "^chunk_size must be a positive integer, got 0$"),
        ({"chunk_size": 100_000}, "^chunk_size=100000 does not fit the model window"),
        ({"chunk_size": 32, "chunk_overlap": 32}, r"^chunk_overlap must be in 0\.\.31, got 32$"),
        ({"batch_size": 0}, "^batch_size must be a positive integer, got 0$"),
    ],
)
def test_bad_index_arguments_keep_the_store(tiny_model_dir, qdrant, kwargs, message):
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        with pytest.raises(InvalidArgumentError, match=message):
            store.index([SourceDocument(id="n1", text="New text.")], recreate=True, show_progress=False, **kwargs)
    assert points(qdrant) == SAMPLE and collections(qdrant) == ["medeir"]


def test_index_of_something_that_is_not_a_document(tiny_model_dir, qdrant):
    with MedeirVectorStore(_shared_encoder(tiny_model_dir), path=qdrant) as store:
        with pytest.raises(TypeError, match="^documents must be SourceDocument objects, got dict$"):
            store.index([{"id": "x", "text": "Gout."}], show_progress=False)
    assert points(qdrant) == SAMPLE


# -----------------------------------------------------------------------------
# the readers


@pytest.mark.parametrize(
    ("name", "data", "message", "line"),
    [
        ("bad.xml", b"<PubmedArticleSet><PubmedArticle>\n<oops></PubmedArticleSet>", "bad.xml: not well-formed XML", 2),
        ("fake.jsonl.gz", b'{"id": "a", "text": "not gzip"}\n', "fake.jsonl.gz: cannot read past line 0", 1),
        ("fake.txt.gz", b"plain text", "fake.txt.gz: cannot read", None),
        ("latin.txt", "Ménière".encode("latin-1"), "latin.txt: the file is not valid UTF-8 .byte 0xe9", None),
        ("latin.jsonl", b'{"id": "a"}\n{"text": "M\xe9ni\xe8re"}\n', "latin.jsonl: line 2 is not valid UTF-8", 2),
        ("text.jsonl", b'{"id": "a", "text": ["a", "list"]}\n', "text.jsonl: line 1: text and title must be strings", 1),
    ],
)
def test_unreadable_document_files_are_named(tmp_path, name, data, message, line):
    file = tmp_path / name
    file.write_bytes(data)
    with pytest.raises(DocumentReadError, match=message) as caught:
        list(read_documents(file))
    assert caught.value.path == str(file) and caught.value.line == line


def test_reader_arguments_and_empty_folders(tmp_path):
    with pytest.raises(InvalidArgumentError, match="^encoding_errors must be 'strict' or 'replace', got 'ignore'$"):
        list(read_documents(tmp_path, encoding_errors="ignore"))
    (tmp_path / "notes.docx").write_bytes(b"PK")
    with pytest.raises(MissingPathError, match=rf"^no document files in {tmp_path} \(looked for .jsonl"):
        list(read_documents(tmp_path))


# -----------------------------------------------------------------------------
# the LlamaIndex and Haystack components, through their public names


def llama_index():
    pytest.importorskip("llama_index.core")
    import medeir_rag.integrations.llama_index as module

    return module


def haystack():
    pytest.importorskip("haystack")
    import medeir_rag.integrations.haystack as module

    return module


def test_llama_index_components_refuse_the_wrong_kind_of_folder(tiny_model_dir, tiny_reranker_dir):
    li = llama_index()
    with pytest.raises(ModelFileError, match="is a cross-encoder .reranker. folder"):
        li.MedeirEmbedding(model_name=str(tiny_reranker_dir), device="cpu")
    with pytest.raises(ModelFileError, match="is an embedder folder"):
        li.MedeirRerank(model=str(tiny_model_dir), device="cpu")
    with pytest.raises(MissingPathError, match="model directory patients/model-typo does not exist"):
        li.MedeirEmbedding(model_name="patients/model-typo", device="cpu")


def test_haystack_components_refuse_the_wrong_kind_of_folder(tiny_model_dir, tiny_reranker_dir):
    hs = haystack()
    with pytest.raises(ModelFileError, match="is a cross-encoder .reranker. folder"):
        hs.MedeirTextEmbedder(model=str(tiny_reranker_dir)).warm_up()
    with pytest.raises(ModelFileError, match="is a cross-encoder .reranker. folder"):
        hs.MedeirDocumentEmbedder(model=str(tiny_reranker_dir)).warm_up()
    with pytest.raises(ModelFileError, match="is an embedder folder"):
        hs.MedeirSimilarityRanker(model=str(tiny_model_dir)).warm_up()


@pytest.mark.parametrize("value", [
    0, True, -1, 1000,
])
def test_llama_index_embedding_refuses_a_bad_truncate_dim(tiny_model_dir, value):
    li = llama_index()
    with pytest.raises(InvalidArgumentError, match="truncate_dim"):
        li.MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu", truncate_dim=value).get_text_embedding("x")


@pytest.mark.parametrize("component", ["MedeirTextEmbedder", "MedeirDocumentEmbedder"])
@pytest.mark.parametrize("value", BAD_TRUNCATE_DIMS)
def test_haystack_embedders_refuse_a_bad_truncate_dim(tiny_model_dir, component, value):
    from haystack import Document

    hs = haystack()
    with pytest.raises(InvalidArgumentError, match="truncate_dim"):
        embedder = getattr(hs, component)(model=str(tiny_model_dir), truncate_dim=value, progress_bar=False)
        embedder.warm_up()
        embedder.run("x") if component == "MedeirTextEmbedder" else embedder.run([Document(content="x")])


def test_haystack_document_with_no_content_is_not_embedded_as_empty_text(tiny_model_dir):
    from haystack import Document

    hs = haystack()
    embedder = hs.MedeirDocumentEmbedder(model=str(tiny_model_dir), progress_bar=False)
    docs = [Document(id="ok", content="Gout."), Document(id="empty-one", content=None)]
    with pytest.raises(InvalidArgumentError, match=r"empty-one"):
        embedder.run(docs)


def test_haystack_splitter_with_no_content_names_the_document(tiny_model_dir):
    from haystack import Document

    hs = haystack()
    splitter = hs.MedeirDocumentSplitter(model=str(tiny_model_dir))
    splitter.warm_up()
    with pytest.raises(InvalidArgumentError, match=r"empty-one"):
        splitter.run([Document(id="empty-one", content=None)])


def test_haystack_ranker_refuses_top_k_zero(tiny_reranker_dir):
    from haystack import Document

    hs = haystack()
    with pytest.raises(InvalidArgumentError, match=r"top_k must be > 0, but got 0"):
        hs.MedeirSimilarityRanker(model=str(tiny_reranker_dir), top_k=0)
    ranker = hs.MedeirSimilarityRanker(model=str(tiny_reranker_dir), top_k=3)
    ranker.warm_up()
    with pytest.raises(InvalidArgumentError, match=r"top_k must be > 0, but got 0"):
        ranker.run(query="gout", documents=[Document(content="Gout.")], top_k=0)


def test_cjk_warning_through_the_frameworks(tiny_model_dir, caplog):
    from haystack import Document

    hs, li = haystack(), llama_index()
    with caplog.at_level(logging.WARNING, logger="medeir_rag.inference.encode"):
        hs.MedeirDocumentEmbedder(model=str(tiny_model_dir), progress_bar=False).run([Document(content="高血压")])
        li.MedeirEmbedding(model_name=str(tiny_model_dir), device="cpu").get_query_embedding("糖尿病")
    assert sum("nothing but [UNK]" in r.getMessage() for r in caplog.records) == 2


def test_llama_index_splitter_refuses_an_overlap_as_long_as_the_chunk(tiny_model_dir):
    li = llama_index()
    with pytest.raises(InvalidArgumentError, match=r"chunk_overlap \(16\) must be smaller than chunk_size \(16\)"):
        li.MedeirTokenWindowSplitter(model_name=str(tiny_model_dir), chunk_size=16, chunk_overlap=16)
