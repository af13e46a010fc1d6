"""MLM pretraining stage: masking, data order, loss falls, exact resume, DDP on gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_data import word_tokenizer, write_data_dir

from medeir_rag.training import pretrain
from medeir_rag.training.config import CorpusConfig
from medeir_rag.training.corpus import build_corpus
from medeir_rag.training.mlm_data import (
    PackedWindows,
    bits_per_byte,
    mask_tokens,
    phase_bounds,
    sample_indices,
    token_byte_lengths,
)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A synthetic data folder, a tokenizer trained on it, and a prepared corpus."""
    root = tmp_path_factory.mktemp("pretrain")
    data_dir = write_data_dir(root / "data")
    tokenizer = word_tokenizer()
    tokenizer.save_pretrained(str(root / "tokenizer"))
    config = CorpusConfig(inputs=["pretrain/pubmed_abstracts_bionlp.jsonl.gz", "medquad/medquad_train_pairs.jsonl.gz",
                                  "pretrain/go_definitions.jsonl.gz"],
                          data_dir=str(data_dir), holdout_percent=10, num_shards=2, tokenizer=str(root / "tokenizer"))
    build_corpus(config, root / "corpus", show_progress=False)
    return {"root": root, "data": data_dir, "tokenizer": root / "tokenizer", "corpus": root / "corpus"}


def base_args(assets, out: Path, steps: int) -> list[str]:
    return [
        "--config", "tiny", "--out", str(out), "--corpus", str(assets["corpus"]), "--tokenizer", str(assets["tokenizer"]),
        "--max-steps", str(steps),
        "--set", "data.curriculum=[{seq_len: 16, fraction: 0.6}, {seq_len: 32, fraction: 0.4}]",
        "--set", "train.batch_tokens=512", "--set", "eval.seq_len=32", "--set", "train.log_every=2",
    ]


# ----------------------------------------------------------------------------
# Pure pieces


def test_mask_tokens_follows_bert_recipe():
    ids = torch.randint(5, 1000, (64, 128))
    ids[:, 0] = 2  # [CLS] is never chosen
    gen = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(ids, vocab_size=1000, mask_id=4, rate=0.3, generator=gen)
    chosen = labels != -100
    assert not chosen[:, 0].any()
    assert abs(chosen.float().mean().item() - 0.3) < 0.02
    assert torch.equal(labels[chosen], ids[chosen])
    as_mask = (inputs[chosen] == 4).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # random replacements: the other ~10%
    assert torch.equal(inputs[~chosen], ids[~chosen])
    again = mask_tokens(ids, vocab_size=1000, mask_id=4, rate=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs)  # a pure function of the seed


def test_data_order_is_a_function_of_the_step():
    assert phase_bounds([0.7, 0.3], 10) == [0, 7, 10]
    assert phase_bounds([1.0], 5) == [0, 5]
    first = sample_indices(0, 0, 10, 0, 10)
    assert sorted(first.tolist()) == list(range(10))  # one epoch is a permutation
    assert np.array_equal(sample_indices(0, 0, 10, 4, 3), first[4:7])  # a later slice reads the same samples
    assert not np.array_equal(sample_indices(0, 0, 10, 10, 10), first)  # next epoch, new order
    windows = PackedWindows(np.arange(5, 40, dtype=np.uint16), seq_len=8, cls_id=2)
    assert len(windows) == 5
    batch = windows.get(np.array([1]))
    assert batch.tolist() == [[2, 12, 13, 14, 15, 16, 17, 18]]


def test_bits_per_byte(assets):
    from medeir_rag.model.tokenization import load_tokenizer

    tokenizer = load_tokenizer(assets["tokenizer"])
    lengths = token_byte_lengths(tokenizer)
    vocab = tokenizer.get_vocab()
    assert lengths[tokenizer.cls_token_id] == 0
    assert lengths[vocab["the"]] == 4  # "the" + a separator
    assert lengths[vocab["##y"]] == 1  # a continuation piece: no separator byte
    assert bits_per_byte(np.log(2) * 8, 4) == pytest.approx(2.0)


# ----------------------------------------------------------------------------
# The stage


