#!/usr/bin/env bash
# Rust -> Python interop, run end to end: a few finetune steps here (MiniLM with mean and
# with pooler pooling, SmolLM2-135M from its GGUF), predict's probabilities on test texts,
# then Python PEFT loads each adapter (scripts/check_rust_adapter_in_peft.py) and must give
# the same probabilities within 1e-4; the same for DoRA adapters (--dora: PEFT reads their
# lora_magnitude_vector tensors), and for PiSSA/OLoRA adapters (--init: saved converted to
# plain LoRA of twice the rank, which PEFT loads on the original base). Needs the reference venv (made if missing) and the
# checkpoints (scripts/fetch-models.sh); not part of CI. ONLY=NAME runs one check.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
VENV="${VENV:-$HOME/.cache/burn-lora-venv}"
OUT="${OUT:-runs/interop}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers peft safetensors gguf sentencepiece
fi
scripts/fetch-models.sh all
cargo build -q --features wgpu,learner,hub --example finetune --example predict
bin="$CARGO_TARGET_DIR/debug/examples"
mkdir -p "$OUT"
zcat data/debtags-min200/test.jsonl.gz | head -8 > "$OUT/texts.jsonl" || true # head closes the pipe

check() { # name model [extra finetune flags...]
  local name=$1 model=$2; shift 2
  if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ]; then return 0; fi
  "$bin/finetune" --model "$model" --data data/debtags-min200 --out "$OUT/$name" --overwrite \
    --train-limit 64 --valid-limit 32 --test-limit 32 --max-steps 6 --batch-size 8 --lr 1e-2 \
    --max-len 64 --template '{text}' --no-progress "$@" > "$OUT/$name.log"
  "$bin/predict" --model "$model" --adapter "$OUT/$name/adapter" --input "$OUT/texts.jsonl" \
    --format jsonl > "$OUT/$name.probs.jsonl"
  local py_model=$model gguf=()
  if [[ $model == *.gguf ]]; then py_model=$(dirname "$model"); gguf=(--gguf-file "$(basename "$model")"); fi
  "$VENV/bin/python" scripts/check_rust_adapter_in_peft.py --model "$py_model" "${gguf[@]}" \
    --adapter "$OUT/$name/adapter" --texts "$OUT/texts.jsonl" --rust-probs "$OUT/$name.probs.jsonl"
}
check minilm-mean models/all-MiniLM-L6-v2
check minilm-pooler models/all-MiniLM-L6-v2 --pooling pooler
check smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf
check minilm-dora models/all-MiniLM-L6-v2 --dora
check smollm2-dora models/SmolLM2-135M-Instruct.Q4_1.gguf --dora --targets all-linear
check minilm-pissa models/all-MiniLM-L6-v2 --init pissa
check minilm-olora models/all-MiniLM-L6-v2 --init olora --targets all-linear
check smollm2-pissa-niter models/SmolLM2-135M-Instruct.Q4_1.gguf --init pissa_niter_4 --targets all-linear
