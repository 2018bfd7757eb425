#!/usr/bin/env bash
# Speed side by side: PyTorch + PEFT, then burn-lora, on the same token batches (real debtags
# texts, length-bucketed), same model, same LoRA recipe, fp32, 2 threads each. Training at
# batch 16 x max_len 128, inference at 32 x 128, for MiniLM and SmolLM2-135M (the GGUF,
# dequantised on both sides), each under two LoRA recipes, the same flags to both sides:
#
#   r8-peft  rank 8, alpha 16 on the family's PEFT default targets (BERT query,value; llama
#            q_proj,v_proj) — the recipe of the figures before issue 26
#   r16-all  rank 16, alpha 32 on every linear but the head (PEFT's "all-linear") — the
#            finetune defaults
#
# Prints the CPU and its vector extensions, then tokens/s and peak RSS of each side and the
# ratios burn-lora / PyTorch, one table row per model, recipe and mode. Run it on an
# otherwise idle machine.
#
#   scripts/bench_vs_pytorch.sh [minilm|smollm2|all]     (default all)
#
# Environment: BURN_LORA_VENV (default ~/.cache/burn-lora-venv; made with torch,
# transformers, peft, gguf when missing: ~5 GB, never needed by CI), TRAIN_STEPS /
# INFER_STEPS (timed batches per model; defaults below), THREADS (default 2), REPEAT
# (default 1: each measurement runs REPEAT times, the two sides alternating, and the table
# shows medians with every run's ratio beside them — this machine's run-to-run noise is
# ±20 %), RECIPES (default "r8-peft r16-all"; space- or comma-separated: RECIPES=r8-peft
# reproduces the earlier figures alone).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
VENV="${BURN_LORA_VENV:-$HOME/.cache/burn-lora-venv}"
THREADS="${THREADS:-2}"
which="${1:-all}"
FEATURES=wgpu,learner,hub # the README commands' build: one build serves all

# The LoRA flags of each recipe, passed unchanged to bench_pytorch.py run and bench_workload.
recipe_flags() {
  case "$1" in
    r8-peft) echo "--rank 8 --alpha 16 --targets peft" ;;
    r16-all) echo "--rank 16 --alpha 32 --targets all-linear" ;;
    *) return 1 ;;
  esac
}
# RECIPES: names split at spaces and commas; unset or empty means both.
IFS=', ' read -r -a recipes <<<"${RECIPES:-r8-peft r16-all}"
if [ "${#recipes[@]}" -eq 0 ]; then
  echo "bench: RECIPES names no recipe (r8-peft, r16-all)" >&2
  exit 2
fi
for recipe in "${recipes[@]}"; do
  if ! recipe_flags "$recipe" >/dev/null; then
    echo "bench: unknown recipe \`$recipe\` in RECIPES (r8-peft, r16-all)" >&2
    exit 2
  fi
done

# The CPU and its vector extensions first: the ratios depend on them (gemm's AVX-512 kernels
# run only where avx512f is present), so a pasted result says what it ran on.
cpu_info() {
  local model flags f have="" missing=""
  model="$(sed -n '/^model name/{s/^[^:]*:[[:space:]]*//;p;q}' /proc/cpuinfo 2>/dev/null || true)"
  [ -n "$model" ] || model="$(lscpu 2>/dev/null | sed -n '/^Model name:/{s/^[^:]*:[[:space:]]*//;p;q}' || true)"
  # x86 lists "flags", arm64 "Features".
  flags=" $(sed -n '/^\(flags\|Features\)[[:space:]]*:/{s/^[^:]*://;p;q}' /proc/cpuinfo 2>/dev/null || true) "
  for f in avx2 fma avx512f; do
    case "$flags" in *" $f "*) have+=" $f" ;; *) missing+=" $f" ;; esac
  done
  for f in avx512bw avx512vl avx512_vnni avx512_bf16 asimd sve sve2; do # named only when present
    case "$flags" in *" $f "*) have+=" $f" ;; esac
  done
  [ "$(uname -m)" = x86_64 ] || missing="" # the x86 names mean nothing elsewhere
  echo "cpu: ${model:-unknown} ($(nproc) threads; $THREADS per side); vector:${have:- none}${missing:+; no$missing}"
}
cpu_info

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, transformers, peft, gguf' 2>/dev/null; then
  echo "bench: making the PyTorch venv at $VENV (torch, transformers, peft, gguf)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers peft gguf numpy
fi
scripts/fetch-models.sh all >&2
cargo build -q --features "$FEATURES" --example bench_workload
BURN="$CARGO_TARGET_DIR/debug/examples/bench_workload"
# Both sides get the same thread count (burn-flex runs on rayon's pool).
export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The machine's f32 matmul rate, through each side, at a MiniLM FFN shape.
gemm_torch=$("$VENV/bin/python" scripts/bench_pytorch.py gemm --threads "$THREADS")
gemm_burn=$("$BURN" --mode gemm)
echo "gemm pytorch   $gemm_torch"
echo "gemm burn-lora $gemm_burn"

