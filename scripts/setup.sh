#!/usr/bin/env bash
# One-command set-up for sparq on Debian 12: installs the Debian packages that are missing,
# builds (Release, ccache, precompiled headers), then
#   scripts/setup.sh run [JOB.yaml] [sparq run options]   trains a job (the default job without one)
#   scripts/setup.sh test                                 runs the whole test suite (ctest)
#   scripts/setup.sh build                                only builds
#   scripts/setup.sh sanitize [ctest args]                the test suite built with ASan + UBSan (clang, build-asan/)
#   scripts/setup.sh fuzz [SECONDS] [TARGET...]           each libFuzzer target for SECONDS (default 60; build-asan/)
#   scripts/setup.sh fuzz --runs N [TARGET...]            N inputs each from a fixed seed (CI; reproducible)
# Idempotent: nothing is installed or rebuilt when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-build}
shift || true
case "$action" in run|test|build|sanitize|fuzz) ;;
  *) echo "usage: scripts/setup.sh [run [JOB.yaml] | test | build | sanitize [ctest args] | fuzz [SECONDS | --runs N] [TARGET...]]" >&2; exit 2 ;;
esac

packages=(
  g++ cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-openmp   # LibTorch 1.13 (CPU); OpenBLAS, or LibTorch's matmuls use reference BLAS (~6x slower)
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libsqlite3-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist              # /usr/share/datasets/fashion-mnist
  libonnx-dev libprotobuf-dev protobuf-compiler   # ONNX import and export
  libpq-dev                          # sparq tune: studies in PostgreSQL (SQLite: libsqlite3-dev above)
  python3-onnx python3-torch         # the tests' real clients: onnx's checker, torch.onnx.export of fixtures
)
case "$action" in sanitize|fuzz) packages+=(clang libclang-rt-14-dev) ;; esac   # ASan, UBSan, libFuzzer
case "$action" in test|sanitize) packages+=(chromium) ;; esac   # the report tests open report.html in it
# sparq tune's real clients: Optuna opens the studies; a PostgreSQL 15 server the tests start on a local port
case "$action" in test|sanitize) packages+=(python3-optuna python3-psycopg2 postgresql) ;; esac
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

# Node.js for onnxruntime-node (the tests run exported models in ONNX Runtime); Debian's own
# packages unless a node is already installed.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing nodejs npm"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# LibTorch loads libblas.so.3 through Debian's alternatives: make sure it is OpenBLAS (OpenMP).
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | sed -n 's/^Value: //p')
case "$blas" in
  *openblas*) ;;
  *) echo "setup: warning: libblas.so.3 is '$blas', not OpenBLAS; training will be slow" >&2 ;;
esac

build=build
cmake_flags=(-DCMAKE_BUILD_TYPE=Release)
case "$action" in
  sanitize|fuzz)   # one checked build for both: clang, ASan + UBSan everywhere, libFuzzer coverage
    build=build-asan
    cmake_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DSPARQ_SANITIZE=ON -DSPARQ_FUZZ=ON
                 -DSPARQ_BUILD_BENCH=OFF) ;;
esac
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja "${cmake_flags[@]}" >/dev/null
fi
cmake --build "$build" -j"$(nproc)"

# onnxruntime-node (a full CPU ONNX Runtime) into build/node; its install script would fetch CUDA
# files from the network, which ONNXRUNTIME_NODE_INSTALL=skip turns off.
if { [ "$action" = test ] || [ "$action" = sanitize ]; } && [ ! -d "$build/node/node_modules/onnxruntime-node" ]; then
  mkdir -p "$build/node"
  (cd "$build/node" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error onnxruntime-node@1.30 >/dev/null)
fi

case "$action" in
  run)
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then job=$1; shift; exec "$build/sparq" run "$job" "$@"; fi
    exec "$build/sparq" run "$@" ;;
  test)
    # The real clients are installed: a test that needs one fails instead of skipping.
    export SPARQ_REQUIRE_CLIENTS=1
    cd "$build" && exec ctest --output-on-failure -j"$(nproc)" ;;
  sanitize)
    # Any ASan or UBSan report fails the test it happens in. LibTorch is not instrumented: its
    # containers' annotations would be false positives, and its allocations at exit are not ours.
    export SPARQ_REQUIRE_CLIENTS=1
    export ASAN_OPTIONS=detect_container_overflow=0:detect_leaks=0:abort_on_error=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    cd "$build" && exec ctest --output-on-failure -j"$(nproc)" "$@" ;;
  fuzz)
    # SECONDS of exploration from a random seed (a campaign), or --runs N: N inputs from seed 1,
    # the same inputs on every run of one commit (CI: a failure there is reproducible here).
    if [ "${1:-}" = "--runs" ]; then
      [ -n "${2:-}" ] || { echo "usage: scripts/setup.sh fuzz --runs N [TARGET...]" >&2; exit 2; }
      limit=(-runs="$2" -seed=1); what="$2 inputs from seed 1"; scratch=$build/fuzz-corpus-fixed; shift 2
      rm -rf "$scratch"   # the committed seeds only, as on a fresh clone
    else
      limit=(-max_total_time="${1:-60}"); what="${1:-60}s"; scratch=$build/fuzz-corpus; shift || true
    fi
    targets=("$@")
    [ ${#targets[@]} -gt 0 ] || targets=($(ls "$build/fuzz"))
    mkdir -p "$build/fuzz-findings"
    export ASAN_OPTIONS=detect_container_overflow=0:detect_leaks=0
    # sparq's memory checks bind well below libFuzzer's RSS limit (2.5 GiB): an input that asks
    # for more than the limit must end in sparq's error, one below it may allocate.
    export SPARQ_MEMORY_LIMIT=1G
    for t in "${targets[@]}"; do
      t=${t#fuzz_}
      # New inputs go to a scratch corpus (the repo's seeds stay as committed); the findings
      # fixed so far (fuzz/regressions/) run first; a crash is written to
      # build-asan/fuzz-findings/ and ends the run with libFuzzer's report.
      mkdir -p "$scratch/$t"
      echo "fuzz: $t, $what"
      log="$build/fuzz-findings/$t.log"
      rc=0
      "$build/fuzz/fuzz_$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
        -artifact_prefix="$build/fuzz-findings/$t-" "$scratch/$t" "fuzz/corpus/$t" \
        $( [ -d "fuzz/regressions/$t" ] && echo "fuzz/regressions/$t" ) > "$log" 2>&1 || rc=$?
      grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^SUMMARY|Test unit written" "$log" || true
      [ "$rc" -eq 0 ] || { tail -40 "$log"; echo "fuzz: $t found a failure (build-asan/fuzz-findings/)"; exit 1; }
    done ;;
esac
