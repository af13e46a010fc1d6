"""Corpus stage: readers (JSONL, text, PubMed XML), dedup, evaluation filtering, shards."""

from __future__ import annotations

import gzip
import json

import pytest
from training_data import write_data_dir

from medeir_rag.training import corpus as corpus_stage
from medeir_rag.training.config import CorpusConfig
from medeir_rag.training.corpus import (
    build_corpus,
    iter_corpus_texts,
    iter_path_docs,
    iter_pubmed_xml,
    load_exclusion,
    normalize_text,
)
from medeir_rag.training.text_sources import is_held_out

PUBMED_XML = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2024//EN" "pubmed_240101.dtd">
<PubmedArticleSet>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">11111</PMID>
      <Article PubModel="Print">
        <ArticleTitle>Metformin and <i>glucose</i> control.</ArticleTitle>
        <Abstract>
          <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Diabetes is common.</AbstractText>
          <AbstractText Label="RESULTS" NlmCategory="RESULTS">Metformin lowered HbA1c by 1%.</AbstractText>
        </Abstract>
      </Article>
    </MedlineCitation>
    <PubmedData><ArticleIdList><ArticleId IdType="pubmed">11111</ArticleId></ArticleIdList></PubmedData>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">22222</PMID>
      <Article PubModel="Print">
        <ArticleTitle>A title without abstract.</ArticleTitle>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
  <PubmedArticle>
    <MedlineCitation Status="MEDLINE" Owner="NLM">
      <PMID Version="1">4983</PMID>
      <Article PubModel="Print">
        <ArticleTitle>Excluded by id.</ArticleTitle>
        <Abstract><AbstractText>Its PMID equals a SciFact corpus id.</AbstractText></Abstract>
      </Article>
    </MedlineCitation>
  </PubmedArticle>
</PubmedArticleSet>
"""


@pytest.fixture()
def data_dir(tmp_path):
    return write_data_dir(tmp_path / "data")


def write_xml(path):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(PUBMED_XML)
    return path


def test_pubmed_xml_reader(tmp_path):
    docs = list(iter_pubmed_xml(write_xml(tmp_path / "pubmed24n0001.xml.gz")))
    assert [d.id for d in docs] == ["pmid:11111", "pmid:22222", "pmid:4983"]
    first = docs[0]
    assert first.text == "Metformin and glucose control.\nBACKGROUND: Diabetes is common. RESULTS: Metformin lowered HbA1c by 1%."
    assert first.ids == ("11111",)
    assert docs[1].text == "A title without abstract."


def test_text_and_jsonl_readers(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("First paragraph line one.\nline two.\n\nSecond paragraph.\n")
    assert [d.text for d in iter_path_docs(text)] == ["First paragraph line one. line two.", "Second paragraph."]
    assert len(list(iter_path_docs(text, "line"))) == 3
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text(json.dumps({"_id": "a", "title": "T", "text": "body"}) + "\n"
                     + json.dumps({"question": "Q?", "answer": "A."}) + "\n" + json.dumps({"title": "", "text": ""}) + "\n")
    docs = list(iter_path_docs(jsonl))
    assert [d.text for d in docs] == ["T\nbody", "Q?\nA."]
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported"):
        list(iter_path_docs(tmp_path / "x.csv"))


def test_evaluation_inputs_are_refused(data_dir):
    with pytest.raises(ValueError, match="evaluation data"):
        list(iter_path_docs(data_dir / "beir/scifact"))
    with pytest.raises(ValueError, match="evaluation data"):
        build_corpus(CorpusConfig(inputs=[str(data_dir / "beir/medquad_qa/corpus.jsonl.gz")], data_dir=str(data_dir)),
                     data_dir / "out", show_progress=False)


def test_exclusion_by_id_and_text(data_dir):
    exclusion = load_exclusion(["beir/scifact", "beir/medquad_qa"], data_dir)
    assert {"4983", "777", "9_SYN_QA:0002-symptoms"} <= exclusion.ids


def test_build_corpus_filters_dedups_and_shards(tmp_path, data_dir):
    xml = write_xml(tmp_path / "pubmed.xml.gz")
    dup = tmp_path / "dups.jsonl"
    dup.write_text("".join(json.dumps({"id": f"x{i}", "text": "  METFORMIN and glucose   control.\nBACKGROUND: "
                                       "Diabetes is common. RESULTS: Metformin lowered HbA1c by 1%."}) + "\n"
                           for i in range(3)))
    config = CorpusConfig(
        inputs=[str(xml), "pretrain/pubmed_abstracts_bionlp.jsonl.gz", "medquad/medquad_train_pairs.jsonl.gz", str(dup)],
        data_dir=str(data_dir), num_shards=3, holdout_percent=10, seed=1,
    )
    out = tmp_path / "corpus"
    manifest = build_corpus(config, out, show_progress=False)
    sources = manifest["sources"]
    assert sources["pubmed.xml.gz"]["excluded_id"] == 1  # PMID 4983 = a SciFact corpus id
    assert sources["pubmed_abstracts_bionlp.jsonl.gz"]["excluded_text"] == 1  # same text as a SciFact abstract
    assert sources["medquad_train_pairs.jsonl.gz"]["excluded_id"] == 1  # medquad_uid of the test split
    assert sources["dups.jsonl"]["duplicate"] == 3  # normalised text equals the XML article
    train = list(iter_corpus_texts(out, "train"))
    heldout = list(iter_corpus_texts(out, "heldout"))
    assert len(train) == manifest["train"]["docs"] and len(heldout) == manifest["heldout"]["docs"]
    assert len({normalize_text(t) for t in train + heldout}) == len(train) + len(heldout)
    assert manifest["train"]["tokens"] > manifest["train"]["docs"] > 0
    assert len(manifest["shards"]) == 3 and not list(out.glob(".bucket-*"))
    held_ids = {json.loads(line)["id"] for line in gzip.open(out / "heldout.jsonl.gz", "rt")}
    assert held_ids and all(is_held_out(i, 10) for i in held_ids)
    # same seed -> same shards; another seed -> another order
    again = build_corpus(config, tmp_path / "again", show_progress=False)
    assert again["fingerprint"] == manifest["fingerprint"]
    assert list(iter_corpus_texts(tmp_path / "again")) == train
    other = build_corpus(config.model_copy(update={"seed": 2}), tmp_path / "other", show_progress=False)
    assert list(iter_corpus_texts(tmp_path / "other")) != train
    assert sorted(iter_corpus_texts(tmp_path / "other")) == sorted(train)
    assert other["train"]["docs"] == manifest["train"]["docs"]


def test_empty_corpus_is_a_clear_error(tmp_path, data_dir, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty corpus"):
        build_corpus(CorpusConfig(inputs=[str(empty)], data_dir=str(data_dir)), tmp_path / "c", show_progress=False)
    code = corpus_stage.main(["--out", str(tmp_path / "c2"), "--inputs", str(empty), "--data-dir", str(data_dir)])
    assert code == 1
    assert "empty corpus" in capsys.readouterr().err
