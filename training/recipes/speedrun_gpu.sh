#!/usr/bin/env bash
# The whole training pipeline on GPUs with the `small` presets (one GPU: ~20 min of
# pretraining, estimated, not yet measured) or `base` (several GPUs). See README.md.
# TEACHER=none (the default here) is MedEIR's pure recipe: MLM pretraining from scratch, then
# contrastive fine-tuning. TEACHER=all-MiniLM-L6-v2 (or a sentence-transformers folder) runs
# distill-vocab -> short MLM (MLM_STEPS, default the preset's) -> distill before fine-tuning.
#
#   bash training/recipes/speedrun_gpu.sh                       # PRESET=small, 1 GPU
#   PRESET=base NPROC=8 bash training/recipes/speedrun_gpu.sh   # torchrun on 8 GPUs
#   TEACHER=all-MiniLM-L6-v2 bash training/recipes/speedrun_gpu.sh
#
# Environment: PRESET (small|base; default small), NPROC (GPUs per node; default 1),
# OUT (default runs/speedrun-$PRESET), TEACHER (default none), MEDEIR_DATA_DIR (default ../shared/data).
set -euo pipefail

PRESET=${PRESET:-small}
RERANKER_INIT=${RERANKER_INIT:-finetune}   # finetune | pretrain
NPROC=${NPROC:-1}
TEACHER=${TEACHER:-none}
OUT=${OUT:-runs/speedrun-$PRESET}
export MEDEIR_DATA_DIR=${MEDEIR_DATA_DIR:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

python -m medeir_rag.training.corpus --out "$OUT/corpus" --data-dir "$MEDEIR_DATA_DIR" --num-shards 8
# Multi-node: replace --standalone by --nnodes N --node_rank R --rdzv_endpoint HOST:PORT.
if [ "$TEACHER" = none ]; then
  torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.pretrain \
      --config "$PRESET" --out "$OUT/pretrain" --corpus "$OUT/corpus"
  EMBEDDER_INIT="$OUT/pretrain/final"
  FINETUNE_TEACHER=()
else
  python -m medeir_rag.training.distill_vocab --config "$PRESET" --out "$OUT/distill-vocab" --teacher "$TEACHER" \
      --data-dir "$MEDEIR_DATA_DIR"
  DISTILL_INIT="$OUT/distill-vocab"
  if [ "${MLM_STEPS:-0}" -gt 0 ]; then
    torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.pretrain \
        --config "$PRESET" --out "$OUT/pretrain" --corpus "$OUT/corpus" --max-steps "$MLM_STEPS"
    DISTILL_INIT="$OUT/pretrain/final"
  fi
  python -m medeir_rag.training.distill --config "$PRESET" --init "$DISTILL_INIT" --out "$OUT/distill" \
      --teacher "$TEACHER" --data-dir "$MEDEIR_DATA_DIR"
  EMBEDDER_INIT="$OUT/distill/final"
  FINETUNE_TEACHER=(--set "teacher.name=$TEACHER")
fi
torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.finetune \
    --config "$PRESET" --init "$EMBEDDER_INIT" --out "$OUT/finetune" --data-dir "$MEDEIR_DATA_DIR" "${FINETUNE_TEACHER[@]}"
python -m medeir_rag.training.hybrid --model "$OUT/finetune/final" --out "$OUT/hybrid" --data-dir "$MEDEIR_DATA_DIR"
torchrun --standalone --nproc_per_node "$NPROC" -m medeir_rag.training.reranker \
    --config "$PRESET" --init "$OUT/$RERANKER_INIT/final" --out "$OUT/reranker" --data-dir "$MEDEIR_DATA_DIR"

for stage in distill-vocab pretrain distill finetune reranker; do
  if [ -f "$OUT/$stage/summary.json" ]; then echo "== $stage"; cat "$OUT/$stage/summary.json"; fi
done