def test_pretrain_loss_falls_and_writes_outputs(assets, tmp_path):
    from medeir_rag import MedeirForMaskedLM
    from medeir_rag.model.tokenization import load_tokenizer

    out = tmp_path / "run"
    assert pretrain.main([*base_args(assets, out, 100), "--set", "eval.every=50"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert summary["final_val_loss"] < summary["first_val_loss"] - 1.0
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    assert summary["steps"] == 100 and summary["tokens_seen"] == 100 * 512
    assert 0 < summary["final_val_bpb"] < 10 and 0 <= summary["final_val_accuracy"] <= 1
    assert {r["seq_len"] for r in rows if "seq_len" in r} == {16, 32}  # the curriculum ran
    for name in ("config.yaml", "loss_curve.png", "metrics.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000080", "step_000100"]  # checkpoint_every 20, keep 2
    model = MedeirForMaskedLM.from_pretrained(str(out / "final"))
    assert model.config.vocab_size == len(load_tokenizer(out / "final"))


def test_exact_resume(assets, tmp_path):
    """N steps straight == N/2 steps, stop, resume for N/2 (weights, bit for bit)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    extra = ["--set", "eval.every=100", "--set", "train.checkpoint_every=100",
             "--set", "model.hidden_dropout_prob=0.1"]  # dropout: the RNG state must be restored too
    assert pretrain.main([*base_args(assets, straight, 8), *extra]) == 0
    assert pretrain.main([*base_args(assets, resumed, 8), *extra, "--set", "train.stop_at=4"]) == 0
    assert not (resumed / "final").exists()
    assert (resumed / "checkpoints" / "step_000004" / "state.json").is_file()
    assert pretrain.main([*base_args(assets, resumed, 8), *extra]) == 0
    a = load_file(straight / "final" / "model.safetensors")
    b = load_file(resumed / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]  # no duplicated rows after the resume


def test_resume_refuses_a_different_run(assets, tmp_path, capsys):
    out = tmp_path / "run"
    assert pretrain.main([*base_args(assets, out, 4), "--set", "train.stop_at=2"]) == 0
    assert pretrain.main([*base_args(assets, out, 4), "--set", "model.num_hidden_layers=1"]) == 1
    assert "different run" in capsys.readouterr().err


def test_too_small_corpus_is_a_clear_error(assets, tmp_path, capsys):
    code = pretrain.main([*base_args(assets, tmp_path / "run", 2),
                          "--set", "data.curriculum=[{seq_len: 100000, fraction: 1.0}]",
                          "--set", "train.batch_tokens=100000"])
    assert code == 1
    assert "not enough for one sequence" in capsys.readouterr().err


@pytest.mark.slow  # two torchrun processes
def test_ddp_two_processes_on_gloo(assets, tmp_path):
    """torchrun with two CPU processes: one process group, one set of outputs."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medeir_rag.training.pretrain", *base_args(assets, out, 6), "--set", "eval.every=3"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["tokens_seen"] == 6 * 512 * 2  # batch_tokens per process
    assert proc.stdout.count("step 6: val_loss") + proc.stderr.count("step 6: val_loss") == 1  # rank 0 prints
    assert (out / "final" / "model.safetensors").is_file()


def test_prepares_its_own_corpus_from_the_allowed_sources(assets, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--config", "tiny", "--out", str(out), "--tokenizer", str(assets["tokenizer"]), "--max-steps", "2",
            "--set", f"data.corpus_config.data_dir={assets['data']}", "--set", "data.corpus_config.holdout_percent=10",
            "--set", "data.curriculum=[{seq_len: 16, fraction: 1.0}]", "--set", "train.batch_tokens=64",
            "--set", "eval.seq_len=16"]
    assert pretrain.main(args) == 0
    manifest = json.loads((out / "corpus" / "corpus.json").read_text())
    assert set(manifest["sources"]) == {"pubmed_abstracts", "bio_sentences", "go_definitions",
                                        "medquad_train_pairs", "gcide", "wordnet_glosses"}
    assert manifest["sources"]["pubmed_abstracts"]["excluded_text"] == 1  # the SciFact abstract
    # a different corpus config must not silently reuse (or resume on) the prepared corpus
    assert pretrain.main([*args, "--set", "data.corpus_config.max_docs=5"]) == 1
    assert "another data.corpus_config" in capsys.readouterr().err
