#!/usr/bin/env bash
# One-command set-up for sparq on Debian 12: installs the Debian packages that are missing,
# builds (Release, ccache, precompiled headers), then
#   scripts/setup.sh run [JOB.yaml] [sparq run options]   trains a job (the default job without one)
#   scripts/setup.sh test                                 runs the whole test suite (ctest)
#   scripts/setup.sh build                                only builds
# Idempotent: nothing is installed or rebuilt when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-build}
shift || true
case "$action" in run|test|build) ;; *) echo "usage: scripts/setup.sh [run [JOB.yaml] | test | build]" >&2; exit 2 ;; esac

packages=(
  g++ cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp   # LibTorch 1.13 (CPU); OpenBLAS, or LibTorch's matmuls use reference BLAS (~6x slower)
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libsqlite3-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist              # /usr/share/datasets/fashion-mnist
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# LibTorch loads libblas.so.3 through Debian's alternatives: make sure it is OpenBLAS (OpenMP).
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | sed -n 's/^Value: //p')
case "$blas" in
  *openblas*) ;;
  *) echo "setup: warning: libblas.so.3 is '$blas', not OpenBLAS; training will be slow" >&2 ;;
esac

build=build
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build" -j"$(nproc)"

case "$action" in
  run)
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then job=$1; shift; exec "$build/sparq" run "$job" "$@"; fi
    exec "$build/sparq" run "$@" ;;
  test)
    cd "$build" && exec ctest --output-on-failure -j"$(nproc)" ;;
esac
