#!/usr/bin/env bash
# Alternates `mmix bench` with the PyTorch reference (../shared/bench/torch-ref.sh) on the same
# machine, so their ratio is measured under the same conditions, and prints the rounds and
# their summary as Markdown. Usage:
#   scripts/bench-vs-torch.sh [ROUNDS] [STEPS_AT_WIDTH_64] [STEPS_AT_WIDTH_16]
# Build first (`cargo build --release`, which takes oneDNN where libdnnl-dev is installed) and keep the machine
# otherwise idle. Each round runs, per width: mmix --mix none, mmix --mix manifold, PyTorch
# contiguous, PyTorch channels-last. With OWN_MMIX=PATH each round also times that binary, a
# build without oneDNN (`MMIX_ONEDNN=off cargo build --release`, what a machine without
# libdnnl-dev builds: convolutions on mmix's own kernels), in both mixes; the summary gives its
# ratio too. With BURN_CONV=1 the main build is also timed with its convolutions on Burn
# (MMIX_ONEDNN=off MMIX_OWN_CONV=off). With BF16=1 each round also times mmix's manifold
# step with `--precision bf16` and PyTorch under torch.autocast("cpu", dtype=torch.bfloat16)
# in both formats (a CPU with AVX512-BF16 or AMX). The ratio is mmix's images per second over
# the faster PyTorch format's in the same round, at the same precision.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-4}
steps_64=${2:-5}
steps_16=${3:-10}
mmix=${MMIX:-./target/release/mmix}
torch_ref=${TORCH_REF:-../shared/bench/torch-ref.sh}
results=$(mktemp)
trap 'rm -f "$results"' EXIT

lscpu | grep -E 'Model name|^CPU\(s\)|MHz' || true
"$mmix" bench --model mlp --channels 1 --image-size 8 --steps 1 --warmup 0 | tail -n 1

# One result line: round, width, program, images per second, peak RSS in MiB.
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

mmix_run() { # round width steps mix label precision [env...]
  local round=$1 width=$2 steps=$3 mix=$4 label=$5 precision=$6
  shift 6
  env "$@" "${MMIX_BINARY:-$mmix}" bench --model preactresnet18 --width "$width" --batch-size 128 --mix "$mix" \
    --steps "$steps" --warmup 1 --precision "$precision" | tail -n 1 | python3 -c '
import json, sys
line = json.loads(sys.stdin.read())
print(*sys.argv[1:], line["images_per_second"], line["peak_rss_mb"], sep="\t")' \
    "$round" "$width" "$label" >>"$results"
}

torch_run() { # round width steps format precision
  local round=$1 width=$2 steps=$3 format=$4 precision=$5 output
  output=$(/usr/bin/time -f "peak-rss-kb %M" "$torch_ref" --widths "$width" --formats "$format" \
    --batch 128 --steps "$steps" --warmup 1 --no-env --precision "$precision" 2>&1)
  # The reference's table: w B format median min max img/s GFLOP/s ...
  local ips rss_kb
  ips=$(awk -v w="$width" '$1 == w && $2 == 128 { print $7 }' <<<"$output")
  rss_kb=$(awk '$1 == "peak-rss-kb" { print $2 }' <<<"$output")
  local label=torch-$format
  [[ $precision == bf16 ]] && label=torch-bf16-$format
  record "$round" "$width" "$label" "$ips" "$((rss_kb / 1024))"
}

for round in $(seq "$rounds"); do
  for width in 64 16; do
    steps=$([[ $width == 64 ]] && echo "$steps_64" || echo "$steps_16")
    echo "round $round, width $width" >&2
    for mix in none manifold; do
      mmix_run "$round" "$width" "$steps" "$mix" "mmix-$mix" f32
      if [[ -n ${OWN_MMIX:-} ]]; then
        MMIX_BINARY=$OWN_MMIX mmix_run "$round" "$width" "$steps" "$mix" "own-conv-$mix" f32
      fi
      if [[ ${BURN_CONV:-0} == 1 ]]; then
        mmix_run "$round" "$width" "$steps" "$mix" "burn-conv-$mix" f32 MMIX_ONEDNN=off MMIX_OWN_CONV=off
      fi
    done
    if [[ ${BF16:-0} == 1 ]]; then
      mmix_run "$round" "$width" "$steps" manifold mmix-bf16 bf16
    fi
    for format in contiguous channels_last; do
      torch_run "$round" "$width" "$steps" "$format" fp32
      if [[ ${BF16:-0} == 1 ]]; then
        torch_run "$round" "$width" "$steps" "$format" bf16
      fi
    done
  done
