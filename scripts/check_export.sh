#!/usr/bin/env bash
# Merged export, run end to end: a few finetune steps on MiniLM with its pooler (the head
# BertForSequenceClassification computes), predict's probabilities with the adapter
# unmerged, examples/export.rs, then transformers loads the export
# (scripts/check_export_in_transformers.py) and must give PEFT's unmerged logits and
# burn-lora's probabilities within 1e-4. Needs the reference venv (made if missing) and
# the checkpoints (scripts/fetch-models.sh); not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
VENV="${VENV:-$HOME/.cache/burn-lora-venv}"
OUT="${OUT:-runs/export-check}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers peft safetensors
fi
scripts/fetch-models.sh all
cargo build -q --features wgpu,learner,hub --example finetune --example predict --example export
bin="$CARGO_TARGET_DIR/debug/examples"
mkdir -p "$OUT"
zcat data/debtags-min200/test.jsonl.gz | head -8 > "$OUT/texts.jsonl" || true # head closes the pipe
model=models/all-MiniLM-L6-v2
"$bin/finetune" --model "$model" --data data/debtags-min200 --out "$OUT/train" --overwrite \
  --train-limit 64 --valid-limit 32 --test-limit 32 --max-steps 6 --batch-size 8 --lr 1e-2 \
  --max-len 64 --pooling pooler --no-progress > "$OUT/train.log"
"$bin/predict" --model "$model" --adapter "$OUT/train/adapter" --input "$OUT/texts.jsonl" \
  --format jsonl > "$OUT/probs.jsonl"
"$bin/export" --model "$model" --adapter "$OUT/train/adapter" --out "$OUT/merged" --overwrite
"$VENV/bin/python" scripts/check_export_in_transformers.py --merged "$OUT/merged" --base "$model" \
  --adapter "$OUT/train/adapter" --texts "$OUT/texts.jsonl" --rust-probs "$OUT/probs.jsonl"
