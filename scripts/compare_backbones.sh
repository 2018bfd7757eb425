#!/usr/bin/env bash
# The seed's claim, measured at one budget: SmolLM2-135M-Instruct (Q4_1 GGUF, the finetune
# example's default ChatML instruction, last-token pooling) against all-MiniLM-L6-v2 (mean
# pooling), same data subset, same recipe (the finetune example's LoRA defaults: every linear;
# `--targets peft` for each family's PEFT list, q_proj,v_proj and query,value), one after the
# other on this machine; prints one row per model from metrics.json.
#   scripts/compare_backbones.sh [extra finetune flags, applied to both]
# Defaults fit a 2-core CPU in ~40 min: 400 train / 150 valid / 300 test examples, 1 epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all >/dev/null
OUT="${OUT:-runs/compare}"
BUDGET=(--train-limit 400 --valid-limit 150 --test-limit 300 --epochs 1 --batch-size 8
        --max-len 128 --lr 2e-3 --seed 42 --no-progress)
# RESUME=1 (for budgets longer than one working stretch): a model whose run has finished
# (metrics.json) is not run again, one with a checkpoint continues from it (`--resume`: the
# same flags must be given), any other starts afresh. Without it every run starts afresh.
mkdir -p "$(dirname "$OUT")"
for model in all-MiniLM-L6-v2 SmolLM2-135M-Instruct.Q4_1.gguf; do
  start=(--overwrite)
  if [ -n "${RESUME:-}" ]; then
    [ -e "$OUT/$model/metrics.json" ] && continue
    [ -e "$OUT/$model/last" ] && start=(--resume)
  fi
  [ "${start[0]}" = --overwrite ] && : > "$OUT-$model.log"  # a fresh run, a fresh log
  cargo run -q --features wgpu,learner,hub --example finetune -- --model "models/$model" \
    --data data/debtags-min200 --out "$OUT/$model" "${start[@]}" "${BUDGET[@]}" "$@" \
    >> "$OUT-$model.log" 2>&1 || { tail -20 "$OUT-$model.log"; exit 1; }
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print("| model | test micro-F1 | test macro-F1 | valid micro-F1 | micro-F1 frequent / middle / rare labels "
      "| train s | tokens/s | peak RSS MiB | trainable |")
print("|---|---|---|---|---|---|---|---|---|")
for model in ["SmolLM2-135M-Instruct.Q4_1.gguf", "all-MiniLM-L6-v2"]:
    m = json.load(open(f"{out}/{model}/metrics.json"))
    buckets = json.load(open(f"{out}/{model}/breakdown.json"))["test"]["by_label_frequency"]
    thirds = " / ".join(f"{b['micro_f1']:.3f}" for b in buckets)
    print(f"| {model} | {m['test']['micro_f1']:.4f} | {m['test']['macro_f1']:.4f} | "
          f"{m['valid']['micro_f1']:.4f} | {thirds} | {m['train_seconds']:.0f} | "
          f"{m['train_tokens_per_second']:.0f} | {m['peak_rss_mib']:.0f} | {m['trainable_params']} |")
PY