done

python3 - "$results" <<'EOF'
import statistics, sys
from collections import defaultdict

runs = defaultdict(dict)  # (round, width) -> program -> (img/s, MiB)
for line in open(sys.argv[1]):
    round_, width, program, ips, rss = line.split("\t")
    runs[(int(round_), int(width))][program] = (float(ips), float(rss))

burn = any(p.startswith("burn-conv") for r in runs.values() for p in r)
own = any(p.startswith("own-conv") for r in runs.values() for p in r)
header = "| round | width | mmix none | mmix manifold |"
header += " own kernels none / manifold |" if own else ""
header += " Burn conv none / manifold |" if burn else ""
header += " PyTorch contiguous / channels-last | ratio: manifold (none) |"
print(header)
print("|" + "---|" * (header.count("|") - 1))
ratios = defaultdict(lambda: defaultdict(list))
for (round_, width), r in sorted(runs.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
    torch_best = max(r["torch-contiguous"][0], r["torch-channels_last"][0])
    for mix in ("none", "manifold"):
        ratios[width][mix].append(r[f"mmix-{mix}"][0] / torch_best)
        if own:
            ratios[width][f"own-{mix}"].append(r[f"own-conv-{mix}"][0] / torch_best)
    row = f"| {round_} | {width} | {r['mmix-none'][0]:.1f} img/s | {r['mmix-manifold'][0]:.1f} img/s |"
    if own:
        row += f" {r['own-conv-none'][0]:.1f} / {r['own-conv-manifold'][0]:.1f} img/s ({ratios[width]['own-manifold'][-1]:.2f}×) |"
    if burn:
        row += f" {r['burn-conv-none'][0]:.1f} / {r['burn-conv-manifold'][0]:.1f} img/s |"
    row += f" {r['torch-contiguous'][0]:.1f} / {r['torch-channels_last'][0]:.1f} img/s |"
    row += f" **{ratios[width]['manifold'][-1]:.2f}×** ({ratios[width]['none'][-1]:.2f}×) |"
    print(row)

print()
for width in sorted(ratios, reverse=True):
    rounds = [r for (rd, w), r in runs.items() if w == width]
    def median(program):
        return statistics.median(r[program][0] for r in rounds)
    def rss(*programs):
        values = [r[p][1] for r in rounds for p in programs]
        return f"{min(values):.0f}–{max(values):.0f} MiB"
    for mix in ("manifold", "none") + (("own-manifold", "own-none") if own else ()):
        values = ratios[width][mix]
        program = "own-conv-" + mix[4:] if mix.startswith("own-") else "mmix-" + mix
        print(
            f"width {width}, {mix}: median ratio {statistics.median(values):.2f}× "
            f"(range {min(values):.2f}–{max(values):.2f}×, ≥ 1.0× in {sum(v >= 1 for v in values)} "
            f"of {len(values)} rounds, ≥ 0.8× in {sum(v >= 0.8 for v in values)}); "
            f"median img/s {median(program):.1f}"
        )
    print(
        f"width {width}: median img/s PyTorch contiguous {median('torch-contiguous'):.1f}, "
        f"channels-last {median('torch-channels_last'):.1f}; peak RSS mmix "
        f"{rss('mmix-manifold')}, PyTorch {rss('torch-contiguous', 'torch-channels_last')}"
    )
    if all("mmix-bf16" in r for r in rounds):
        def best(r, prefix):
            return max(r[prefix + "contiguous"][0], r[prefix + "channels_last"][0])
        against_bf16 = [r["mmix-bf16"][0] / best(r, "torch-bf16-") for r in rounds]
        against_fp32 = [r["mmix-bf16"][0] / best(r, "torch-") for r in rounds]
        print(
            f"width {width}, bf16 manifold: median img/s mmix {median('mmix-bf16'):.1f}, PyTorch "
            f"autocast contiguous {median('torch-bf16-contiguous'):.1f} / channels-last "
            f"{median('torch-bf16-channels_last'):.1f}; median ratio against PyTorch autocast "
            f"{statistics.median(against_bf16):.2f}× (range {min(against_bf16):.2f}–"
            f"{max(against_bf16):.2f}×), against PyTorch fp32 {statistics.median(against_fp32):.2f}×"
        )
EOF
