#!/usr/bin/env bash
# The checks a lent GPU machine is for, in one run of about 6 minutes: the PyTorch golden
# cases on the GPU (`mmix parity`, tests/parity travels with the working tree), the CUDA build's
# smoke test, `mmix bench --device cuda` alternated with PyTorch's same step on that GPU
# (scripts/torch-step-cuda.py), and a short training. Results land in $OUT (the device tool's
# folder), or /tmp/gpu-check elsewhere.
#
# Prepare here, where the registries are (the GPU machine reaches none):
#   scripts/build-cuda.sh                         # target/cuda/mmix.xz, about 39 MB
#   mkdir -p .device && cp -r ../shared/bench .device/ && echo /.device/ >> .git/info/exclude
# then, through the device tool:
#   run(command="scripts/gpu-check.sh", carry=["target/cuda/mmix.xz", ".device"], timeout_s=560)
#
# Every step has its own time limit, so a step that hangs or fails leaves the others' figures.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1

step() { echo; echo "== $*"; }

step "the machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' || true

step "unpacking target/cuda/mmix.xz"
mmix=/tmp/mmix
xz -dc target/cuda/mmix.xz > "$mmix" 2>/dev/null ||
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    target/cuda/mmix.xz "$mmix" || { echo "no binary: build it with scripts/build-cuda.sh and carry it"; exit 1; }
chmod +x "$mmix"

# NCCL's pip package holds libnccl.so.2 alone; the CUDA runtime loads libnccl.so.
libs=/tmp/mmix-libs
mkdir -p "$libs"
nccl=$(python3 -c 'import nvidia.nccl as m; print(m.__path__[0])' 2>/dev/null)/lib/libnccl.so.2
[ -f "$nccl" ] && ln -sf "$nccl" "$libs/libnccl.so"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH="$libs:$CUDA_PATH/lib64:${LD_LIBRARY_PATH:-}"

# Each step gets its own limit, cut to what is left of the whole budget, so that a step that
# hangs leaves time for the others; the training comes after the first round.
budget=${GPU_CHECK_SECONDS:-520}
limit() { local left=$((budget - SECONDS)); echo $(( left < $1 ? (left > 1 ? left : 1) : $1 )); }

step "the PyTorch golden cases on the GPU (logits, loss, every gradient of one step per family)"
timeout "$(limit 120)" "$mmix" parity --device cuda --cases tests/parity | tee "$out/parity.txt" ||
  echo "parity failed: $?"

step "smoke: one epoch of an MLP on the GPU"
timeout "$(limit 120)" "$mmix" train --device cuda --model mlp --epochs 1 --train-subset 1000 \
  --out /tmp/gpu-smoke || echo "smoke failed: $?"

bench_dir=.device/bench
bench_round() {
  for width in 16 64; do
    line=$(timeout "$(limit 120)" "$mmix" bench --device cuda --model preactresnet18 \
      --width "$width" --batch-size 128 --steps 20 --warmup 5 | tail -n 1)
    echo "round $1 mmix: $line"
    [ -n "$line" ] && echo "$line" >> "$out/bench.jsonl"
    if [ -f "$bench_dir/preact_resnet.py" ]; then
      timeout "$(limit 90)" python3 scripts/torch-step-cuda.py --bench-dir "$bench_dir" \
        --width "$width" --steps 20 --warmup 5 | tee -a "$out/bench.jsonl" |
        sed "s/^/round $1 torch: /"
    else
      echo "no $bench_dir/preact_resnet.py: carry .device (see the top of this script)"
    fi
  done
}

step "bench, round 1: mmix and PyTorch alternated (PreActResNet-18, batch 128, manifold mixing)"
bench_round 1

step "a short training: PreActResNet-18 (width 16) on the embedded Fashion-MNIST subset"
timeout "$(limit 150)" "$mmix" train --device cuda --dataset fashion-mnist-mini \
  --model preactresnet18 --width 16 --epochs 3 --mix manifold --valid-split 500 --seed 1 \
  --out /tmp/gpu-train || echo "training failed: $?"
cp /tmp/gpu-train/metrics.csv /tmp/gpu-train/config.json "$out/" 2>/dev/null || true

for round in 2 3; do
  [ $((budget - SECONDS)) -gt 60 ] || break
  step "bench, round $round"
  bench_round "$round"
done
echo; echo "done in ${SECONDS}s: $out"
