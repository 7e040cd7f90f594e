#!/usr/bin/env bash
# Fuzzes each target for SECONDS (default 600), one after another, from its seeds and kept
# corpus; then keeps the queue's coverage-finding inputs in fuzz/corpus/<target> and prints
# what AFL++ saw.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (see fuzz/README.md)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx cifar image checkpoint config)
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
for target in "${targets[@]}"; do
  input=$(mktemp -d)
  cp seeds/"$target"/* "$input"/
  [ -d corpus/"$target" ] && cp corpus/"$target"/* "$input"/ 2>/dev/null || true
  mkdir -p out
  echo "== $target: $seconds s"
  cargo afl fuzz -i "$input" -o out/"$target" -V "$seconds" -t 2000 -m none \
    target/release/"$target" > out/"$target".log 2>&1 || true
  stats=out/"$target"/default/fuzzer_stats
  for key in run_time execs_done execs_per_sec corpus_count saved_crashes saved_hangs; do
    grep "^$key " "$stats" || true
  done
  # Keep the starting inputs (`orig:`) and the queue entries that reached new edges (AFL++
  # marks them `+cov`); the rest only reorder the same coverage.
  rm -rf corpus/"$target"
  mkdir -p corpus/"$target"
  find out/"$target"/default/queue -maxdepth 1 -type f \( -name '*+cov*' -o -name '*orig:*' \) \
    -exec cp {} corpus/"$target"/ \;
  # Names without commas or colons travel everywhere.
  for file in corpus/"$target"/*; do
    [ -e "$file" ] || continue
    mv "$file" corpus/"$target"/"$(sha256sum "$file" | cut -c1-16)"
  done
  # Then the smallest subset with the same coverage, where afl-cmin manages.
  rm -rf corpus/"$target".min
  if cargo afl cmin -i corpus/"$target" -o corpus/"$target".min -t 2000 -m none \
    -- target/release/"$target" > out/"$target"-cmin.log 2>&1 &&
    [ -n "$(ls corpus/"$target".min 2>/dev/null)" ]; then
    rm -rf corpus/"$target"
    mv corpus/"$target".min corpus/"$target"
  fi
  rm -rf corpus/"$target".min
  echo "kept $(ls corpus/"$target" | wc -l) inputs in fuzz/corpus/$target"
  rm -rf "$input"
done
