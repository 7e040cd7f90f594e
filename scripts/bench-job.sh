#!/usr/bin/env bash
# A whole training job in mmix and in PyTorch, alternated, on the same machine: PreActResNet-18
# width 16, 10,000 Fashion-MNIST images padded to 32 px, 12 epochs of batch 128, manifold
# α = 2 at points 0-2, SGD 0.1 (momentum 0.9, weight decay 5e-4) with a cosine rate per step,
# crops and flips, and the full 10,000-image test set evaluated after every epoch. PyTorch's
# side is scripts/parity/independent.py (--eval-every-epoch), a plain PyTorch trainer of the
# same recipe. Prints each job's wall time split into start-up, training and evaluation, and
# its peak resident memory, then the medians and mmix's speed-up and memory share. Usage:
#   scripts/bench-job.sh [ROUNDS] [EPOCHS] [SUBSET]
# MMIX (default target/release/mmix) is the build timed: the one `cargo build --release`
# makes. With BF16=1 each round also times mmix with --precision bf16. Keep the machine
# otherwise idle; each job takes minutes.
#
# The split: mmix's training is summary.json's train_seconds, its evaluation the rest of each
# epoch's seconds (metrics.csv) plus the final evaluation (evaluation.json), and its start-up
# whatever of the wall time remains (reading the data set, building the model, writing
# files). PyTorch's comes from independent.py's own clock.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
epochs=${2:-12}
subset=${3:-10000}
mmix=${MMIX:-./target/release/mmix}
python=${MMIX_TORCH_VENV:-$HOME/.cache/mmix-torch-ref}/bin/python
[[ -x $python ]] || ../shared/bench/torch-ref.sh --help >/dev/null # creates the environment
# The PyTorch trainer reads the network's definition from twin.py, which imports safetensors.
"$python" -c 'import safetensors' 2>/dev/null || "$python" -m pip install -q safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=$work/results.tsv

lscpu | grep -E 'Model name|^CPU\(s\)' || true
"$mmix" bench --model mlp --channels 1 --image-size 8 --steps 1 --warmup 0 | tail -n 1

timed() { # output-file command...
  local out=$1
  shift
  /usr/bin/time -f "%e %M" -o "$out" "$@"
}

mmix_job() { # round label precision
  local round=$1 label=$2 precision=$3 run=$work/run-$1-$2
  timed "$work/time" "$mmix" train --dataset fashion-mnist --model preactresnet18 --width 16 \
    --train-subset "$subset" --split-seed 0 --pad-to 32 --epochs "$epochs" --eval-every 1 \
    --batch-size 128 --lr 0.1 --momentum 0.9 --nesterov false --weight-decay 5e-4 \
    --schedule cosine-per-step --mix manifold --alpha 2 --mix-layers 0,1,2 --seed 1 \
    --precision "$precision" --out "$run" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  python3 - "$run" "$work/time" "$round" "$label" >>"$results" <<'EOF'
import csv, json, sys
run, timing, round_, label = sys.argv[1:]
wall, peak_kb = open(timing).read().split()
summary = json.load(open(f"{run}/summary.json"))
epochs = sum(float(row["seconds"]) for row in csv.DictReader(open(f"{run}/metrics.csv")))
final = json.load(open(f"{run}/evaluation.json"))["seconds"]
train = summary["train_seconds"]
evaluation = epochs - train + final
accuracy = summary["final"]["test_acc"]
print(round_, label, wall, train, evaluation, float(wall) - train - evaluation,
      int(peak_kb) / 1024, accuracy, sep="\t")
EOF
  rm -rf "$run"
}

torch_job() { # round
  local round=$1
  timed "$work/time" "$python" scripts/parity/independent.py --seed 1 --epochs "$epochs" \
    --subset "$subset" --eval-every-epoch --out "$work/torch.json" >"$work/log" 2>&1 ||
    { cat "$work/log" >&2; exit 1; }
  python3 - "$work/torch.json" "$work/time" "$round" >>"$results" <<'EOF'
import json, sys
report, timing, round_ = sys.argv[1:]
wall, peak_kb = open(timing).read().split()
r = json.load(open(report))
t = r["timing"]
print(round_, "pytorch", wall, t["train"], t["eval"], float(wall) - t["train"] - t["eval"],
      int(peak_kb) / 1024, r["final"]["accuracy"], sep="\t")
EOF
}

for round in $(seq "$rounds"); do
  echo "round $round" >&2
  mmix_job "$round" mmix f32
  torch_job "$round"
  if [[ ${BF16:-0} == 1 ]]; then
    mmix_job "$round" mmix-bf16 bf16
  fi
done

python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict

rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
print("| round | program | wall (s) | training | evaluation | start-up and files | peak RSS (MiB) | final test acc |")
print("|---|---|---|---|---|---|---|---|")
by_program = defaultdict(list)
for round_, program, wall, train, evaluation, rest, rss, acc in rows:
    values = [float(v) for v in (wall, train, evaluation, rest, rss, acc)]
    by_program[program].append(values)
    print(f"| {round_} | {program} | {values[0]:.1f} | {values[1]:.1f} | {values[2]:.1f} | "
          f"{values[3]:.1f} | {values[4]:.0f} | {100 * values[5]:.2f}% |")
print()
median = {p: [statistics.median(v[i] for v in runs) for i in range(5)] for p, runs in by_program.items()}
torch = median["pytorch"]
for program, m in median.items():
    if program == "pytorch":
        continue
    print(f"{program}: median wall {m[0]:.1f} s against PyTorch's {torch[0]:.1f} s: "
          f"{torch[0] / m[0]:.2f}x faster (training {torch[1] / m[1]:.2f}x, evaluation "
          f"{torch[2] / m[2]:.2f}x); peak memory {m[4]:.0f} MiB, {m[4] / torch[4]:.2f} of "
          f"PyTorch's {torch[4]:.0f} MiB")
EOF
