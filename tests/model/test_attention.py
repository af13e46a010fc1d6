"""ALiBi maths and numerical parity between the attention backends."""

from __future__ import annotations

import math

import pytest
import torch

from medeir_rag import MedeirConfig, MedeirForMaskedLM, MedeirModel
from medeir_rag.model.attention import alibi_bias, alibi_slopes, choose_backend


def test_slopes_power_of_two_heads_are_geometric():
    slopes = alibi_slopes(8)
    expected = torch.tensor([2.0 ** -(i + 1) for i in range(8)])
    torch.testing.assert_close(slopes, expected)


def test_slopes_for_twelve_heads_interleave_the_next_power_of_two():
    slopes = alibi_slopes(12)
    eight = [2.0 ** -(i + 1) for i in range(8)]
    sixteen_odd = [2.0 ** -(0.5 * (i + 1)) for i in range(16)][0::2][:4]
    torch.testing.assert_close(slopes, torch.tensor(eight + sixteen_odd))
    assert len(set(slopes.tolist())) == 12


def test_bias_is_symmetric_minus_slope_times_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, 6, 6)
    assert bias.shape == (4, 6, 6)
    torch.testing.assert_close(bias, bias.transpose(1, 2))
    assert bias[2, 1, 4].item() == pytest.approx(-slopes[2].item() * 3)
    block = alibi_bias(slopes, 2, 6, query_offset=3)
    torch.testing.assert_close(block, bias[:, 3:5])


def reference_encoder_output(model: MedeirModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Plain-PyTorch re-implementation (explicit softmax) to check every backend against."""
    cfg = model.config
    heads, dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    hidden = model.embeddings(ids)
    length = ids.shape[1]
    slopes = alibi_slopes(heads)
    distance = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs().float()
    bias = -slopes[:, None, None] * distance
    bias = bias[None].masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    for layer in model.layers:
        x = layer.attention_norm(hidden)
        q, k, v = layer.attention.qkv(x).view(*x.shape[:2], 3, heads, dim).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim) + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
        hidden = hidden + layer.attention.out(attended)
        hidden = hidden + layer.mlp(layer.mlp_norm(hidden))
    return model.final_norm(hidden)


@pytest.fixture()
def padded_batch():
    torch.manual_seed(1)
    ids = torch.randint(5, 300, (3, 41))
    mask = torch.ones_like(ids)
    mask[1, 25:] = 0
    mask[2, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("backend", ["sdpa", "blocked", "flex"])
def test_backends_match_the_reference(backend, padded_batch):
    ids, mask = padded_batch
    torch.manual_seed(0)
    config = MedeirConfig.from_preset("tiny", vocab_size=300, attention_backend=backend, attention_block_size=16)
    model = MedeirModel(config).eval()
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).last_hidden_state
        want = reference_encoder_output(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-4)
    if backend == "flex":  # unpadded path writes zeros at padding positions
        assert torch.all(got[~real] == 0)


def test_padding_does_not_change_a_sequence(padded_batch):
    ids, mask = padded_batch
    model = MedeirModel(MedeirConfig.from_preset("tiny", vocab_size=300)).eval()
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model(input_ids=ids[2:3, :6]).last_hidden_state
    torch.testing.assert_close(batched[2, :6], alone[0], atol=1e-5, rtol=1e-4)


def test_gradients_agree_between_sdpa_and_blocked(padded_batch):
    ids, mask = padded_batch
    grads = {}
    for backend in ("sdpa", "blocked"):
        torch.manual_seed(0)
        config = MedeirConfig.from_preset("tiny", vocab_size=300, attention_backend=backend, attention_block_size=8)
        model = MedeirModel(config)
        model(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()].pow(2).mean().backward()
        grads[backend] = model.layers[0].attention.qkv.weight.grad
    torch.testing.assert_close(grads["sdpa"], grads["blocked"], atol=1e-6, rtol=1e-4)


def test_auto_backend_choice():
    common = dict(device=torch.device("cpu"), num_heads=12, blocked_threshold=2**26, training=False, dropout=0.0)
    assert choose_backend("auto", batch_size=32, length=128, **common) == "sdpa"
    assert choose_backend("auto", batch_size=1, length=8192, **common) == "blocked"
    assert choose_backend("flex", batch_size=1, length=8, **common) == "flex"
    with pytest.raises(RuntimeError, match="flash"):
        choose_backend("flash", batch_size=1, length=8, **common)


def test_model_trained_at_512_tokens_runs_at_8192():
    """Train a tiny MLM at 512 tokens, then encode one 8,192-token input (auto -> blocked)."""
    torch.manual_seed(0)
    config = MedeirConfig.from_preset("tiny", vocab_size=300)
    model = MedeirForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):  # a learnable pattern: each token is its left neighbour + 7 (mod 50)
        ids = 5 + (torch.arange(512)[None, :] * 7 + torch.randint(0, 50, (2, 1))) % 50
        labels = torch.full_like(ids, -100)
        masked = torch.rand(ids.shape) < 0.3
        labels[masked] = ids[masked]
        loss = model(input_ids=ids.masked_fill(masked, 4), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3])

    encoder = model.medeir.eval()
    long_ids = torch.randint(5, 300, (1, 8192))
    with torch.no_grad():
        out = encoder(input_ids=long_ids).last_hidden_state
    assert out.shape == (1, 8192, 64)
    assert torch.isfinite(out).all()
    # the memory-bounded path computes the same function as the full-bias one
    encoder.config.attention_backend = "sdpa"
    with torch.no_grad():
        full = encoder(input_ids=long_ids[:, :2048]).last_hidden_state
    encoder.config.attention_backend = "blocked"
    with torch.no_grad():
        blocked = encoder(input_ids=long_ids[:, :2048]).last_hidden_state
    torch.testing.assert_close(full, blocked, atol=2e-5, rtol=1e-4)


def test_input_over_the_maximum_length_is_rejected():
    model = MedeirModel(MedeirConfig.from_preset("tiny", vocab_size=300, max_position_embeddings=64))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=64"):
        model(input_ids=torch.ones((1, 65), dtype=torch.long))


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_alibi_slopes_are_built_once_not_in_every_forward(backend, padded_batch, tmp_path, monkeypatch):
    import medeir_rag.model.modeling as modeling

    ids, mask = padded_batch
    torch.manual_seed(0)
    config = MedeirConfig.from_preset("tiny", vocab_size=300, attention_backend=backend)
    model = MedeirModel(config).eval()
    assert "alibi_slopes" not in model.state_dict()  # a non-persistent buffer: checkpoints are unchanged
    model.save_pretrained(tmp_path)
    # from_pretrained builds on the meta device: the buffer must be set again, not left as garbage
    loaded, info = MedeirModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for m in (model, loaded):
        torch.testing.assert_close(m.alibi_slopes, alibi_slopes(config.num_attention_heads), rtol=0, atol=0)

    def refuse(*args, **kwargs):
        raise AssertionError("alibi_slopes() recomputed in forward")

    monkeypatch.setattr(modeling, "alibi_slopes", refuse)
    real = mask.bool()
    with torch.no_grad():
        want = reference_encoder_output(model, ids, mask)
        for m in (model, loaded.eval()):
            got = m(input_ids=ids, attention_mask=mask).last_hidden_state
            torch.testing.assert_close(got[real], want[real], atol=2e-5, rtol=1e-4)
