#!/usr/bin/env bash
# MiniLM inference throughput, PyTorch (2 threads) then burn-lora (flex), same batch, one
# after the other on this machine; prints both and the ratio.
#   scripts/compare_inference.sh [PYTHON]   (PYTHON: an interpreter with torch + transformers)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
PY="${1:-python3}"
MODEL=models/all-MiniLM-L6-v2
BATCH=32 SEQ=128 RUNS=5
scripts/fetch-models.sh all-minilm >/dev/null
torch_line=$("$PY" - "$MODEL" "$BATCH" "$SEQ" "$RUNS" <<'PY'
import sys, time, json, torch
from transformers import BertModel
model_dir, b, s, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(2)
m = BertModel.from_pretrained(model_dir).eval()
ids = (1000 + (torch.arange(b * s) * 7919) % 20000).reshape(b, s)
mask = torch.ones(b, s, dtype=torch.long)
with torch.no_grad():
    m(input_ids=ids, attention_mask=mask)
    t = time.time()
    for _ in range(runs):
        m(input_ids=ids, attention_mask=mask)
    sec = (time.time() - t) / runs
print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "threads": 2, "batch": b, "seq": s,
                  "seconds_per_batch": round(sec, 4), "tokens_per_second": round(b * s / sec, 1)}))
PY
)
burn_line=$(cargo run -q --features wgpu,learner,hub --example bench_inference -- --model "$MODEL" --batch "$BATCH" --seq "$SEQ" --runs "$RUNS")
echo "$torch_line"
echo "$burn_line"
python3 - "$torch_line" "$burn_line" <<'PY'
import json, sys
t, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"burn-lora / pytorch throughput ratio: {b['tokens_per_second'] / t['tokens_per_second']:.2f}")
PY
