#!/usr/bin/env bash
# The whole training pipeline on GPUs with the `small` presets (one GPU: ~20 min of
# pretraining, estimated, not yet measured) or `base` (several GPUs). See README.md.
#
#   bash training/recipes/speedrun_gpu.sh                       # PRESET=small, 1 GPU
#   PRESET=base NPROC=8 bash training/recipes/speedrun_gpu.sh   # torchrun on 8 GPUs
#
# Environment: PRESET (small|base; default small), NPROC (GPUs per node; default 1),
# OUT (default runs/speedrun-$PRESET), MEDEIR_DATA_DIR (default ../shared/data).
set -euo pipefail

PRESET=${PRESET:-small}
RERANKER_INIT=${RERANKER_INIT:-finetune}   # finetune | pretrain
NPROC=${NPROC:-1}
OUT=${OUT:-runs/speedrun-$PRESET}
export MEDEIR_DATA_DIR=${MEDEIR_DATA_DIR:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

python -m medeir_rag.training.corpus --out "$OUT/corpus" --data-dir "$MEDEIR_DATA_DIR" --num-shards 8
# Multi-node: replace --standalone by --nnodes N --node_rank R --rdzv_endpoint HOST:PORT.
torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.pretrain \
    --config "$PRESET" --out "$OUT/pretrain" --corpus "$OUT/corpus"
torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.finetune \
    --config "$PRESET" --init "$OUT/pretrain/final" --out "$OUT/finetune" --data-dir "$MEDEIR_DATA_DIR"
python -m medeir_rag.training.hybrid --model "$OUT/finetune/final" --out "$OUT/hybrid" --data-dir "$MEDEIR_DATA_DIR"
torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.reranker \
    --config "$PRESET" --init "$OUT/$RERANKER_INIT/final" --out "$OUT/reranker" --data-dir "$MEDEIR_DATA_DIR"

for stage in pretrain finetune reranker; do
  echo "== $stage"; cat "$OUT/$stage/summary.json"
done
