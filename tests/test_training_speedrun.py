"""The CPU speedrun recipe end to end (corpus -> pretrain -> finetune -> reranker), tiny preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training_data import write_data_dir

RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "speedrun_cpu.sh"


def test_speedrun_cpu_tiny(tmp_path):
    data_dir = write_data_dir(tmp_path / "data")
    out = tmp_path / "speedrun"
    env = {**os.environ, "PRESET": "tiny", "OUT": str(out), "MEDEIR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1",
           "PYTHON": sys.executable}  # the recipe must use this interpreter, venv activated or not
    proc = subprocess.run(["bash", str(RECIPE)], env=env, capture_output=True, text=True, timeout=900)
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
