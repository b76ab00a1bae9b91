#!/usr/bin/env bash
# Everything the GPU table of bench/RESULTS.md needs, in one device call (the machine is released
# between calls): build, the CUDA-only tests, sparq's steps launched and captured, plain PyTorch
# eager and torch.compile, the peers' jet-tagger script, and `sparq run` end to end.
#   bench/gpu/one_call.sh [OUT]    (OUT: where the logs go, default $OUT or /tmp/sparq-gpu)
# Needs build-deps/ (see scripts/gpu_build.sh) with fashion-mnist/ in it.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/sparq-gpu}}
mkdir -p "$out"
nvidia-smi -L > "$out/gpu.txt" 2>&1
SPARQ_GPU_TARGETS="sparq_cli sparq_tests sparq_bench" scripts/gpu_build.sh > "$out/build.log" 2>&1 ||
  { tail -40 "$out/build.log"; exit 1; }
export SPARQ_FMNIST_DIR=$PWD/build-deps/fashion-mnist
build-gpu/tests/sparq_tests --gtest_filter='*Cuda*:CudaGraph*:HGQ*:Trainer*' > "$out/tests.log" 2>&1
tail -3 "$out/tests.log"
bench=build-gpu/bench/sparq_bench
filter='jet_tagger|lenet_fashion_mnist/256'
SPARQ_BENCH_DEVICE=cuda $bench --benchmark_filter="$filter" --benchmark_min_time=1 > "$out/bench_launched.txt" 2>&1
SPARQ_BENCH_DEVICE=cuda SPARQ_BENCH_CUDA_GRAPH=1 $bench --benchmark_filter="$filter" --benchmark_min_time=1 \
  > "$out/bench_graph.txt" 2>&1
python3 bench/gpu/pytorch_step.py > "$out/pytorch_eager.jsonl" 2>&1
python3 bench/gpu/pytorch_step.py --compile > "$out/pytorch_compile.jsonl" 2>&1
[ -f ../shared/peers/gpu/jet_pytorch_bench.py ] && python3 ../shared/peers/gpu/jet_pytorch_bench.py > "$out/peers_jet.txt" 2>&1
for mode in auto off; do
  build-gpu/sparq run examples/jet_tagger_hgq.yaml --device cuda --cuda-graph $mode --output "$out/run_hgq_$mode" \
    > "$out/run_hgq_$mode.txt" 2>&1
done
# The 8-bit LeNet end to end, Fashion-MNIST from the carried copy (fixed8 at batch 256).
sed "s|^  dataset: fashion_mnist|  dataset: fashion_mnist\n  dir: $SPARQ_FMNIST_DIR|" examples/lenet_fashion_mnist_8bit.yaml \
  > "$out/lenet8.yaml"
for mode in auto off; do
  build-gpu/sparq run "$out/lenet8.yaml" --device cuda --cuda-graph $mode --output "$out/run_lenet8_$mode" \
    > "$out/run_lenet8_$mode.txt" 2>&1
done
grep -h "samples/s\|steps:\|EBOPs\|accuracy" "$out"/run_*.txt | tail -16
grep -h "^BM_" "$out"/bench_*.txt | awk '{print $1, $2, $3}'
