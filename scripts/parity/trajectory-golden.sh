#!/usr/bin/env bash
# Regenerates tests/trajectory: two 20-step runs of a small CNN (batch norm, manifold mixup,
# crop and flip, momentum, weight decay) traced by mmix and replayed by the PyTorch twin:
#   nesterov/  Nesterov momentum, cosine per epoch (mmix's defaults)
#   momentum/  plain momentum, cosine per step, images padded 28 → 32, subset from --split-seed
# tests/trajectory.rs trains the same runs and compares each step's loss and the final
# weights with the twin's. Uses the torch environment of scripts/parity/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=${MMIX_TORCH_VENV:-$HOME/.cache/mmix-torch-ref}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cargo build --release
common=(train --dataset fashion-mnist-mini --model small-cnn --width 4 --train-subset 100
  --batch-size 20 --epochs 4 --lr 0.1 --momentum 0.9 --weight-decay 5e-3 --mix manifold
  --alpha 2 --mix-layers 0,1,2 --seed 7 --trace)
declare -A variants=(
  [nesterov]="--schedule cosine"
  [momentum]="--nesterov false --schedule cosine-per-step --pad-to 32 --split-seed 3"
)
for name in "${!variants[@]}"; do
  # shellcheck disable=SC2086
  "${CARGO_TARGET_DIR:-target}/release/mmix" "${common[@]}" ${variants[$name]} --out "$tmp/$name"
  mkdir -p "tests/trajectory/$name"
  "$venv/bin/python" scripts/parity/trajectory.py "$tmp/$name/trace" --no-nudge \
    --out "$tmp/$name.json" --golden "tests/trajectory/$name/golden.safetensors"
  cp "$tmp/$name/trace/trace.json" "$tmp/$name/trace/steps.jsonl" "tests/trajectory/$name/"
done
