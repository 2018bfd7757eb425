#!/usr/bin/env bash
# The test command: fetches the real checkpoint the parity tests need, then runs the whole
# suite. The build includes the Vulkan backend (so it keeps compiling); the LoRA tests run on
# it only with BURN_LORA_TEST_GPU=1 and a working Vulkan driver (Mesa's lavapipe crashes on
# burn 0.22's kernels: see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all
cargo test --features vulkan "$@"
# The burn-free GGUF reader crate of the workspace.
cargo test -p burn-lora-gguf
