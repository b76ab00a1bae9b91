#!/usr/bin/env bash
# Build sparq and run its tests on a GPU machine that has PyTorch 2.x (CUDA) but no Debian packages
# and no network: the libraries come as .deb files carried in build-deps/ (fetch them here with
#   mkdir -p build-deps && cd build-deps && apt-get download libyaml-cpp-dev libyaml-cpp0.7 \
#     nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev \
#     libbenchmark-dev libbenchmark1debian zlib1g-dev
# ), unpacked into a prefix under build-gpu/ (never into /). LibTorch is PyTorch's own; fmt is the
# header-only copy that ships with it
# (torch.utils.cmake_prefix_path).
#   scripts/gpu_build.sh          configure and build
#   scripts/gpu_build.sh test     ... then run the whole test suite
set -euo pipefail
cd "$(dirname "$0")/.."
debs=${SPARQ_DEBS:-build-deps}
build=${SPARQ_GPU_BUILD:-build-gpu}
prefix=$PWD/$build/prefix
mkdir -p "$prefix"
for deb in "$debs"/*.deb; do
  if command -v dpkg >/dev/null; then
    dpkg -x "$deb" "$prefix"
  else  # a .deb is an ar archive holding data.tar.*
    python3 - "$deb" "$prefix" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2])
    pos += 60 + size + (size & 1)
PY
  fi
done
lib=$prefix/usr/lib/x86_64-linux-gnu
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSPARQ_TORCH_WHEEL=ON -DCMAKE_CUDA_ARCHITECTURES=${SPARQ_CUDA_ARCH:-90} \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr;$lib/cmake" \
  -DCMAKE_INCLUDE_PATH="$prefix/usr/include" -DCMAKE_LIBRARY_PATH="$lib" \
  -DCMAKE_CXX_FLAGS="-isystem $prefix/usr/include" \
  -DCMAKE_BUILD_RPATH="$lib"
# SPARQ_GPU_TARGETS="sparq_tests sparq_bench" builds only those.
cmake --build "$build" -j"$(nproc)" ${SPARQ_GPU_TARGETS:+--target $SPARQ_GPU_TARGETS}
if [ "${1:-}" = test ]; then
  cd "$build" && ctest --output-on-failure -j8
fi
