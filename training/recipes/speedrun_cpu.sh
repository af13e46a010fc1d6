#!/usr/bin/env bash
# The whole training pipeline on a CPU. Default (a teacher): distill-vocab -> distill ->
# contrastive fine-tuning (teacher-filtered negatives) -> tune-hybrid -> reranker.
# TEACHER=none: the pure recipe (MedEIR's, meant for GPUs): corpus -> MLM pretraining ->
# fine-tuning -> tune-hybrid -> reranker. See training/recipes/README.md.
#
#   bash training/recipes/speedrun_cpu.sh                 # PRESET=cpu: ~1.5 h on 2 cores with the teacher
#   PRESET=tiny OUT=/tmp/speedrun bash training/recipes/speedrun_cpu.sh   # smoke run
#   TEACHER=none bash training/recipes/speedrun_cpu.sh    # no teacher: MLM from scratch, then fine-tuning
#
# Environment: PRESET (tiny|cpu; default cpu), OUT (default runs/speedrun-$PRESET),
# TEACHER (all-MiniLM-L6-v2 | a sentence-transformers folder | none), TEACHER_CACHE (teacher
# embedding cache; default ~/.cache/medeir/teacher), MLM_STEPS (teacher recipe: optional short
# MLM pretraining between distill-vocab and distill; default 0 = off), RERANKER (1 | 0),
# MEDEIR_DATA_DIR (default ../shared/data), PYTHON (default python).
# Rerunning the script resumes every stage from its last checkpoint.
set -euo pipefail

PRESET=${PRESET:-cpu}
OUT=${OUT:-runs/speedrun-$PRESET}
TEACHER=${TEACHER:-all-MiniLM-L6-v2}
MLM_STEPS=${MLM_STEPS:-0}
RERANKER=${RERANKER:-1}
export MEDEIR_DATA_DIR=${MEDEIR_DATA_DIR:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}
TEACHER_SET=()
if [ -n "${TEACHER_CACHE:-}" ]; then TEACHER_SET=(--set "teacher.cache_dir=$TEACHER_CACHE"); fi

case "$PRESET" in
  tiny) CORPUS_ARGS=(--max-docs 300 --num-shards 2) ;;
  cpu)  CORPUS_ARGS=(--inputs pretrain/pubmed_abstracts_bionlp.jsonl.gz pretrain/bio_sentences_scibert.jsonl.gz
                     pretrain/go_definitions.jsonl.gz medquad/medquad_train_pairs.jsonl.gz
                     general/wordnet30_glosses.jsonl.gz) ;;
  *)    CORPUS_ARGS=() ;;
esac

pretrain() {  # corpus (allowed sources minus evaluation documents) + MLM; extra args go to pretrain
  $PY -m medeir_rag.training.corpus --out "$OUT/corpus" --data-dir "$MEDEIR_DATA_DIR" "${CORPUS_ARGS[@]}"
  $PY -m medeir_rag.training.pretrain --config "$PRESET" --out "$OUT/pretrain" --corpus "$OUT/corpus" "$@"
}

if [ "$TEACHER" = none ]; then
  pretrain
  EMBEDDER_INIT="$OUT/pretrain/final"
  FINETUNE_TEACHER=()
else
  # 1. static vectors of our vocabulary from the teacher (they initialise the token embeddings)
  $PY -m medeir_rag.training.distill_vocab --config "$PRESET" --out "$OUT/distill-vocab" --teacher "$TEACHER" \
      --data-dir "$MEDEIR_DATA_DIR" "${TEACHER_SET[@]}"
  DISTILL_INIT="$OUT/distill-vocab"
  if [ "$MLM_STEPS" -gt 0 ]; then  # 1b. optional short MLM (random init) before distillation
    pretrain --max-steps "$MLM_STEPS"
    DISTILL_INIT="$OUT/pretrain/final"
  fi
  # 2. the encoder reproduces the teacher's sentence embeddings
  $PY -m medeir_rag.training.distill --config "$PRESET" --init "$DISTILL_INIT" --out "$OUT/distill" \
      --teacher "$TEACHER" --data-dir "$MEDEIR_DATA_DIR" "${TEACHER_SET[@]}"
  EMBEDDER_INIT="$OUT/distill/final"
  FINETUNE_TEACHER=(--set "teacher.name=$TEACHER" "${TEACHER_SET[@]}")
fi

# 3. contrastive fine-tuning -> $OUT/finetune/final (the teacher, if any, filters false negatives)
$PY -m medeir_rag.training.finetune --config "$PRESET" --init "$EMBEDDER_INIT" --out "$OUT/finetune" \
    --data-dir "$MEDEIR_DATA_DIR" "${FINETUNE_TEACHER[@]}"

# 4. hybrid weight on held-out training-split pairs -> $OUT/finetune/final/hybrid.json
#    (the tiny preset's synthetic data holds out too few records: tests/training/test_training_hybrid.py covers it)
if [ "$PRESET" != tiny ]; then
  $PY -m medeir_rag.training.hybrid --model "$OUT/finetune/final" --out "$OUT/hybrid" --data-dir "$MEDEIR_DATA_DIR"
fi

# 5. reranker from the fine-tuned encoder -> $OUT/reranker/final (ship it only if `medeir evaluate`
#    shows the reranked hybrid above the hybrid on every set)
if [ "$RERANKER" = 1 ]; then
  $PY -m medeir_rag.training.reranker --config "$PRESET" --init "$OUT/finetune/final" --out "$OUT/reranker" \
      --data-dir "$MEDEIR_DATA_DIR"
fi

# 6. package (by hand, after `medeir evaluate --model $OUT/finetune/final`):
#    python -m medeir_rag.training.package_model --embedder "$OUT/finetune/final" --card docs/MODEL_CARD.md
for stage in distill-vocab pretrain distill finetune reranker; do
  if [ -f "$OUT/$stage/summary.json" ]; then echo "== $stage"; cat "$OUT/$stage/summary.json"; fi
done
