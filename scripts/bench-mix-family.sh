#!/usr/bin/env bash
# The train step of every mode of the mixup family against manifold mixing, in alternated
# rounds on one machine: PreActResNet-18, batch 128, CIFAR-shaped random input.
#   scripts/bench-mix-family.sh [ROUNDS] [WIDTHS...]     (default: 3 rounds, widths 16 64)
# Prints each mode's median step time over the rounds and its ratio to manifold's; the raw
# JSON lines go to bench-mix-family.jsonl. Run nothing else meanwhile.
set -euo pipefail
rounds=${1:-3}
shift || true
widths=("${@:-16 64}")
read -r -a widths <<<"${widths[*]}"
mmix=${MMIX:-target/release/mmix}
out=bench-mix-family.jsonl
: >"$out"
modes=("manifold" "input" "cutmix" "patchup" "output" "manifold --per-example"
       "cutmix --per-example" "patchup --per-example" "none")
for round in $(seq "$rounds"); do
  for width in "${widths[@]}"; do
    for mode in "${modes[@]}"; do
      # shellcheck disable=SC2086 # the mode carries its flags
      "$mmix" bench --model preactresnet18 --width "$width" --batch-size 128 \
        --mix $mode --steps 8 --warmup 2 | tee -a "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["width"], r["mix"]), []).append(r["median_ms"])
for width in sorted({w for w, _ in by}):
    base = statistics.median(by[(width, "manifold")])
    print(f"\nwidth {width} ({rows[0]['convolution']}, {rows[0]['threads']} threads):")
    print("| mode | median step (ms) | ratio to manifold |\n|---|---|---|")
    for (w, mix), times in by.items():
        if w == width:
            m = statistics.median(times)
            print(f"| {mix} | {m:.1f} | {m / base:.3f} |")
PY
