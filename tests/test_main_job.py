"""``medeir index`` + ``medeir query`` end to end: inputs, bad input, and no network at any point."""

from __future__ import annotations

import gzip
import json
import socket

import pytest

from medeir_rag.cli import index as indexing
from medeir_rag.cli import main as cli_main
from medeir_rag.cli import query as querying
from medeir_rag.rag.documents import read_documents, read_sample_corpus

PUBMED_XML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">
<PubmedArticleSet>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">11111</PMID>
      <Article PubModel="Print">
        <Journal><Title>Journal of Tests</Title><JournalIssue><PubDate><Year>2020</Year></PubDate></JournalIssue></Journal>
        <ArticleTitle>Gout flares treated with <i>colchicine</i></ArticleTitle>
        <Abstract>
          <AbstractText Label="BACKGROUND">Gout flares are painful.</AbstractText>
          <AbstractText Label="RESULTS">Colchicine shortened flares.</AbstractText>
        </Abstract>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation><PMID Version="1">22222</PMID>
      <Article><ArticleTitle>No abstract here</ArticleTitle></Article>
    </MedlineCitation>
  </PubmedArticle>
</PubmedArticleSet>
"""


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "docs"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "kidney_stones.txt").write_text("Kidney stones cause colicky flank pain.\n", encoding="utf-8")
    (folder / "notes" / "empty.txt").write_text("", encoding="utf-8")
    (folder / "notes" / "blank.md").write_text("  \n\n\t ", encoding="utf-8")
    (folder / ".hidden.txt").write_text("never read", encoding="utf-8")
    (folder / "ignored.csv").write_text("a,b", encoding="utf-8")
    records = [
        {"_id": "r1", "title": "Tetanus", "text": "Tetanus boosters prevent lockjaw.", "year": 2001},
        {"title": "No id", "text": "Folic acid prevents neural tube defects."},
        {"id": "r3", "title": "Whitespace", "text": "   "},
    ]
    with gzip.open(folder / "records.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in records) + "\n\n")
    with gzip.open(folder / "pubmed.xml.gz", "wt", encoding="utf-8") as handle:
        handle.write(PUBMED_XML)
    return folder


def store_args(model_dir, qdrant_path, *extra):
    return ["--model", str(model_dir), "--qdrant-path", str(qdrant_path), "--device", "cpu", *extra]


def test_sample_corpus_index_and_query_with_network_blocked(no_network, tiny_model_dir, tiny_reranker_dir, tmp_path, capsys):
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("huggingface.co", 443))
    qdrant = tmp_path / "qdrant"
    assert indexing.main(store_args(tiny_model_dir, qdrant, "--no-progress")) == 0
    out = capsys.readouterr().out
    documents = len(list(read_sample_corpus()))
    assert f"{documents} documents read: {documents} indexed" in out and f"{documents} points" in out

    assert querying.main([
        "Metformin is usually the first medicine offered for type 2 diabetes", "--mode", "sparse", "--json",
        *store_args(tiny_model_dir, qdrant),
    ]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["results"][0]["doc_id"] == "sample:metformin" and len(result["results"]) == 5

    assert querying.main([
        "inhaled corticosteroids for asthma", "--rerank", str(tiny_reranker_dir), "--top-k", "3",
        *store_args(tiny_model_dir, qdrant),
    ]) == 0
    out = capsys.readouterr().out
    assert "reranked by" in out and out.count("[sample:") == 3

    # the `medeir` entry point dispatches to the same code; re-indexing skips everything
    assert cli_main(["index", "--sample", "--json", "--no-progress", *store_args(tiny_model_dir, qdrant)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_existing"] == documents and summary["points"] == documents


def test_rerank_without_a_path_is_a_one_line_error_naming_reranker_path(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from medeir_rag.model import files as model_files

    monkeypatch.setattr(model_files, "BUNDLED_MODELS_DIR", tmp_path / "assets")  # no bundled reranker
    qdrant = tmp_path / "qdrant"
    assert indexing.main(store_args(tiny_model_dir, qdrant, "--no-progress", "--limit", "3")) == 0
    capsys.readouterr()
    assert querying.main(["asthma", "--rerank", *store_args(tiny_model_dir, qdrant)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "no reranker is bundled with medeir_rag; pass --reranker PATH" in captured.err
    assert "medeir train-reranker" in captured.err
    assert querying.build_parser().parse_args(["asthma", "--reranker", "runs/r"]).rerank == "runs/r"
    assert querying.build_parser().parse_args(["asthma"]).rerank is None  # reranking is off by default


def test_index_a_folder_of_mixed_files(no_network, corpus_dir, tiny_model_dir, tmp_path, capsys):
    docs = list(read_documents(corpus_dir))
    assert [d.id for d in docs] == [
        "notes/blank.md", "notes/empty.txt", "notes/kidney_stones.txt", "pmid:11111", "pmid:22222",
        "r1", docs[6].id, "r3",
    ]
    gout = docs[3]
    assert gout.title == "Gout flares treated with colchicine"
    assert gout.text == "BACKGROUND: Gout flares are painful.\nRESULTS: Colchicine shortened flares."
    assert gout.meta == {"pmid": "11111", "journal": "Journal of Tests", "year": "2020"}
    assert docs[6].id.startswith("sha1:") and docs[5].meta == {"year": 2001}

    qdrant = tmp_path / "qdrant"
    assert indexing.main([str(corpus_dir), "--json", "--no-progress", *store_args(tiny_model_dir, qdrant)]) == 0
    summary = json.loads(capsys.readouterr().out)
    # empty.txt, blank.md, r3 (whitespace) and pmid:22222 (title, no abstract) are skipped as empty
    assert (summary["documents"], summary["indexed"], summary["skipped_empty"]) == (8, 4, 4)
    assert querying.main(["colchicine gout flares", "--mode", "sparse", "--json", *store_args(tiny_model_dir, qdrant)]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["doc_id"] == "pmid:11111" and top["meta"]["journal"] == "Journal of Tests"


def test_non_utf8_file_is_a_clear_error_and_keeps_what_was_stored(corpus_dir, tiny_model_dir, tmp_path, capsys):
    qdrant = tmp_path / "qdrant"
    (corpus_dir / "zz_latin1.txt").write_bytes("Ménière disease".encode("latin-1"))
    assert indexing.main([str(corpus_dir), "--batch-size", "1", "--no-progress", *store_args(tiny_model_dir, qdrant)]) == 1
    err = capsys.readouterr().err
    assert "zz_latin1.txt" in err and "not valid UTF-8" in err and "--encoding-errors replace" in err
    # the documents read before the bad file are stored; the rerun with replacement finishes the job
    assert indexing.main(
        [str(corpus_dir), "--encoding-errors", "replace", "--json", "--no-progress", *store_args(tiny_model_dir, qdrant)]
    ) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped_existing"] == 4 and summary["indexed"] == 1 and summary["points"] == 5


def test_bad_arguments_give_clear_errors(tiny_model_dir, tmp_path, capsys):
    qdrant = tmp_path / "qdrant"
    assert indexing.main([str(tmp_path / "missing.jsonl"), *store_args(tiny_model_dir, qdrant)]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert indexing.main([str(tmp_path), "--sample", *store_args(tiny_model_dir, qdrant)]) == 1
    assert "not both" in capsys.readouterr().err
    assert querying.main(["diabetes", *store_args(tiny_model_dir, qdrant)]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "medeir index" in err
    assert querying.main(["diabetes", "--top-k", "0", *store_args(tiny_model_dir, qdrant)]) == 1
    assert "--top-k must be > 0" in capsys.readouterr().err
    assert indexing.main(["--chunk-size", "99999", "--no-progress", *store_args(tiny_model_dir, qdrant)]) == 1
    assert "does not fit the model window" in capsys.readouterr().err
    from medeir_rag.rag.store import open_backend

    holder = open_backend(qdrant, collection="medeir")  # e.g. a notebook that still has the store open
    try:
        assert querying.main(["diabetes", *store_args(tiny_model_dir, qdrant)]) == 1
        assert "open in another process" in capsys.readouterr().err
    finally:
        holder.close()
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "ok"}\n{not json}\n', encoding="utf-8")
    assert indexing.main([str(bad_json), "--no-progress", *store_args(tiny_model_dir, qdrant)]) == 1
    assert "bad.jsonl: line 2 is not valid JSON" in capsys.readouterr().err