lines=()
bench_model() { # name model-path train-steps infer-steps
  local name="$1" model="$2" wl="$WORK/$1.json"
  "$VENV/bin/python" scripts/bench_pytorch.py prepare --model "$model" --data data/debtags-min200 \
    --out "$wl" --train-steps "$3" --infer-steps "$4" >&2
  local recipe mode rep flags
  for recipe in "${recipes[@]}"; do
    read -r -a flags <<<"$(recipe_flags "$recipe")"
    for mode in train infer; do
      for ((rep = 1; rep <= ${REPEAT:-1}; rep++)); do
        local torch_line burn_line
        torch_line=$("$VENV/bin/python" scripts/bench_pytorch.py run --workload "$wl" --mode "$mode" --threads "$THREADS" "${flags[@]}")
        burn_line=$("$BURN" --workload "$wl" --mode "$mode" "${flags[@]}")
        echo "$name $recipe $mode run $rep pytorch   $torch_line"
        echo "$name $recipe $mode run $rep burn-lora $burn_line"
        lines+=("$name|$recipe|$mode|$torch_line|$burn_line")
      done
    done
  done
}

case "$which" in
  minilm | all) bench_model minilm models/all-MiniLM-L6-v2 "${TRAIN_STEPS:-20}" "${INFER_STEPS:-8}" ;;&
  smollm2 | all) bench_model smollm2 models/SmolLM2-135M-Instruct.Q4_1.gguf "${TRAIN_STEPS:-8}" "${INFER_STEPS:-4}" ;;
  minilm) ;;
  *) echo "usage: $0 [minilm|smollm2|all]" >&2; exit 2 ;;
esac

python3 - "$gemm_torch" "$gemm_burn" "${lines[@]}" <<'PY'
import json, statistics, sys
gemm_t, gemm_b = (json.loads(a) for a in sys.argv[1:3])
# The kernel set too (AVX-512 or AVX2+FMA for gemm); older builds only said whether a BLAS ran.
kernel = gemm_b.get("kernel") or (f"system BLAS {gemm_b['blas']}" if gemm_b.get("blas") else "built-in gemm")
print(f"\nf32 gemm 2048x384x1536: PyTorch {gemm_t['gflops']:.0f} GFLOP/s, burn-flex's matmul "
      f"{gemm_b['gflops']:.0f}, burn-lora's linear {gemm_b['linear_gflops']:.0f} ({kernel})")
print("GFLOP/s: estimated work of the timed batches (bench_pytorch.py timed_gflop) / time; "
      "the estimate leaves LoRA out, so it is the same under both recipes")
print("Several runs: medians, and each run's ratio (the two sides alternate)")
RECIPES = {"r8-peft": "LoRA r 8, alpha 16 on the family's PEFT default targets "
                      "(BERT query,value; llama q_proj,v_proj)",
           "r16-all": "LoRA r 16, alpha 32 on every linear but the head "
                      "(PEFT all-linear; the finetune defaults)"}
runs = {}
for arg in sys.argv[3:]:
    name, recipe, mode, t, b = arg.split("|", 4)
    runs.setdefault((name, recipe, mode), []).append((json.loads(t), json.loads(b)))
for recipe in dict.fromkeys(r for _, r, _ in runs):
    print(f"recipe {recipe}: {RECIPES.get(recipe, recipe)}")
print("trainable: parameters the training step updates, LoRA and head (PyTorch's count; "
      "burn-lora's beside it where it differs)\n")
head = ["model", "recipe", "mode", "trainable", "PyTorch tok/s", "burn-lora tok/s", "ratio",
        "ratio per run", "PyTorch GFLOP/s", "burn-lora GFLOP/s", "PyTorch peak RSS MiB",
        "burn-lora peak RSS MiB", "RSS ratio"]
right = [False, False, False, True, True, True, True, False, True, True, True, True, True]
rows = []
for (name, recipe, mode), pairs in runs.items():
    med = lambda side, key: statistics.median(p[side][key] for p in pairs)
    per_run = ", ".join(f"{b['tokens_per_second'] / t['tokens_per_second']:.2f}" for t, b in pairs)
    t_tok, b_tok = med(0, "tokens_per_second"), med(1, "tokens_per_second")
    t_rss, b_rss = med(0, "peak_rss_mib"), med(1, "peak_rss_mib")
    # burn-lora counts trainable parameters when it trains only (0 for inference).
    t_par, b_par = pairs[0][0].get("trainable_params"), pairs[0][1].get("trainable_params")
    trainable = f"{t_par:,}" if mode == "train" and t_par is not None else "-"
    if mode == "train" and b_par and b_par != t_par:
        trainable += f" (burn-lora {b_par:,})"
    rows.append([name, recipe, mode, trainable, f"{t_tok:.0f}", f"{b_tok:.0f}",
                 f"{b_tok / t_tok:.2f}", per_run, f"{med(0, 'gflops'):.1f}",
                 f"{med(1, 'gflops'):.1f}", f"{t_rss:.0f}", f"{b_rss:.0f}",
                 f"{b_rss / t_rss:.2f}"])
# Markdown, padded so that the columns line up in a terminal too.
width = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
cell = lambda text, i: text.rjust(width[i]) if right[i] else text.ljust(width[i])
print("| " + " | ".join(cell(h, i) for i, h in enumerate(head)) + " |")
print("|" + "|".join("-" * (w + 1) + ":" if r else "-" * (w + 2)
                     for w, r in zip(width, right)) + "|")
for row in rows:
    print("| " + " | ".join(cell(c, i) for i, c in enumerate(row)) + " |")
PY
