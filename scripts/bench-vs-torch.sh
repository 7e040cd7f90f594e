#!/usr/bin/env bash
# Alternates `mmix bench` with the PyTorch reference (../shared/bench/torch-ref.sh) on the same
# machine, so their ratio is measured under the same conditions. Usage:
#   scripts/bench-vs-torch.sh [ROUNDS] [STEPS]
# Build first (`cargo build --release`, or with `--features onednn`) and keep the machine
# otherwise idle. A oneDNN build is timed twice, with its convolutions on oneDNN and on Burn
# (MMIX_ONEDNN=off). Each PyTorch line is followed by that process's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
steps=${2:-5}
mmix=${MMIX:-./target/release/mmix}
torch_ref=${TORCH_REF:-../shared/bench/torch-ref.sh}
lscpu | grep -E 'Model name|^CPU\(s\)|MHz' || true
conv_libraries=(on)
if MMIX_ONEDNN=off "$mmix" bench --model mlp --channels 1 --image-size 8 --steps 1 --warmup 0 \
  | grep -q '"convolution":"burn"' && "$mmix" bench --model mlp --channels 1 --image-size 8 \
  --steps 1 --warmup 0 | grep -q '"convolution":"onednn"'; then
  conv_libraries=(on off)
fi
for round in $(seq "$rounds"); do
  echo "## round $round"
  for width in 64 16; do
    for onednn in "${conv_libraries[@]}"; do
      for mix in none manifold; do
        MMIX_ONEDNN=$onednn "$mmix" bench --model preactresnet18 --width "$width" \
          --batch-size 128 --mix "$mix" --steps "$steps" --warmup 1
      done
    done
    for format in contiguous channels_last; do
      /usr/bin/time -f "torch peak RSS: %M KB" "$torch_ref" --widths "$width" \
        --formats "$format" --batch 128 --steps "$steps" --warmup 1 --no-env 2>&1 \
        | grep -E "^ *$width +128|peak RSS"
    done
  done
done
