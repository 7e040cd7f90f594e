#!/usr/bin/env bash
# Writes the seeds made by programs: the image target's JPEG (by `make-seeds`) and the
# checkpoint target's real checkpoint, of the configuration `fuzzing::checkpoint_config`
# loads onto (an mlp of width 4, one epoch on 100 embedded images).
# Run from the repository root after `cargo build --release` and `cd fuzz && cargo afl build --release`.
set -euo pipefail
seeds=fuzz/seeds
fuzz/target/release/make-seeds "$seeds"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/mmix train --model mlp --width 4 --epochs 1 --train-subset 100 --batch-size 50 \
  --out "$work/run" > /dev/null
checkpoint="$work/run/checkpoint/$(cat "$work/run/checkpoint/latest")"
python3 - "$checkpoint" "$seeds/checkpoint/epoch" <<'PY'
import struct, sys
folder, out = sys.argv[1], sys.argv[2]
model = open(f"{folder}/model.bpk", "rb").read()
optimizer = open(f"{folder}/optimizer.bpk", "rb").read()
state = open(f"{folder}/state.json", "rb").read()
open(out, "wb").write(struct.pack("<II", len(model), len(optimizer)) + model + optimizer + state)
PY
