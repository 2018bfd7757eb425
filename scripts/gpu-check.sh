#!/usr/bin/env bash
# The prepared check for a borrowed NVIDIA GPU machine (no internet, no Rust, at most
# 64 MiB carried per call, 15 minutes of device time in all). Three steps:
#
#   here:      scripts/gpu-check.sh bundle
#              builds the examples gpu_check and finetune in the test build (dev profile,
#              --features wgpu,learner,hub), strips and xz-compresses them into gpu-bundle/,
#              adds the Vulkan loader (libvulkan1) and MiniLM in f16 (the f32 file is 87 MiB),
#              and prints what each call carries.
#   device 1:  scripts/gpu-check.sh run          carry: gpu-bundle/bin gpu-bundle/bin-finetune gpu-bundle/lib
#              GPU and driver facts, then gpu_check on wgpu: tiny BERT/Llama parity
#              (≤ 1e-4), a tiny training run, MiniLM and SmolLM2 LoRA tokens/s at 16 × 128.
#   device 2:  scripts/gpu-check.sh minilm [S]   carry: gpu-bundle/minilm-f16
#              the full debtags-min200 MiniLM run on wgpu for at most S seconds (default
#              420), checkpoints and metrics under $OUT. Issue it right after call 1: a warm
#              machine keeps call 1's binaries; a fresh one also needs gpu-bundle/bin-finetune
#              and gpu-bundle/lib carried (64.1 MB with the model, just under the limit).
#
# CUDA cannot travel: cubecl-cuda's build downloads LLVM, which these build machines
# cannot fetch, so the GPU is driven through wgpu (Vulkan through NVIDIA's driver).
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=gpu-bundle
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"

bundle() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
  cargo build --features wgpu,learner,hub --example gpu_check --example finetune
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/bin-finetune" "$BUNDLE/lib"
  for ex in gpu_check finetune; do
    dest="$BUNDLE/bin"; [ "$ex" = finetune ] && dest="$BUNDLE/bin-finetune"
    strip -o "$dest/$ex" "$CARGO_TARGET_DIR/debug/examples/$ex"
    xz -T2 -6 "$dest/$ex"
  done
  # The Vulkan loader, in case the GPU machine has NVIDIA's ICD but no loader.
  loader=$(ldconfig -p | awk '/libvulkan\.so\.1 /{print $NF; exit}')
  [ -n "$loader" ] || { echo "install libvulkan1 here first" >&2; exit 1; }
  cp -L "$loader" "$BUNDLE/lib/libvulkan.so.1"
  # MiniLM in f16: the loader widens it to f32 at load (a 2^-11 relative rounding of
  # the weights, stated with any figure made from it).
  scripts/fetch-models.sh all-minilm
  py="${PYTHON:-$HOME/.cache/burn-lora-venv/bin/python}"
  mkdir -p "$BUNDLE/minilm-f16"
  cp models/all-MiniLM-L6-v2/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,modules.json} "$BUNDLE/minilm-f16/"
  cp -r models/all-MiniLM-L6-v2/1_Pooling "$BUNDLE/minilm-f16/"
  "$py" - "$BUNDLE/minilm-f16/model.safetensors" <<'EOF'
import sys
from safetensors.numpy import load_file, save_file
weights = load_file("models/all-MiniLM-L6-v2/model.safetensors")
save_file({k: v.astype("float16") for k, v in weights.items()}, sys.argv[1])
EOF
  echo "carry per call (limit 64 MiB = 67108864 bytes; the work tree travels too: $(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes):"
  echo "  run:    $(du -cb "$BUNDLE/bin" "$BUNDLE/bin-finetune" "$BUNDLE/lib" | tail -1 | cut -f1) bytes"
  echo "  minilm: $(du -cb "$BUNDLE/minilm-f16" | tail -1 | cut -f1) bytes (warm machine)"
}

unpack() { # name dir
  [ -x "$2/$1" ] && return
  [ -f "$2/$1.xz" ] || { echo "$2/$1.xz missing: carry it (see the top of $0)" >&2; exit 1; }
  xz -dk "$2/$1.xz"
}

facts() {
  echo "== $(date -u) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>&1 || true
  if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    echo "no system Vulkan loader: using the carried one"
    export LD_LIBRARY_PATH="$PWD/$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  fi
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
}

case "${1:-}" in
  bundle) bundle ;;
  run)
    facts
    unpack gpu_check "$BUNDLE/bin"
    "$BUNDLE/bin/gpu_check" --device wgpu --steps "${STEPS:-10}" 2>&1 | tee "$OUT/gpu_check.log"
    ;;
  minilm)
    facts
    unpack finetune "$BUNDLE/bin-finetune"
    status=0
    timeout "${2:-420}" "$BUNDLE/bin-finetune/finetune" --device wgpu \
      --model "$BUNDLE/minilm-f16" --data data/debtags-min200 --out "$OUT/minilm-min200" \
      --epochs 3 --lr 2e-3 --max-len 128 --batch-size 32 --seed 42 --no-progress \
      2>&1 | tee "$OUT/minilm.log" || status=$?
    echo "finetune exit status $status (124: stopped by the time limit; resume with --resume)"
    ;;
  *)
    sed -n '2,18p' "$0"
    exit 2
    ;;
esac
