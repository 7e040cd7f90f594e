#!/usr/bin/env bash
# Does an independent PyTorch trainer of the PreActResNet-18 recipe end apart from mmix, and
# does the initialisation matter?
# For each seed, from the traces that recipe-twins.sh wrote (mmix's recipe, mmix's stream):
#   independent/seed-S.json        independent.py: its own init, its own pipeline (PyTorch's recipe)
#   independent-mmix-recipe/seed-S.json  the same code on mmix's recipe (28 px, crop padding 2,
#                                  a rate per epoch, a subset per seed)
#   twin-torch-init/seed-S.json    trajectory.py --torch-init: mmix's stream from PyTorch's init
# then prints each arm's final test accuracy beside the twin's and mmix's, with paired
# differences and their 95% t intervals.
#   gap.sh TWINS OUT [SEED ...]   (TWINS: recipe-twins.sh's folder; seeds 1-5 by default;
#                                   reruns skip finished files)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
twins=${1:?usage: gap.sh TWINS OUT [SEED ...]}
out=${2:?usage: gap.sh TWINS OUT [SEED ...]}
shift 2
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3 4 5)
python=${MMIX_TORCH_VENV:-$HOME/.cache/mmix-torch-ref}/bin/python
mkdir -p "$out"/independent "$out"/independent-mmix-recipe "$out"/twin-torch-init
# Arm by arm, each over every seed: the independent trainer on both recipes first, since
# the initialisation arm only matters where it ends apart from mmix.
for seed in "${seeds[@]}"; do
  [ -f "$out/independent/seed-$seed.json" ] ||
    "$python" "$here/independent.py" --seed "$seed" --out "$out/independent/seed-$seed.json"
done
for seed in "${seeds[@]}"; do
  [ -f "$out/independent-mmix-recipe/seed-$seed.json" ] ||
    "$python" "$here/independent.py" --seed "$seed" --image-pad 0 --crop-padding 2 --per-epoch \
      --subset-seed "$seed" --out "$out/independent-mmix-recipe/seed-$seed.json"
done
for seed in "${seeds[@]}"; do
  [ -f "$out/twin-torch-init/seed-$seed.json" ] && continue
  "$python" "$here/trajectory.py" "$twins/seed-$seed/trace" --no-nudge --torch-init \
    --out "$out/twin-torch-init/seed-$seed.tmp"
  mv "$out/twin-torch-init/seed-$seed.tmp" "$out/twin-torch-init/seed-$seed.json"
done
"$python" "$here/gap_summary.py" "$twins" "$out" --pytorch-arm "$here/../../studies/pytorch-recipe/runs/pytorch" "${seeds[@]}"
