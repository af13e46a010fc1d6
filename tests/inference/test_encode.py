"""The encode path: batching, pooling, Matryoshka, over-long policy and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medeir_rag.inference.encode import batches_by_token_budget, encode
from medeir_rag.inference.encoder import MedeirEncoder

TEXTS = [
    "Metformin lowers blood glucose in patients with type 2 diabetes mellitus.",
    "Asthma",
    "",
    "Chest radiography showed bilateral infiltrates consistent with pneumonia. " * 3,
    "What are the symptoms of glaucoma?",
]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir) -> MedeirEncoder:
    return MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32")


def test_shapes_norms_and_single_string(encoder):
    embeddings = encoder.encode(TEXTS)
    assert embeddings.shape == (5, 64) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    single = encoder.encode(TEXTS[0])
    assert single.shape == (64,)
    np.testing.assert_allclose(single, embeddings[0], atol=1e-6)
    assert encoder.encode([]).shape == (0, 64)


def test_empty_string_has_a_defined_embedding(encoder):
    empty = encoder.encode([""])
    assert np.isfinite(empty).all()
    np.testing.assert_allclose(empty, encoder.encode(["", "Asthma"])[:1], atol=1e-6)


def test_batching_by_token_budget_does_not_change_results(encoder):
    big = encode(encoder.model, encoder.tokenizer, TEXTS, batch_tokens=100_000)
    small = encode(encoder.model, encoder.tokenizer, TEXTS, batch_tokens=1, max_batch_size=1)
    np.testing.assert_allclose(big, small, atol=1e-5)


def test_token_budget_batches_cover_every_index_once():
    lengths = [5, 50, 7, 49, 3, 100, 2]
    batches = batches_by_token_budget(lengths, batch_tokens=100, max_batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 100
        assert lengths[batch[0]] == max(lengths[i] for i in batch)
    quadratic = batches_by_token_budget(lengths, batch_tokens=10_000, max_batch_size=8, max_attention_elements=5000)
    for batch in quadratic:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) ** 2 <= 5000


def test_truncate_dim_truncates_then_normalises(encoder):
    full = encoder.encode(TEXTS, normalize=False)
    truncated = encoder.encode(TEXTS, truncate_dim=16)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(truncated, expected, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim"):
        encoder.encode(TEXTS, truncate_dim=65)


def test_prompts_change_the_embedding(encoder):
    assert encoder.prompts["query"] == "query: "
    query = encoder.encode_query(TEXTS[:1])
    document = encoder.encode_document(TEXTS[:1])
    np.testing.assert_allclose(query, encoder.encode(TEXTS[:1], prompt="query: "), atol=1e-6)
    assert not np.allclose(query, document)
    with pytest.raises(KeyError, match="no prompt named"):
        encoder.encode(TEXTS, prompt_name="nope")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (None, "got None"),
        (5, "got int"),
        ([None], r"texts\[0\] must be a string, got NoneType"),
        (["ok", 3.5], r"texts\[1\] must be a string, got float"),
        ({"a": "b"}, "got dict"),
        (b"bytes", "got bytes"),
    ],
)
def test_bad_input_is_a_clear_type_error(encoder, bad, message):
    with pytest.raises(TypeError, match=message):
        encoder.encode(bad)


# -----------------------------------------------------------------------------
# inputs longer than the window


@pytest.fixture()
def short_window_encoder(tiny_model_dir) -> MedeirEncoder:
    encoder = MedeirEncoder(tiny_model_dir, device="cpu", precision="fp32")
    encoder.max_length = 12
    return encoder


LONG = "metformin lowers blood glucose in patients with diabetes " * 4


def test_overlong_error_policy(short_window_encoder):
    with pytest.raises(ValueError, match="exceed the 12-token window"):
        short_window_encoder.encode([LONG, "asthma"], overlong="error")


def test_overlong_truncate_warns_and_keeps_the_first_window(short_window_encoder, caplog):
    tokenizer = short_window_encoder.tokenizer
    with caplog.at_level(logging.WARNING, logger="medeir_rag.inference.encode"):
        truncated = short_window_encoder.encode([LONG], overlong="truncate")
    assert "1 of 1 input(s) exceed the 12-token window" in caplog.text
    first_ten = tokenizer.decode(tokenizer(LONG, add_special_tokens=False)["input_ids"][:10])
    np.testing.assert_allclose(truncated, short_window_encoder.encode([first_ten]), atol=1e-5)


def test_overlong_chunk_is_the_token_weighted_mean_of_windows(short_window_encoder):
    tokenizer = short_window_encoder.tokenizer
    ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    windows = [[tokenizer.cls_token_id, *ids[i : i + 10], tokenizer.sep_token_id] for i in range(0, len(ids), 10)]
    with torch.no_grad():
        parts = [
            short_window_encoder.model(input_ids=torch.tensor([w])).last_hidden_state[0].mean(0).numpy()
            for w in windows
        ]
    weights = np.array([len(w) for w in windows], dtype=np.float32)[:, None]
    expected = (np.stack(parts) * weights).sum(0) / weights.sum()
    expected /= np.linalg.norm(expected)
    chunked = short_window_encoder.encode([LONG], overlong="chunk")
    np.testing.assert_allclose(chunked[0], expected, atol=1e-5)


def test_unknown_overlong_policy(encoder):
    with pytest.raises(ValueError, match="overlong must be one of"):
        encoder.encode(["x"], overlong="ignore")


def test_encode_leaves_training_mode_alone(encoder):
    encoder.model.train()
    encoder.encode(["x"])
    assert encoder.model.training
    encoder.model.eval()
    assert torch.is_grad_enabled()


def test_overlong_chunk_puts_the_prompt_in_every_window(short_window_encoder):
    tokenizer, model = short_window_encoder.tokenizer, short_window_encoder.model
    prompt = "query: "
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    body = 12 - 2 - len(prompt_ids)
    windows = [
        [tokenizer.cls_token_id, *prompt_ids, *ids[i : i + body], tokenizer.sep_token_id]
        for i in range(0, len(ids), body)
    ]
    seen: list[list[int]] = []

    def record(module, args, kwargs):
        for row, mask in zip(kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist(), strict=True):
            seen.append(row[: sum(mask)])

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        chunked = short_window_encoder.encode([LONG], prompt=prompt, overlong="chunk")
    finally:
        handle.remove()
    assert sorted(seen) == sorted(windows) and len(windows) > 2  # before: only the first window had the prompt
    with torch.no_grad():
        parts = [model(input_ids=torch.tensor([w])).last_hidden_state[0].mean(0).numpy() for w in windows]
    weights = np.array([len(w) for w in windows], dtype=np.float32)[:, None]
    expected = (np.stack(parts) * weights).sum(0) / weights.sum()
    np.testing.assert_allclose(chunked[0], expected / np.linalg.norm(expected), atol=1e-5)
    with pytest.raises(ValueError, match="the prompt takes .* no room for text"):
        short_window_encoder.encode([LONG], prompt="query: " * 5, overlong="chunk")
