"""Pair data, contrastive fine-tuning and the reranker, end to end on tiny synthetic data."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from training_data import word_tokenizer, write_data_dir

from medeir_rag.training import finetune, pretrain, reranker
from medeir_rag.training.config import CorpusConfig, PairData, PairSources
from medeir_rag.training.corpus import build_corpus
from medeir_rag.training.pairs import (
    Pair,
    build_pairs,
    heldout_medquad_pairs,
    ict_pair,
    iter_source_records,
    mine_hard_negatives,
    mrr_at_k,
    source_quotas,
    span_pair,
)

WEIGHTS = {"medquad": 2.0, "title_abstract": 1.0, "go_definition": 0.5, "wordnet": 0.0, "gcide": 0.0, "spans": 0.5}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A synthetic data folder and a tiny model pretrained on it (a few seconds)."""
    root = tmp_path_factory.mktemp("finetune")
    data_dir = write_data_dir(root / "data")
    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(str(root / "tokenizer"))
    corpus = CorpusConfig(inputs=["pretrain/pubmed_abstracts_bionlp.jsonl.gz", "medquad/medquad_train_pairs.jsonl.gz",
                                  "pretrain/go_definitions.jsonl.gz"],
                          data_dir=str(data_dir), holdout_percent=20, tokenizer=str(root / "tokenizer"))
    build_corpus(corpus, root / "corpus", show_progress=False)
    code = pretrain.main([
        "--config", "tiny", "--out", str(root / "pretrain"), "--corpus", str(root / "corpus"),
        "--tokenizer", str(root / "tokenizer"), "--max-steps", "100", "--set", "train.batch_tokens=512",
        "--set", "data.curriculum=[{seq_len: 32, fraction: 1.0}]", "--set", "eval.seq_len=32", "--set", "eval.every=100",
    ])
    assert code == 0
    return {"data": data_dir, "final": root / "pretrain" / "final"}


def pair_data(data_dir, **kw) -> PairData:
    values = dict(data_dir=str(data_dir), num_pairs=200, holdout_percent=20, eval_pairs=30,
                  weights=PairSources(**WEIGHTS), span_min_words=4, span_max_words=12)
    return PairData(**{**values, **kw})


def data_overrides(data_dir) -> list[str]:
    return ["--data-dir", str(data_dir), "--set", "data.holdout_percent=20", "--set", "data.num_pairs=200",
            "--set", f"data.weights={json.dumps(WEIGHTS)}", "--set", "data.span_min_words=4",
            "--set", "data.span_max_words=12"]


# ----------------------------------------------------------------------------
# Pairs


def test_quotas_follow_weights():
    quotas = source_quotas(PairData(num_pairs=100, weights=PairSources(**WEIGHTS)))
    assert sum(quotas.values()) == 100 and quotas["medquad"] == 50 and quotas["title_abstract"] == 25
    assert sorted([quotas["go_definition"], quotas["spans"]]) == [12, 13]  # 12.5 each, largest remainder


def test_span_pairs_overlap_or_touch():
    text = " ".join(f"w{i}" for i in range(100))
    data = PairData(span_min_words=5, span_max_words=20)
    rng = random.Random(0)
    for _ in range(200):
        pair = span_pair(text, rng, data)
        if pair is None:
            continue
        a = [int(w[1:]) for w in pair.anchor.split()]
        p = [int(w[1:]) for w in pair.positive.split()]
        assert 5 <= len(a) <= 20 and 5 <= len(p) <= 20
        assert p[0] <= a[-1] + 1 and a[0] <= p[-1] + 1  # overlapping or adjacent


def test_ict_pairs_take_one_sentence_out_of_the_abstract():
    title = "Metformin in type 2 diabetes."
    sentences = [f"Sentence {i} reports that metformin changed outcome {i} in adults." for i in range(6)]
    data = PairData(span_min_words=5)
    rng = random.Random(0)
    kept = 0
    for _ in range(300):
        pair = ict_pair(title, " ".join(sentences), rng, data)
        assert pair is not None and pair.source == "ict" and pair.anchor in sentences
        assert pair.positive.startswith(title)
        rest = pair.positive[len(title) :].strip()
        kept += pair.anchor in rest
        assert all(s in rest for s in sentences if s != pair.anchor)  # every other sentence stays
    assert 10 <= kept <= 60  # the sentence stays in ~10% of pairs
    assert ict_pair(title, "Too short. Two sentences.", rng, data) is None


def test_ict_source_uses_each_abstract_once(pretrained):
    data = pair_data(pretrained["data"]).model_copy(update={"weights": PairSources(**{**{k: 0.0 for k in WEIGHTS}, "ict": 1.0}), "num_pairs": 10_000})
    pairs, counts = build_pairs(data)
    abstracts = list(iter_source_records("ict", data))
    # 10,000 asked for, but one pair per (non-held-out) abstract at most: spans would fill the quota
    assert counts == {"ict": len(pairs)} and 0 < len(pairs) <= len(abstracts) < 10_000


