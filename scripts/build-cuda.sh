#!/usr/bin/env bash
# Builds `mmix` with `--features cuda` on a machine that reaches only the package registries.
#
# CubeCL's CUDA backend links LLVM 23 with its NVPTX target, and its build script would
# download an LLVM bundle. This script installs the same LLVM from the Python registry
# (`mlc-llvm-static`: static libraries, headers and an `llvm-config`), places it where the
# bundler looks, marked installed so that nothing is downloaded, and builds.
#
#   scripts/build-cuda.sh          the binary in target/cuda/mmix, and target/cuda/mmix.xz
#                                  (stripped, compressed: to carry to a GPU machine, where
#                                  scripts/gpu-check.sh runs it)
#   scripts/build-cuda.sh --check  type-checks the cuda build only (what CI runs)
#
# At run time the binary needs the NVIDIA driver (libcuda.so.1) and, for kernels that use
# exp/log/erf, libdevice (CUDA_PATH/nvvm/libdevice). It links only libc, libm, libgcc_s and
# libstdc++ besides (built without oneDNN, so that libdnnl is not needed there). CUDARC_CUDA_VERSION (default 12080, CUDA 12.8) picks the
# driver API it calls: a driver at least that new is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
case "${1:-}" in
  --check) mode=check ;;
  "") ;;
  *) echo "usage: scripts/build-cuda.sh [--check]" >&2; exit 2 ;;
esac

llvm_package='mlc-llvm-static[all]==23.1.1.post0'
# The folder and marker tracel-llvm-bundler 23.1.0-4 looks for. Its build script does not
# rerun when XDG_DATA_HOME changes, so the default location is used, not a one-off one.
tracel="${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4"

if [ ! -f "$tracel/.tracel-llvm-installed" ]; then
  python=python3
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    { echo "build-cuda: mlc-llvm-static needs Python 3.10 or newer" >&2; exit 1; }
  venv="${MMIX_LLVM_VENV:-$HOME/.cache/mmix-llvm23}"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  echo "build-cuda: installing $llvm_package into $venv (about 92 MB)"
  "$venv/bin/python" -m pip install --quiet "$llvm_package"
  prefix="$("$venv/bin/python" -m mlc_llvm_static.config --prefix)"
  [ -x "$prefix/bin/llvm-config" ] || { echo "build-cuda: no llvm-config under $prefix" >&2; exit 1; }
  mkdir -p "$(dirname "$tracel")"
  ln -sfn "$prefix" "$tracel"
  touch "$tracel/.tracel-llvm-installed"
fi
echo "build-cuda: LLVM $("$tracel/bin/llvm-config" --version) at $tracel"

export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-12080}"
# Without oneDNN's convolutions (the GPU runs them): Debian's libdnnl would otherwise be a
# run-time dependency (with libOpenCL behind it) that a GPU machine may not have.
export MMIX_ONEDNN="${MMIX_ONEDNN:-off}"
if [ "$mode" = check ]; then
  exec cargo check --release --features cuda --all-targets
fi

cargo build --profile cuda --features cuda --bin mmix
target="${CARGO_TARGET_DIR:-target}"
binary="$target/cuda/mmix"
# xz, not gzip: a lent GPU machine takes 64 MiB of carried files, the working tree included,
# and the binary is 58 MB under gzip -9 against 39 MB under xz -9.
xz -9 -T0 --stdout "$binary" > "$binary.xz.tmp"
mv "$binary.xz.tmp" "$binary.xz"
ls -l "$binary" "$binary.xz"
echo "build-cuda: on the GPU machine: xz -dc mmix.xz > mmix && chmod +x mmix && ./mmix bench --device cuda (or scripts/gpu-check.sh)"
