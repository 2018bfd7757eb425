#!/usr/bin/env bash
# The test command: fetches the real checkpoints the parity tests need, then runs the whole
# suite. The build includes the Vulkan backend (so it keeps compiling), the burn-train
# integration (feature `learner`) and model ids (`hub`, tested against a file:// mirror). The
# LoRA tests run on Vulkan only with BURN_LORA_TEST_GPU=1 and a working driver (Mesa's lavapipe
# crashes on burn 0.22's kernels: see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all
cargo test --features vulkan,learner,hub "$@"
# The burn-free GGUF reader crate of the workspace.
cargo test -p burn-lora-gguf
