#!/usr/bin/env bash
# The test command: fetches the real checkpoints the parity tests need, then runs the whole
# suite. The build includes the wgpu backend (WGSL through naga; the `vulkan` feature would
# switch cubecl to SPIR-V, which crashes Mesa's lavapipe: BENCHMARKS.md), the burn-train
# integration (feature `learner`) and model ids (`hub`, tested against a file:// mirror). This
# one build (dev profile, dependencies optimised) also serves the README's main command and
# the benches (`cargo bench --profile dev --features wgpu,learner,hub`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
scripts/fetch-models.sh all
# The per-device tests also run on every GPU backend compiled in whose device answers
# (wgpu on Mesa's lavapipe without a GPU). Minimal autotuning: on a software device each
# tuned candidate is another shader compile (the wgpu tests take ~3x longer without it).
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
# wgpu's Vulkan loader complains on stderr when this is unset (harmless, but noisy).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo test --features wgpu,learner,hub "$@"
# The burn-free crates of the workspace: the GGUF reader and the kernels (with the system
# BLAS path the default build has; its tests compare against a triple loop when a library
# loads, and CI sets BURN_LORA_TEST_BLAS=required so that they cannot skip).
cargo test -p burn-lora-gguf -p burn-lora-kernels --features burn-lora-kernels/blas
