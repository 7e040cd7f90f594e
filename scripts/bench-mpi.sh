#!/usr/bin/env bash
# The cost of data parallelism on this machine: the train step of PreActResNet-18 (batch 128,
# manifold mixing) in one process, alternated with the same global batch over RANKS processes
# under mpirun on loopback, which report the all-reduce of each step's gradients apart.
#
#   scripts/bench-mpi.sh [ROUNDS] [WIDTHS] [RANKS]     (defaults: 3, "16 64", 2)
#
# Needs a build with the `mpi` feature (cargo build --release --features mpi) and Open MPI.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
widths=${2:-16 64}
ranks=${3:-2}
binary=${MMIX:-target/release/mmix}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
for round in $(seq 1 "$rounds"); do
  for width in $widths; do
    steps=$(( width > 32 ? 5 : 10 ))
    args=(bench --model preactresnet18 --width "$width" --batch-size 128 --steps "$steps" --warmup 2)
    echo "round $round width $width 1 process: $("$binary" "${args[@]}" | tail -n 1)"
    echo "round $round width $width $ranks ranks: $(mpirun -np "$ranks" --oversubscribe --bind-to none \
      --mca btl self,tcp --mca btl_tcp_if_include lo "$binary" "${args[@]}" | tail -n 1)"
  done
done
