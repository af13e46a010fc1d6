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

from medeir_rag import indexing, querying
from medeir_rag.cli import main as cli_main
from medeir_rag.documents import DocumentReadError, SourceDocument, read_documents, read_sample_corpus
from medeir_rag.encoder import MedeirEncoder, resolve_device
from medeir_rag.errors import (
    InvalidArgumentError,
    InvalidTextError,
    MedeirError,
    MissingDependencyError,
    MissingPathError,
    NotAFolderError,
    replace_lone_surrogates,
)
from medeir_rag.model_files import ModelFileError, resolve_model_path
from medeir_rag.store_backends import copy_store
from medeir_rag.vector_store import (
    CollectionMismatchError,
    CollectionNotFoundError,
    LegacyStoreError,
    MedeirVectorStore,
    ServerUnreachableError,
    StorageLockedError,
    open_backend,
)

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

    import medeir_rag.rerank

    monkeypatch.setattr(MedeirEncoder, "__init__", refuse)
    monkeypatch.setattr(medeir_rag.rerank.MedeirReranker, "__init__", refuse)


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
    with caplog.at_level(logging.WARNING, logger="medeir_rag.documents"):
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
    from medeir_rag.rerank import MedeirReranker

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
