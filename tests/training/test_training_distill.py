"""Teacher distillation on the tiny preset: teacher cache, distill-vocab, the near-identity start, distill."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_data import word_tokenizer, write_data_dir

from medeir_rag.training import distill, distill_vocab
from medeir_rag.training.config import load_config
from medeir_rag.training.teacher import TeacherCache, text_key


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data, a word tokenizer, and a tiny teacher (a random 96-wide medeir ST folder)."""
    from medeir_rag import MedeirConfig, MedeirModel
    from medeir_rag.model.export import save_sentence_transformer

    root = tmp_path_factory.mktemp("distill")
    data_dir = write_data_dir(root / "data")
    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(str(root / "tokenizer"))
    torch.manual_seed(1)
    teacher = MedeirModel(MedeirConfig.from_preset("tiny", vocab_size=len(tokenizer), hidden_size=96))
    save_sentence_transformer(teacher, tokenizer, root / "teacher")
    return {"root": root, "data": data_dir, "tokenizer": root / "tokenizer", "teacher": root / "teacher",
            "cache": root / "teacher-cache"}


def vocab_args(setup, out) -> list[str]:
    return ["--config", "tiny", "--out", str(out), "--teacher", str(setup["teacher"]), "--data-dir", str(setup["data"]),
            "--set", f"tokenizer={setup['tokenizer']}", "--set", f"teacher.cache_dir={setup['cache']}",
            "--set", "holdout_percent=20"]


@pytest.fixture(scope="module")
def vocab_run(setup):
    out = setup["root"] / "vocab"
    assert distill_vocab.main(vocab_args(setup, out)) == 0
    return out


def distill_args(setup, vocab_run, out, *extra: str) -> list[str]:
    return ["--config", "tiny", "--out", str(out), "--init", str(vocab_run), "--teacher", str(setup["teacher"]),
            "--data-dir", str(setup["data"]), "--set", f"teacher.cache_dir={setup['cache']}",
            "--set", "data.holdout_percent=20", *extra]


# ----------------------------------------------------------------------------
# Teacher cache


