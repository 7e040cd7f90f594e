#!/usr/bin/env bash
# mmix against its PyTorch twin on identical streams, in the recipe of
# studies/pytorch-recipe.toml's `mmix` arm (PreActResNet-18 width 16, a 10,000-image
# Fashion-MNIST subset per seed, 12 epochs, batch 128, SGD 0.1, momentum 0.9 without Nesterov,
# weight decay 5e-4, cosine per epoch, crop and flip, manifold α = 2 at points 0-2):
# each seed trained by mmix with --trace, then replayed by scripts/parity/trajectory.py (with
# its one-ulp-nudged copy), then summarised by scripts/parity/summarise.py.
#   recipe-twins.sh OUT [SEED ...]     (seeds 1-5 by default; reruns skip finished seeds)
# Uses MMIX (default target/release/mmix) and the torch environment of scripts/parity/run.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: recipe-twins.sh OUT [SEED ...]}
shift
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3 4 5)
mmix=${MMIX:-$here/../../target/release/mmix}
venv=${MMIX_TORCH_VENV:-$HOME/.cache/mmix-torch-ref}
mkdir -p "$out"
for seed in "${seeds[@]}"; do
  run="$out/seed-$seed"
  [ -f "$run/trace/trajectory.json" ] && continue
  rm -rf "$run"
  "$mmix" train --dataset fashion-mnist --model preactresnet18 --width 16 --train-subset 10000 \
    --epochs 12 --eval-every 12 --batch-size 128 --lr 0.1 --momentum 0.9 --nesterov false \
    --weight-decay 5e-4 --schedule cosine --mix manifold --alpha 2 --mix-layers 0,1,2 \
    --seed "$seed" --trace --out "$run"
  "$venv/bin/python" "$here/trajectory.py" "$run/trace" --out "$run/trace/trajectory.json.tmp"
  mv "$run/trace/trajectory.json.tmp" "$run/trace/trajectory.json"
done
python3 "$here/summarise.py" "$out"/seed-*
