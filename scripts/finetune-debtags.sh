#!/usr/bin/env bash
# The main job: fine-tune all-MiniLM-L6-v2 with LoRA on the bundled debtags (min200) data,
# tune thresholds on valid, report test metrics, save the adapter, predict two texts.
# Extra arguments go to the finetune example (e.g. --train-limit 23339 --epochs 3).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all-minilm
OUT="${OUT:-runs/minilm-debtags}"
# The dev profile compiles dependencies with opt-level 3 (see Cargo.toml), so this shares
# the test build; `--release` gives the same speed after a longer build.
cargo run --example finetune -- \
  --model models/all-MiniLM-L6-v2 --data data/debtags-min200 --out "$OUT" \
  --train-limit 4000 --epochs 3 --lr 2e-3 --max-len 128 --batch-size 16 --seed 42 "$@"
printf '%s\n' \
  "Library for parsing XML documents, with bindings for Python and Perl" \
  "Real-time strategy game of ancient warfare with 3D graphics" |
  cargo run --example predict -- --model models/all-MiniLM-L6-v2 --adapter "$OUT/adapter"