def test_build_pairs_keeps_held_out_pairs_out(pretrained):
    data = pair_data(pretrained["data"])
    pairs, counts = build_pairs(data)
    held = heldout_medquad_pairs(data)
    assert 2 <= len(held) and counts["medquad"] > 0 and counts["spans"] > 0 and "wordnet" not in counts
    train_texts = {t for p in pairs for t in (p.anchor, p.positive)}
    assert not train_texts & {t for p in held for t in (p.anchor, p.positive)}
    assert {p.source for p in pairs} == {"medquad", "title_abstract", "go_definition", "spans"}
    assert all(p.meta.get("qtype") for p in pairs if p.source == "medquad")
    assert build_pairs(data)[0][0].anchor == pairs[0].anchor  # seeded


def test_hard_negatives_skip_the_positive():
    pairs = [Pair(f"symptoms of disease{i}", f"disease{i} causes pain in organ{i}", "medquad") for i in range(20)]
    pairs.append(Pair("symptoms of disease0 again", "disease0 causes pain in organ0", "medquad"))  # same positive
    mine_hard_negatives(pairs, PairData(hard_negatives=2, mine_top_k=5))
    for p in pairs:
        assert len(p.negatives) == 2 and p.positive not in p.negatives
    assert mrr_at_k(np.array([[0, 1], [0, 1]]), 10) == pytest.approx(0.75)


# ----------------------------------------------------------------------------
# Fine-tuning


