#!/usr/bin/env bash
# The main job of the README: install, index the bundled sample corpus into an embedded
# (on-disk) Qdrant with the bundled model, and answer a query. Offline; nothing leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 HAYSTACK_TELEMETRY_ENABLED=False
.venv/bin/medeir index --sample
.venv/bin/medeir query "${1:-What is the first-line drug treatment for type 2 diabetes?}" --top-k 3
