#!/usr/bin/env bash
# Alternates `mmix bench` with the PyTorch reference (../shared/bench/torch-ref.sh) on the same
# machine, so their ratio is measured under the same conditions. Usage:
#   scripts/bench-vs-torch.sh [ROUNDS] [STEPS]
# Build first (cargo build --release) and keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
steps=${2:-5}
mmix=./target/release/mmix
torch_ref=${TORCH_REF:-../shared/bench/torch-ref.sh}
lscpu | grep -E 'Model name|^CPU\(s\)' || true
for round in $(seq "$rounds"); do
  echo "## round $round"
  for width in 64 16; do
    for mix in none manifold; do
      "$mmix" bench --model preactresnet18 --width "$width" --batch-size 128 --mix "$mix" \
        --steps "$steps" --warmup 1
    done
  done
  "$torch_ref" --widths 64 16 --formats contiguous channels_last --batch 128 \
    --steps "$steps" --warmup 1 --no-env
done
