"""The CPU speedrun recipe end to end on the tiny preset: the teacher recipe (distill-vocab -> distill ->
finetune -> reranker, all-MiniLM-L6-v2 from its package) and the pure one (corpus -> pretrain -> finetune)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_data import write_data_dir

pytestmark = pytest.mark.slow  # the CPU speedrun recipe end to end

RECIPE = Path(__file__).resolve().parents[2] / "training" / "recipes" / "speedrun_cpu.sh"


def run_recipe(tmp_path, out, **env_vars):
    data_dir = write_data_dir(tmp_path / "data")
    env = {**os.environ, "PRESET": "tiny", "OUT": str(out), "MEDEIR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable, **env_vars}  # the recipe must use this interpreter, venv activated or not
    return subprocess.run(["bash", str(RECIPE)], env=env, capture_output=True, text=True, timeout=900)


def test_speedrun_cpu_tiny_with_the_teacher(tmp_path):
    out = tmp_path / "speedrun"
    proc = run_recipe(tmp_path, out, TEACHER_CACHE=str(tmp_path / "teacher-cache"), RERANKER="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (out / "pretrain").exists()  # no MLM unless MLM_STEPS > 0
    distill = json.loads((out / "distill" / "summary.json").read_text())
    assert distill["final_val_loss"] < distill["first_val_loss"]
    assert "token embeddings from" in distill["init"]
    finetune = json.loads((out / "finetune" / "summary.json").read_text())
    assert finetune["final_loss"] < finetune["first_loss"] and finetune["teacher"] == "all-MiniLM-L6-v2"
    for stage in ("distill", "finetune"):
        assert (out / stage / "loss_curve.png").is_file()
    assert (out / "distill-vocab" / "static" / "modules.json").is_file()
    assert (out / "finetune" / "final" / "modules.json").is_file()


def test_speedrun_cpu_tiny(tmp_path):
    out = tmp_path / "speedrun"
    proc = run_recipe(tmp_path, out, TEACHER="none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    pretrain = json.loads((out / "pretrain" / "summary.json").read_text())
    assert pretrain["final_val_loss"] < pretrain["first_val_loss"]
    finetune = json.loads((out / "finetune" / "summary.json").read_text())
    assert finetune["final_loss"] < finetune["first_loss"]
    reranker = json.loads((out / "reranker" / "summary.json").read_text())
    assert reranker["steps"] > 0
    for stage in ("pretrain", "finetune", "reranker"):
        assert (out / stage / "loss_curve.png").is_file()
    assert (out / "finetune" / "final" / "modules.json").is_file()
