#!/usr/bin/env bash
# The main job: fine-tune all-MiniLM-L6-v2 with LoRA on the bundled debtags (min200) data,
# tune thresholds on valid, report test metrics, save the adapter, predict two texts.
# About 4½ minutes on 2 CPU cores: 2,000 training examples, one epoch (~1.2k tokens/s when
# training on flex here). Extra arguments go to the finetune example and override these, e.g.
# more data: --train-limit 4000 --epochs 3 (BENCHMARKS.md's parity recipe with PyTorch + PEFT
# adds the finetune defaults before 2026-12-03: --rank 8 --alpha 16 --targets peft).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all-minilm
OUT="${OUT:-runs/minilm-debtags}"
# Same profile and features as the test command (dev profile with dependencies at opt-level 3,
# Vulkan compiled in), so the two share one build; the device is still flex (CPU).
# `cargo run --release --example finetune` gives the same speed after a separate build.
cargo run --features wgpu,learner,hub --example finetune -- \
  --model models/all-MiniLM-L6-v2 --data data/debtags-min200 --out "$OUT" --overwrite \
  --train-limit 2000 --epochs 1 --lr 2e-3 --max-len 128 --batch-size 16 --seed 42 "$@"
printf '%s\n' \
  "Library for parsing XML documents, with bindings for Python and Perl" \
  "Real-time strategy game of ancient warfare with 3D graphics" |
  cargo run --features wgpu,learner,hub --example predict -- --model models/all-MiniLM-L6-v2 --adapter "$OUT/adapter"
