#!/usr/bin/env bash
# Create .venv (once) and install medeir_rag with every extra. torch is pinned by
# .ci/constraints.txt to the CPU build that lies on this workplace's disk; the package
# itself only asks for torch>=2.4, so on your own machine any recent build works.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c .ci/constraints.txt -e ".[all]"
