#!/usr/bin/env bash
# The test command: installs Mesa's software Vulkan driver (lavapipe) when missing so the
# LoRA tests also run on burn's Vulkan backend, fetches the real checkpoints the parity
# tests need, then runs the whole suite on flex + Vulkan.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-lora-target}"
if ! dpkg -s mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
  else
    echo "test.sh: install mesa-vulkan-drivers and libvulkan1 (or any Vulkan driver) first" >&2
    exit 2
  fi
fi
scripts/fetch-models.sh all-minilm
cargo test --features vulkan "$@"
