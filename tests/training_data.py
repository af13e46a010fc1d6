"""Synthetic, hermetic training data for ``tests/test_training_*.py`` (no shared data folder).

``write_data_dir(root)`` lays out every file the training stages read, under the same
relative paths as the shared data folder (the six allowed sources of
``text_sources.DEFAULT_SOURCES`` and the two BEIR evaluation sets used for exclusion),
all generated from templates so that question -> answer retrieval is learnable by a
tiny model.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

DISEASES = [
    "asthma", "glaucoma", "diabetes", "hypertension", "pneumonia", "influenza", "migraine", "psoriasis",
    "anemia", "arthritis", "bronchitis", "cirrhosis", "dermatitis", "epilepsy", "gastritis", "hepatitis",
    "leukemia", "lymphoma", "malaria", "meningitis", "nephritis", "obesity", "osteoporosis", "pancreatitis",
    "sinusitis", "tuberculosis", "gout", "scoliosis", "cataract", "rickets",
]
ORGANS = ["lungs", "eyes", "pancreas", "heart", "lungs", "airways", "brain", "skin", "blood", "joints",
          "bronchi", "liver", "skin", "brain", "stomach", "liver", "marrow", "nodes", "blood", "meninges",
          "kidneys", "body", "bones", "pancreas", "sinuses", "lungs", "joints", "spine", "lens", "bones"]
QTYPES = {
    "symptoms": ("What are the symptoms of {d} ?", "Symptoms of {d} include pain and swelling of the {o} ; {d} also causes fatigue."),
    "causes": ("What causes {d} ?", "{d} is caused by damage to the {o} ; infection and genes raise the risk of {d} ."),
    "treatment": ("What are the treatments for {d} ?", "{d} is treated with medication that protects the {o} ; surgery helps severe {d} ."),
    "information": ("What is (are) {d} ?", "{d} is a disorder of the {o} . Doctors diagnose {d} with tests of the {o} ."),
    "prevention": ("How to prevent {d} ?", "Vaccination and a healthy diet protect the {o} and prevent {d} in most patients."),
}


def _write_jsonl_gz(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def medquad_pairs() -> list[dict]:
    rows = []
    for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True)):
        for qtype, (q, a) in QTYPES.items():
            rows.append({
                "uid": f"9_SYN_QA:{i:04d}-{qtype}", "id": f"{i:04d}-{qtype}", "collection": f"col{i % 3}",
                "focus": d, "qtype": qtype, "question": q.format(d=d.title(), o=o),
                "answer": a.format(d=d.title(), o=o),
            })
    return rows


def abstracts(n: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        d, o = DISEASES[i % len(DISEASES)], ORGANS[i % len(ORGANS)]
        sentences = [
            f"We studied {rng.randint(20, 400)} patients with {d} of the {o} .",
            f"Treatment with drug {rng.choice('ABCDEFG')} reduced {d} severity in the {o} .",
            f"Inflammation of the {o} was measured before and after therapy .",
            f"These results suggest that {d} responds to early treatment .",
            f"Further trials of {d} in children are needed .",
        ]
        rows.append({"id": f"pmid:{1000 + i}", "pmid": str(1000 + i), "title": f"Therapy of {d} in the {o} .",
                     "text": " ".join(sentences), "source": "synthetic"})
    return rows


def go_terms() -> list[dict]:
    rows = []
    for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True)):
        rows.append({"id": f"GO:{i:07d}", "title": f"{o} {d} response", "ontology": ["BP", "MF", "CC"][i % 3],
                     "text": f"Any process that modulates the response of the {o} to {d} .", "source": "gene-ontology"})
    return rows


def write_data_dir(root: Path) -> Path:
    """Write the synthetic shared-data layout under ``root``; returns ``root``."""
    _write_jsonl_gz(root / "medquad/medquad_train_pairs.jsonl.gz", medquad_pairs())
    _write_jsonl_gz(root / "pretrain/pubmed_abstracts_bionlp.jsonl.gz", abstracts())
    _write_jsonl_gz(root / "pretrain/go_definitions.jsonl.gz", go_terms())
    sentences = [{"id": f"scicite:{i}", "title": "", "text": r["text"].split(" . ")[0] + " .", "source": "scicite"}
                 for i, r in enumerate(abstracts())]
    _write_jsonl_gz(root / "pretrain/bio_sentences_scibert.jsonl.gz", sentences)
    _write_jsonl_gz(root / "general/wordnet30_glosses.jsonl.gz", [
        {"id": f"wn30:{i:08d}-n", "title": d, "text": f"a disease of the {o}", "source": "wordnet-3.0", "pos": "n"}
        for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True))])
    _write_jsonl_gz(root / "general/gcide.jsonl.gz", [
        {"id": f"gcide:{i}", "title": o.title(), "text": f"{o.title()} , n. An organ of the body ; see {d} .",
         "source": "gcide"} for i, (d, o) in enumerate(zip(DISEASES, ORGANS, strict=True))])
    # evaluation sets (for exclusion): SciFact-like corpus with one abstract equal to ours
    scifact = root / "beir/scifact"
    _write_jsonl_gz(scifact / "corpus.jsonl.gz", [
        {"_id": "4983", "title": "Unrelated study", "text": "A trial of something else entirely ."},
        {"_id": "777", "title": abstracts()[3]["title"], "text": abstracts()[3]["text"]},  # same text, S2 id
    ])
    (scifact / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "a claim"}) + "\n")
    medquad_qa = root / "beir/medquad_qa"
    _write_jsonl_gz(medquad_qa / "corpus.jsonl.gz", [
        {"_id": "d0", "title": "", "text": "A test answer that never appears in training .",
         "medquad_uid": "9_SYN_QA:0002-symptoms"},
    ])
    (medquad_qa / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "a test question"}) + "\n")
    return root


def all_texts() -> list[str]:
    """Every text of the synthetic data (to train a matching tiny tokenizer)."""
    texts = [f"{r['question']} {r['answer']}" for r in medquad_pairs()]
    texts += [f"{r['title']} {r['text']}" for r in abstracts()]
    texts += [f"{r['title']} {r['text']}" for r in go_terms()]
    return texts


def word_tokenizer():
    """A deterministic WordPiece tokenizer whose vocabulary is every word of the synthetic data.

    ``train_wordpiece`` is not bit-reproducible (tokenizers numbers pieces in hash-map
    order), which would make the tiny training runs differ from one session to the next.
    """
    import string

    from tokenizers import Tokenizer, models

    from medeir_rag.model.tokenization import (
        SPECIAL_TOKENS,
        UNK_TOKEN,
        _add_post_processor,
        _new_wordpiece,
        wrap_tokenizer,
    )

    base = _new_wordpiece(lowercase=True)
    words = sorted({w for text in all_texts() for w, _ in
                    base.pre_tokenizer.pre_tokenize_str(base.normalizer.normalize_str(text))})
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = list(SPECIAL_TOKENS) + [w for w in words if w not in chars] + chars + [f"##{c}" for c in chars]
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(vocab)}, unk_token=UNK_TOKEN,
                                     continuing_subword_prefix="##"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = base.normalizer, base.pre_tokenizer, base.decoder
    _add_post_processor(tok)
    return wrap_tokenizer(tok)
