#!/usr/bin/env bash
# Regenerates tests/parity: mmix writes each case (initial weights, batch, plan), then the
# PyTorch twin writes what one train-mode step gives there (logits, loss, gradients).
# Uses the torch environment of ../shared/bench/torch-ref.sh (created here if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${MMIX_TORCH_VENV:-$HOME/.cache/mmix-torch-ref}
if ! "$venv/bin/python" -c 'import torch, safetensors' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.9.1 numpy safetensors >&2
fi
cargo test --release --test parity -- --ignored write_parity_cases
"$venv/bin/python" scripts/parity/twin.py tests/parity
cargo test --release --test parity
