#!/usr/bin/env bash
# Everything the GPU table of bench/RESULTS.md needs, in one device call (the machine is released
# between calls): build, the CUDA-only tests, sparq's steps launched and captured, plain PyTorch
# eager and torch.compile, the peers' jet-tagger script, and `sparq run` end to end.
#   bench/gpu/one_call.sh [OUT]    (OUT: where the logs go, default $OUT or /tmp/sparq-gpu; they
#                                   come as OUT/logs.tar.gz, since only 8 files come back from a call)
#   SPARQ_ONE_CALL_SKIP="tests runs"  leaves steps out (build tests bench pytorch peers runs)
# Needs build-deps/ (see scripts/gpu_build.sh) with fashion-mnist/ in it, and the peers' script as
# build-deps/jet_pytorch_bench.py (it lives outside the repo, in ../shared/peers/gpu/).
set -uo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-${OUT:-/tmp/sparq-gpu}}
out=$(mktemp -d /tmp/sparq-one-call.XXXX)  # the logs, packed into $dest/logs.tar.gz at the end
mkdir -p "$dest"
trap 'tar czf "$dest/logs.tar.gz" -C "$out" .' EXIT
skip=" ${SPARQ_ONE_CALL_SKIP:-} "
start=$SECONDS
step() {  # step NAME: false when NAME is skipped; logs when each step starts
  [[ $skip == *" $1 "* ]] && return 1
  echo "[$((SECONDS - start)) s] $1" | tee -a "$out/steps.txt"
}
nvidia-smi -L > "$out/gpu.txt" 2>&1
if step build; then
  SPARQ_GPU_TARGETS="sparq_cli sparq_tests sparq_bench" scripts/gpu_build.sh > "$out/build.log" 2>&1 ||
    { tail -40 "$out/build.log"; exit 1; }
fi
export SPARQ_FMNIST_DIR=$PWD/build-deps/fashion-mnist
if step tests; then
  build-gpu/tests/sparq_tests --gtest_filter='*Cuda*:CudaGraph*:HGQ*:Trainer*:FusedMlp*' > "$out/tests.log" 2>&1
  grep -E "FAILED|PASSED|SKIPPED|Failure" -A3 "$out/tests.log" | tail -40
fi
bench=build-gpu/bench/sparq_bench
filter='jet_tagger|lenet_fashion_mnist/256'
if step bench; then
  SPARQ_BENCH_DEVICE=cuda $bench --benchmark_filter="$filter" --benchmark_min_time=1 > "$out/bench_launched.txt" 2>&1
  SPARQ_BENCH_DEVICE=cuda SPARQ_BENCH_CUDA_GRAPH=1 $bench --benchmark_filter="$filter" --benchmark_min_time=1 \
    > "$out/bench_graph.txt" 2>&1
  # The fused MLP kernels (the jet tagger's Dense chain), launched and captured.
  SPARQ_BENCH_DEVICE=cuda SPARQ_BENCH_FUSED_MLP=auto $bench --benchmark_filter=jet_tagger --benchmark_min_time=1 \
    > "$out/bench_fused_launched.txt" 2>&1
  SPARQ_BENCH_DEVICE=cuda SPARQ_BENCH_FUSED_MLP=auto SPARQ_BENCH_CUDA_GRAPH=1 $bench --benchmark_filter=jet_tagger \
    --benchmark_min_time=1 > "$out/bench_fused_graph.txt" 2>&1
  grep -h "^BM_" "$out"/bench_*.txt | awk '{print $1, $2, $3}'
fi
if step pytorch; then
  python3 bench/gpu/pytorch_step.py > "$out/pytorch_eager.jsonl" 2>&1
  python3 bench/gpu/pytorch_step.py --compile > "$out/pytorch_compile.jsonl" 2>&1
  grep -h '^{' "$out"/pytorch_*.jsonl
fi
if step peers; then
  peers=../shared/peers/gpu/jet_pytorch_bench.py
  [ -f "$peers" ] || peers=build-deps/jet_pytorch_bench.py
  [ -f "$peers" ] && python3 "$peers" > "$out/peers_jet.txt" 2>&1
fi
if step runs; then
  # The run folders stay outside $OUT (only so many files come back); their metrics are copied.
  runs=${SPARQ_ONE_CALL_RUNS:-/tmp/sparq-runs}
  rm -rf "$runs" && mkdir -p "$runs"
  # auto: fused MLP kernels, captured; graph: the layers' ops captured; off: the layers' ops launched.
  for mode in auto graph off; do
    case $mode in
      auto) flags="--cuda-graph auto --fused-mlp auto" ;;
      graph) flags="--cuda-graph auto --fused-mlp off" ;;
      off) flags="--cuda-graph off --fused-mlp off" ;;
    esac
    build-gpu/sparq run examples/jet_tagger_hgq.yaml --device cuda $flags --output "$runs/hgq_$mode" \
      > "$out/run_hgq_$mode.txt" 2>&1
    cp "$runs/hgq_$mode/metrics.jsonl" "$out/metrics_hgq_$mode.jsonl" 2>/dev/null
  done
  # The 8-bit LeNet end to end, Fashion-MNIST from the carried copy (fixed8 at batch 256).
  sed "s|^  dataset: fashion_mnist|  dataset: fashion_mnist\n  dir: $SPARQ_FMNIST_DIR|" examples/lenet_fashion_mnist_8bit.yaml \
    > "$out/lenet8.yaml"
  for mode in auto off; do
    build-gpu/sparq run "$out/lenet8.yaml" --device cuda --cuda-graph $mode --output "$runs/lenet8_$mode" \
      > "$out/run_lenet8_$mode.txt" 2>&1
    cp "$runs/lenet8_$mode/metrics.jsonl" "$out/metrics_lenet8_$mode.jsonl" 2>/dev/null
  done
  for f in "$out"/run_*.txt; do echo "== $f"; grep -h "samples/s\|steps:\|layers:\|EBOPs\|accuracy\|cuda graph" "$f" | tail -6; done
fi
echo "[$((SECONDS - start)) s] done" | tee -a "$out/steps.txt"
