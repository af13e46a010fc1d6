"""benchmarks/gpu_check.py: without a CUDA device it says so and exits 0; its code paths run (small, on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def _run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=timeout)


def test_without_cuda_it_exits_cleanly_with_a_message(tmp_path):
    done = _run(["--json", str(tmp_path / "out.json")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no CUDA device" in done.stdout and "nothing was checked" in done.stdout
    assert "Traceback" not in done.stderr
    assert "no CUDA device" in json.loads((tmp_path / "out.json").read_text())["skipped"]


def test_the_sections_run_on_a_cpu_dry_run(tmp_path):
    pytest.importorskip("torch")
    done = _run(["--_dry-run-cpu", "--sections", "parity", "throughput", "memory", "--lengths", "48",
                 "--batch-512", "1", "--matmul-size", "64", "--memory-tokens", "64", "--json", str(tmp_path / "d.json")],
                tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["device"] == "cpu (dry run)"
    assert {r["backend"] for r in report["parity"]["rows"]} >= {"sdpa", "flex"}
    assert all(r["pass"] for r in report["parity"]["rows"])
    assert [r["dtype"] for r in report["throughput"]["rows"]] == ["bf16", "fp32"]
    assert report["memory"]["pass"]
