#!/usr/bin/env bash
# Exact resume, by hand, on real settings: one uninterrupted finetune run, and the same run
# killed with SIGKILL twice at random moments between checkpoints (each kill after a fresh
# checkpoint appeared, plus a random delay) and continued with --resume. Prints the largest
# difference of any adapter/head weight between the two final adapters and between the two
# best adapters (0 when resume is exact) and both runs' test scores.
#
# Defaults: the README main command's settings with an evaluation (= a checkpoint) every 25
# steps so that there is something to resume from. Extra arguments go to finetune.
#   scripts/check_kill_resume.sh                       # MiniLM, debtags, 2,000 × 1 epoch
#   RUNS=/tmp/kr scripts/check_kill_resume.sh --train-limit 320 --epochs 2
# Needs python3 with numpy and safetensors for the comparison (the reference venv has both).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
PY="${PYTHON:-$HOME/.cache/burn-lora-venv/bin/python}"
RUNS="${RUNS:-runs/kill-resume}"
scripts/fetch-models.sh all-minilm
cargo build --features wgpu,learner,hub --example finetune
BIN="$CARGO_TARGET_DIR/debug/examples/finetune"
ARGS=(--model models/all-MiniLM-L6-v2 --data data/debtags-min200 --train-limit 2000
  --epochs 1 --lr 2e-3 --max-len 128 --batch-size 16 --seed 42 --eval-every 25
  --no-progress "$@")

step_of() { # the step of OUT/last's checkpoint, 0 when there is none
  sed -n 's/^ *"step": \([0-9]*\),*$/\1/p' "$1/last/trainer_state.json" 2>/dev/null | head -1 || true
}

rm -rf "$RUNS"
mkdir -p "$RUNS"
echo "== uninterrupted run"
"$BIN" "${ARGS[@]}" --out "$RUNS/full" >"$RUNS/full.log" 2>&1
grep -E "trained" "$RUNS/full.log" || true

echo "== the same run, killed twice"
resume=()
for kill in 1 2; do
  "$BIN" "${ARGS[@]}" --out "$RUNS/killed" "${resume[@]}" >"$RUNS/killed-$kill.log" 2>&1 &
  pid=$!
  before=$(step_of "$RUNS/killed")
  # Wait for a checkpoint newer than the one started from, then a random 1-15 s more.
  while kill -0 "$pid" 2>/dev/null; do
    now=$(step_of "$RUNS/killed")
    if [ -n "$now" ] && [ "$now" != "${before:-}" ]; then break; fi
    sleep 0.5
  done
  sleep $((RANDOM % 15 + 1))
  if ! kill -9 "$pid" 2>/dev/null; then
    echo "run $kill ended before its kill: use more steps" >&2
    exit 1
  fi
  wait "$pid" 2>/dev/null || true
  echo "killed with SIGKILL after the checkpoint of step $(step_of "$RUNS/killed")"
  resume=(--resume)
done
"$BIN" "${ARGS[@]}" --out "$RUNS/killed" --resume >"$RUNS/killed-end.log" 2>&1
grep -E "resumed|trained" "$RUNS/killed-end.log" || true

"$PY" - "$RUNS" <<'EOF'
import json, sys
import numpy as np
from safetensors.numpy import load_file
runs = sys.argv[1]
for folder in ["adapter", "best", "last"]:
    a = load_file(f"{runs}/full/{folder}/adapter_model.safetensors")
    b = load_file(f"{runs}/killed/{folder}/adapter_model.safetensors")
    assert a.keys() == b.keys(), f"{folder}: other tensor names"
    diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    print(f"{folder}: {len(a)} tensors, max abs diff {diff:g}")
ma = json.load(open(f"{runs}/full/metrics.json"))
mb = json.load(open(f"{runs}/killed/metrics.json"))
for split in ["valid", "test"]:
    print(split, "micro-F1", ma[split]["micro_f1"], "vs", mb[split]["micro_f1"],
          "macro-F1", ma[split]["macro_f1"], "vs", mb[split]["macro_f1"])
EOF
