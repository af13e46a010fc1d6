#!/usr/bin/env bash
# The whole training pipeline on a CPU: corpus -> MLM pretraining -> contrastive
# fine-tuning -> cross-encoder reranker. See training/recipes/README.md.
#
#   bash training/recipes/speedrun_cpu.sh                 # PRESET=cpu: ~45-50 min on 2 cores
#   PRESET=tiny OUT=/tmp/speedrun bash training/recipes/speedrun_cpu.sh   # ~2-3 min smoke run
#
# Environment: PRESET (tiny|cpu; default cpu), OUT (default runs/speedrun-$PRESET),
# MEDEIR_DATA_DIR (default ../shared/data), PYTHON (default python).
set -euo pipefail

PRESET=${PRESET:-cpu}
RERANKER_INIT=${RERANKER_INIT:-finetune}   # finetune | pretrain
OUT=${OUT:-runs/speedrun-$PRESET}
export MEDEIR_DATA_DIR=${MEDEIR_DATA_DIR:-../shared/data}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python}

# 1. corpus: the allowed sources minus evaluation documents, deduplicated, sharded
case "$PRESET" in
  tiny) CORPUS_ARGS=(--max-docs 300 --num-shards 2) ;;
  cpu)  CORPUS_ARGS=(--inputs pretrain/pubmed_abstracts_bionlp.jsonl.gz pretrain/bio_sentences_scibert.jsonl.gz
                     pretrain/go_definitions.jsonl.gz medquad/medquad_train_pairs.jsonl.gz
                     general/wordnet30_glosses.jsonl.gz) ;;
  *)    CORPUS_ARGS=() ;;
esac
$PY -m medeir_rag.training.corpus --out "$OUT/corpus" --data-dir "$MEDEIR_DATA_DIR" "${CORPUS_ARGS[@]}"

# 2. MLM pretraining (rerunning this script resumes from the last checkpoint)
$PY -m medeir_rag.training.pretrain --config "$PRESET" --out "$OUT/pretrain" --corpus "$OUT/corpus"

# 3. contrastive fine-tuning -> $OUT/finetune/final, a sentence-transformers folder
$PY -m medeir_rag.training.finetune --config "$PRESET" --init "$OUT/pretrain/final" --out "$OUT/finetune" \
    --data-dir "$MEDEIR_DATA_DIR"

# 3b. hybrid weight: alpha chosen on held-out training-split pairs -> $OUT/finetune/final/hybrid.json
#     (the tiny preset's synthetic data holds out too few records for it: tests/test_training_hybrid.py covers it)
if [ "$PRESET" != tiny ]; then
  $PY -m medeir_rag.training.hybrid --model "$OUT/finetune/final" --out "$OUT/hybrid" --data-dir "$MEDEIR_DATA_DIR"
fi

# 4. reranker -> $OUT/reranker/final, a CrossEncoder folder; it starts from the fine-tuned
#    encoder by default (RERANKER_INIT=pretrain starts from the MLM backbone)
$PY -m medeir_rag.training.reranker --config "$PRESET" --init "$OUT/$RERANKER_INIT/final" --out "$OUT/reranker" \
    --data-dir "$MEDEIR_DATA_DIR"

echo "done: $OUT/{pretrain,finetune,reranker}/summary.json"
for stage in pretrain finetune reranker; do
  echo "== $stage"; cat "$OUT/$stage/summary.json"
done
