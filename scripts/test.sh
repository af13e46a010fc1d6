#!/usr/bin/env bash
# The test command of the README: install (idempotent), then run the whole suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