def test_finetune_retrieves_better_than_untrained(pretrained, tmp_path):
    from sentence_transformers import SentenceTransformer

    from medeir_rag.inference.encoder import MedeirEncoder

    out = tmp_path / "ft"
    code = finetune.main(["--config", "tiny", "--init", str(pretrained["final"]), "--out", str(out),
                          "--epochs", "4", "--lr", "2e-3", *data_overrides(pretrained["data"])])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_pairs"] >= 20
    assert summary["mrr@10_after"] > summary["mrr@10_before"] + 0.05, summary
    assert summary["final_loss"] < summary["first_loss"]
    assert summary["matryoshka_dims"] == [64, 32]
    for name in ("config.yaml", "loss_curve.png", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert (out / "final" / "modeling_medeir.py").is_file()  # loads with trust_remote_code, no medeir_rag import
    # a standard ST folder: both loaders, no trust_remote_code, same embeddings
    texts = ["What causes Asthma ?", "Asthma is caused by damage to the lungs ."]
    st = SentenceTransformer(str(out / "final"), device="cpu", trust_remote_code=False)
    encoder = MedeirEncoder(out / "final", device="cpu", precision="fp32")
    assert encoder.prompts["query"] == "query: "
    a = st.encode(texts, prompt_name="query", convert_to_numpy=True)
    b = np.asarray(encoder.encode_query(texts) if hasattr(encoder, "encode_query") else encoder.encode(texts))
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_category_objective_trains(pretrained, tmp_path):
    out = tmp_path / "ft-cat"
    code = finetune.main(["--config", "tiny", "--init", str(pretrained["final"]), "--out", str(out), "--max-steps", "6",
                          *data_overrides(pretrained["data"]), "--set", "category.weight=0.5",
                          "--set", "category.num_examples=64", "--set", "train.batch_size=16"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["category_labels"] >= 4 and summary["steps"] == 6


def test_category_rows_and_loss_scaling(pretrained):
    from medeir_rag.training.config import FinetuneConfig

    config = FinetuneConfig(category={"weight": 1.0, "fields": ["medquad_qtype", "go_namespace", "source"]})
    pairs = [Pair("What causes X ?", "X is ...", "medquad", {"qtype": "causes", "collection": "c"}),
             Pair("term", "a definition", "go_definition", {"ontology": "BP"})]
    texts, labels = finetune.category_rows(pairs, config)
    assert labels == ["qtype:causes", "source:medquad", "go:BP", "source:go_definition"]
    assert texts[0] == "query: What causes X ?" and texts[1].startswith("passage: ")

    class Constant(torch.nn.Module):
        def forward(self, features, labels):
            return torch.tensor(2.0)

    assert finetune.ScaledLoss(Constant(), 0.25)(None, None).item() == pytest.approx(0.5)
    assert finetune.matryoshka_dims([384, 256, 64, 32], 64) == [64, 32]


def test_teacher_drops_negatives_it_scores_above_the_positive():
    from medeir_rag.training.pairs import drop_teacher_false_negatives

    space = {"q1": [1.0, 0.0], "p1": [0.8, 0.6], "answers q1 too": [1.0, 0.0], "hard": [0.6, 0.8], "far": [0.0, 1.0],
             "q2": [0.0, 1.0], "p2": [0.0, 1.0], "other": [1.0, 0.0]}

    def embed(texts):
        return np.array([space[t] for t in texts], dtype=np.float32)

    pairs = [Pair("q1", "p1", "medquad", negatives=["answers q1 too", "hard", "far"]),
             Pair("q2", "p2", "medquad", negatives=["other"])]
    stats = drop_teacher_false_negatives(pairs, embed, keep=1)
    assert pairs[0].negatives == ["hard"]  # the false negative is gone, the hardest true one kept
    assert pairs[1].negatives == ["other"]
    assert stats == {"candidates_dropped": 1, "pairs_refilled": 0}


def test_finetune_with_a_teacher_filters_mined_negatives(pretrained, tmp_path):
    from medeir_rag import MedeirConfig, MedeirModel
    from medeir_rag.model.export import save_sentence_transformer

    tokenizer = word_tokenizer()
    torch.manual_seed(2)
    teacher = save_sentence_transformer(MedeirModel(MedeirConfig.from_preset("tiny", vocab_size=len(tokenizer))),
                                        tokenizer, tmp_path / "teacher")
    out = tmp_path / "ft-teacher"
    code = finetune.main(["--config", "tiny", "--init", str(pretrained["final"]), "--out", str(out), "--max-steps", "4",
                          *data_overrides(pretrained["data"]),
                          "--set", f"teacher={{name: {teacher}, cache_dir: {tmp_path / 'cache'}, bf16: false}}",
                          "--set", "teacher_geometry=0.5"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == str(teacher) and summary["teacher_geometry"] == 0.5
    assert summary["final_loss"] is not None
    assert set(summary["teacher_filter"]) == {"candidates_dropped", "pairs_refilled"}
    assert list((tmp_path / "cache").rglob("shard-*.safetensors"))


def test_teacher_geometry_loss_is_mnrl_plus_the_similarity_kl(pretrained, tmp_path):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from medeir_rag.training.distill import similarity_kl

    model = finetune.load_init_model(pretrained["final"], tmp_path / "init", "cpu")
    texts_a = ["What causes Asthma ?", "What is (are) Gout ?", "How to prevent Malaria ?"]
    texts_p = ["Asthma is caused by damage to the airways .", "Gout is a disorder of the joints .",
               "Vaccination prevents Malaria ."]
    features = [model.tokenize(texts_a), model.tokenize(texts_p)]
    teacher = torch.nn.functional.normalize(torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0)
    combined = finetune.TeacherGeometryLoss(model, mnrl, weight=2.0, temperature=0.05)
    with torch.no_grad():
        total = combined(features, teacher)
        emb_a, emb_p = model(model.tokenize(texts_a))["sentence_embedding"], model(model.tokenize(texts_p))["sentence_embedding"]
        expected = mnrl.compute_loss_from_embeddings([emb_a, emb_p], None) + 2.0 * (
            similarity_kl(emb_a, teacher[:, 0], 0.05) + similarity_kl(emb_p, teacher[:, 1], 0.05)) / 2
    torch.testing.assert_close(total, expected, atol=1e-5, rtol=1e-4)


def test_teacher_geometry_needs_a_teacher():
    from medeir_rag.training.config import FinetuneConfig

    with pytest.raises(ValueError, match="teacher_geometry > 0 needs a teacher"):
        FinetuneConfig(teacher_geometry=1.0)


def test_finetune_needs_init(tmp_path, capsys):
    assert finetune.main(["--config", "tiny", "--out", str(tmp_path / "x")]) == 1
    assert "--init" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# Reranker


def test_reranker_trains_and_loads(pretrained, tmp_path):
    from sentence_transformers import CrossEncoder

    out = tmp_path / "rr"
    code = reranker.main(["--config", "tiny", "--init", str(pretrained["final"]), "--out", str(out),
                          "--epochs", "8", "--lr", "3e-3", *data_overrides(pretrained["data"]),
                          "--set", "data.weights.spans=0", "--set", "data.num_pairs=120",
                          # one easy-ish negative (BM25 ranks 6+): a 2-layer model learns it in seconds
                          "--set", "negatives_per_positive=1", "--set", "data.mine_skip_top=5",
                          "--set", "train.logging_steps=14"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_loss"] < summary["first_loss"] - 0.2, summary
    assert summary["mrr@10_after"] > summary["mrr@10_before"], summary
    model = CrossEncoder(str(out / "final"), device="cpu", trust_remote_code=False)
    scores = model.predict([("What causes Asthma ?", "Asthma is caused by damage to the lungs ."),
                            ("What causes Asthma ?", "Gout is treated with medication .")])
    assert np.isfinite(scores).all() and model.max_length == 512


def test_reranker_can_start_from_the_finetuned_bi_encoder(pretrained, tmp_path):
    """``--init`` may be finetune's ST folder: its encoder weights become the cross-encoder's."""
    from safetensors.torch import load_file

    ft, rr = tmp_path / "ft", tmp_path / "rr"
    assert finetune.main(["--config", "tiny", "--init", str(pretrained["final"]), "--out", str(ft),
                          "--max-steps", "2", *data_overrides(pretrained["data"])]) == 0
    assert reranker.main(["--config", "tiny", "--init", str(ft / "final"), "--out", str(rr), "--max-steps", "1",
                          "--lr", "1e-12", *data_overrides(pretrained["data"]), "--set", "data.weights.spans=0"]) == 0
    encoder = load_file(ft / "final" / "model.safetensors")
    cross = load_file(rr / "final" / "model.safetensors")
    key = "layers.0.attention.qkv.weight"
    torch.testing.assert_close(cross[f"medeir.{key}"], encoder[key], atol=1e-6, rtol=0)
