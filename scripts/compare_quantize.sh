#!/usr/bin/env bash
# QLoRA's trade on this machine: SmolLM2-135M-Instruct fine-tuned with the frozen base in
# f32 (`--quantize none`), NF4, NF4 with double-quantised scales, int8, and the GGUF's own
# Q4_1 blocks kept (`keep`), same data, recipe and budget, one run after the other; prints
# one row per packing (base bytes at rest, bits per packed weight, peak RSS, training
# tokens/s, test micro/macro-F1). Except for `keep`, the GGUF's Q4_1 blocks are dequantised
# at load, then packed again.
#   QUANTIZE="none nf4" scripts/compare_quantize.sh   (a subset of the packings)
#   scripts/compare_quantize.sh [extra finetune flags, applied to every packing]
#   RESUME=1 OUT=DIR scripts/compare_quantize.sh ...   (continues an interrupted comparison)
# Defaults: compare_backbones.sh's small budget (400 train / 150 valid / 300 test, 1 epoch).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all >/dev/null
OUT="${OUT:-runs/quantize}"
MODEL="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
BUDGET=(--train-limit 400 --valid-limit 150 --test-limit 300 --epochs 1 --batch-size 8
        --max-len 128 --lr 2e-3 --seed 42 --no-progress)
mkdir -p "$OUT"
PACKINGS="${QUANTIZE:-none nf4 nf4-dq int8 keep}"
# RESUME=1, as in compare_backbones.sh: a packing whose run has finished (metrics.json) is not
# run again, one with a checkpoint continues from it (same flags), any other starts afresh.
for q in $PACKINGS; do
  start=(--overwrite)
  if [ -n "${RESUME:-}" ]; then
    [ -e "$OUT/$q/metrics.json" ] && continue
    [ -e "$OUT/$q/last" ] && start=(--resume)
  fi
  [ "${start[0]}" = --overwrite ] && : > "$OUT/$q.log"  # a fresh run, a fresh log
  cargo run -q --features wgpu,learner,hub --example finetune -- --model "$MODEL" \
    --data data/debtags-min200 --out "$OUT/$q" "${start[@]}" --quantize "$q" "${BUDGET[@]}" "$@" \
    >> "$OUT/$q.log" 2>&1 || { tail -20 "$OUT/$q.log"; exit 1; }
done
python3 - "$OUT" $PACKINGS <<'PY'
import json, re, sys
out = sys.argv[1]
print("| --quantize | base linears at rest | bits per weight | peak RSS MiB | train tokens/s | test micro-F1 | test macro-F1 |")
print("|---|---:|---:|---:|---:|---:|---:|")
for q in sys.argv[2:]:
    m = json.load(open(f"{out}/{q}/metrics.json"))
    log = open(f"{out}/{q}.log").read()
    hit = re.search(r"frozen base: (\d+) linears as [\w-]+, ([\d.]+) MiB -> ([\d.]+) MiB \(([\d.]+) bits", log)
    if hit:
        rest, bits = f"{float(hit.group(3)):.1f} MiB (f32: {float(hit.group(2)):.1f})", hit.group(4)
    else:
        rest, bits = "f32", "32"
    print(f"| {q} | {rest} | {bits} | {m['peak_rss_mib']:.0f} | {m['train_tokens_per_second']:.0f} | "
          f"{m['test']['micro_f1']:.4f} | {m['test']['macro_f1']:.4f} |")
PY