def test_teacher_cache_resumes_after_an_interrupted_pass(tmp_path):
    texts = [f"text {i}" for i in range(10)]
    calls: list[int] = []

    def encode(chunk):
        calls.append(len(chunk))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted while encoding the second shard
        return np.stack([np.full(4, float(t.split()[1])) for t in chunk])

    cache = TeacherCache(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cache.fill(texts, encode, shard_size=4)
    reopened = TeacherCache(tmp_path)
    assert len(reopened) == 4 and reopened.shards == 1 and not list(tmp_path.glob("*.tmp"))
    calls.clear()
    assert reopened.fill(texts + texts[:3], lambda c: np.stack([np.full(4, float(t.split()[1])) for t in c]),
                         shard_size=4) == 6
    assert np.array_equal(TeacherCache(tmp_path).get(texts)[:, 0], np.arange(10, dtype=np.float32))
    with pytest.raises(KeyError, match="no teacher embedding cached"):
        reopened.get(["never encoded"])
    assert text_key("a") != text_key("b")


def test_similarity_kl_compares_each_text_with_the_others_only():
    torch.manual_seed(0)
    teacher = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert distill.similarity_kl(teacher @ rotation, teacher, 0.05) < 1e-5  # same geometry: no loss
    shuffled = teacher[torch.randperm(8)]
    loss = distill.similarity_kl(shuffled, teacher, 0.05)
    assert torch.isfinite(loss) and loss > 0.1


# ----------------------------------------------------------------------------
# distill-vocab


def test_distill_vocab_writes_vectors_weights_and_a_static_model(setup, vocab_run):
    from sentence_transformers import SentenceTransformer

    from medeir_rag.model.tokenization import load_tokenizer

    tokenizer = load_tokenizer(setup["tokenizer"])
    vectors = load_file(str(vocab_run / distill_vocab.VECTORS_FILE))
    assert vectors["embeddings"].shape == (len(tokenizer), 64)
    special = list(tokenizer.all_special_ids)
    assert torch.all(vectors["embeddings"][special] == 0) and torch.all(vectors["weights"][special] == 0)
    # a frequent piece weighs less than a rare one
    counts, weights = vectors["counts"], vectors["weights"]
    seen = torch.nonzero(counts > 0).squeeze(1)
    frequent, rare = seen[counts[seen].argmax()], seen[counts[seen].argmin()]
    assert weights[frequent] < weights[rare]
    static = SentenceTransformer(str(vocab_run / distill_vocab.STATIC_DIR), device="cpu")
    emb = static.encode(["asthma of the lungs", "glaucoma of the eyes"], normalize_embeddings=True)
    assert emb.shape == (2, 64) and np.isfinite(emb).all() and float(emb[0] @ emb[1]) < 0.999
    summary = json.loads((vocab_run / "summary.json").read_text())
    assert summary["teacher_pass"]["encoded"] > 0 and (vocab_run / "explained_variance.png").is_file()


def test_distill_vocab_rerun_reuses_the_teacher_cache(setup, vocab_run, tmp_path):
    assert distill_vocab.main(vocab_args(setup, tmp_path / "again")) == 0
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["teacher_pass"]["encoded"] == 0
    first = load_file(str(vocab_run / distill_vocab.VECTORS_FILE))["embeddings"]
    again = load_file(str(tmp_path / "again" / distill_vocab.VECTORS_FILE))["embeddings"]
    assert torch.equal(first, again)


def test_distill_vocab_refuses_more_dims_than_the_teacher_has(setup, tmp_path, capsys):
    assert distill_vocab.main([*vocab_args(setup, tmp_path / "wide"), "--set", "dims=200"]) == 1
    assert "dims=200 exceeds the teacher's width 96" in capsys.readouterr().err


# ----------------------------------------------------------------------------
# The start: blocks are the identity, the encoder is a static model


def test_untrained_student_is_the_static_model(setup, vocab_run):
    config = load_config("distill", "tiny", [f"init={vocab_run}"])
    encoder, tokenizer, how = distill.build_student(config)
    assert "token embeddings from" in how and "zero-initialised" in how
    batch = distill.tokenize(tokenizer, ["query: what causes asthma ?", "passage: glaucoma damages the eyes ."],
                             48, torch.device("cpu"))
    encoder.eval()
    out = encoder(**batch, output_hidden_states=True)
    states = out.hidden_states
    for layer_input, layer_output in itertools.pairwise(states[:-1]):
        assert torch.equal(layer_input, layer_output)  # every block passes its input through
    # the pooled output equals the mean of the LayerNorm-ed static vectors
    vectors = torch.from_numpy(distill_vocab.load_vectors(vocab_run)["embeddings"])
    rows = vectors[batch["input_ids"]]
    normed = torch.nn.functional.layer_norm(rows, (rows.shape[-1],), eps=encoder.config.layer_norm_eps)
    normed = torch.nn.functional.layer_norm(normed, (rows.shape[-1],), eps=encoder.config.layer_norm_eps)
    expected = distill.mean_pool(normed, batch["attention_mask"])
    pooled = distill.mean_pool(out.last_hidden_state, batch["attention_mask"])
    cos = torch.nn.functional.cosine_similarity(pooled, expected, dim=-1)
    assert torch.all(cos > 0.9999)


def test_length_grouped_forward_equals_one_padded_forward(setup, vocab_run):
    """Training forwards a batch in length-sorted groups: same embeddings and gradients, less padding."""
    config = load_config("distill", "tiny", [f"init={vocab_run}"])
    encoder, tokenizer, _ = distill.build_student(config)
    torch.manual_seed(0)
    for layer in encoder.layers:
        for parameter in layer.parameters():
            torch.nn.init.normal_(parameter, std=0.05)  # away from the identity start, so blocks mix tokens
    student = distill.Student(encoder, 96)
    words = "asthma inflammation airway glaucoma optic nerve insulin diabetes fever infection".split()
    texts = [" ".join(words[: 1 + (i * 7) % len(words)] * (1 + i % 4)) for i in range(12)]
    cpu = torch.device("cpu")
    results = []
    for budget in (None, 24):
        student.zero_grad()
        pooled, tokens = distill.pooled_in_length_groups(student, tokenizer, texts, 48, cpu, budget)
        (pooled * torch.linspace(-1, 1, pooled.shape[1])).sum().backward()
        grads = [p.grad.clone() for p in student.encoder.parameters() if p.grad is not None]
        results.append((pooled.detach(), tokens, grads))
    (one, one_tokens, one_grads), (grouped, grouped_tokens, grouped_grads) = results
    assert one_tokens == grouped_tokens
    lengths = {len(row) for row in tokenizer(texts, truncation=True, max_length=48)["input_ids"]}
    assert len(lengths) > 2  # the texts differ in length, so the groups pad differently
    torch.testing.assert_close(grouped, one, atol=1e-5, rtol=1e-4)
    assert len(one_grads) == len(grouped_grads) > 0
    for a, b in zip(one_grads, grouped_grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)


def test_student_refuses_vectors_of_another_width(setup, vocab_run):
    config = load_config("distill", "tiny", [f"init={vocab_run}", "model.hidden_size=32"])
    with pytest.raises(ValueError, match="run distill-vocab with dims=32"):
        distill.build_student(config)


# ----------------------------------------------------------------------------
# distill


def test_distill_losses_fall_and_the_output_is_a_sentence_transformer(setup, vocab_run):
    from sentence_transformers import SentenceTransformer

    out = setup["root"] / "distill"
    assert distill.main(distill_args(setup, vocab_run, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_val_loss"] < summary["first_val_loss"]
    assert summary["final_val_cos_loss"] < summary["first_val_cos_loss"]
    assert summary["texts_per_s"] > 0 and summary["tokens_per_s"] > 0
    assert (out / "loss_curve.png").is_file()
    model = SentenceTransformer(str(out / "final"), device="cpu")
    assert model.encode(["asthma"]).shape == (1, 64)


def test_growing_a_distilled_encoder_keeps_its_embeddings(setup, vocab_run, tmp_path):
    source_dir = tmp_path / "source"
    assert distill.main(distill_args(setup, vocab_run, source_dir, "--max-steps", "6")) == 0
    source, tokenizer, _ = distill.build_student(load_config("distill", "tiny", [f"init={source_dir / 'final'}"]))
    depth = source.config.num_hidden_layers
    grown, _, how = distill.build_student(
        load_config("distill", "tiny", [f"init={source_dir / 'final'}", f"model.num_hidden_layers={depth + 2}"])
    )
    assert f"grown from {depth} to {depth + 2} blocks" in how
    assert grown.config.num_hidden_layers == depth + 2
    batch = distill.tokenize(tokenizer, ["query: what causes asthma ?", "passage: glaucoma damages the eyes ."],
                             48, torch.device("cpu"))
    source.eval(), grown.eval()
    with torch.no_grad():
        before = distill.mean_pool(source(**batch).last_hidden_state, batch["attention_mask"])
        after = distill.mean_pool(grown(**batch).last_hidden_state, batch["attention_mask"])
    assert torch.allclose(before, after, atol=1e-6)
    # each copy sits after the block it copies, with only its residual outputs zeroed (2 -> 4: blocks 1 and 3)
    zeroed = [i for i, layer in enumerate(grown.layers) if not layer.mlp.wo.weight.any()]
    assert zeroed == [1, 3]
    assert torch.equal(grown.layers[1].attention.qkv.weight, grown.layers[0].attention.qkv.weight)
    with pytest.raises(ValueError, match="model.num_hidden_layers=1: cannot shrink"):
        distill.build_student(load_config("distill", "tiny", [f"init={source_dir / 'final'}",
                                                              "model.num_hidden_layers=1"]))


def test_distill_resume_is_exact(setup, vocab_run, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    steps = ["--max-steps", "12", "--set", "train.checkpoint_every=4"]
    assert distill.main(distill_args(setup, vocab_run, straight, *steps)) == 0
    assert distill.main(distill_args(setup, vocab_run, resumed, *steps, "--set", "train.stop_at=6")) == 0
    assert not (resumed / "final").exists()
    assert distill.main(distill_args(setup, vocab_run, resumed, *steps)) == 0
    a = load_file(str(straight / "final" / "model.safetensors"))
    b = load_file(str(resumed / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r and "val_loss" not in r] == [5, 6, 10, 12]


def test_distill_refuses_a_checkpoint_of_another_run(setup, vocab_run, tmp_path, capsys):
    out = tmp_path / "run"
    assert distill.main(distill_args(setup, vocab_run, out, "--max-steps", "4", "--set", "train.stop_at=2")) == 0
    assert distill.main(distill_args(setup, vocab_run, out, "--max-steps", "8")) == 1
    assert "different run (max_steps differ)" in capsys.readouterr().err
    # asked for, a new length continues the checkpoint with a recomputed schedule, and says so
    assert distill.main(distill_args(setup, vocab_run, out, "--max-steps", "6", "--set", "train.reschedule=true")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["reschedules"] == [{"from_max_steps": 4, "to_max_steps": 6, "at_step": 2}]
