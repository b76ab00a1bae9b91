#!/bin/sh
# Trains LeNet on Fashion-MNIST with every NNI pruner example (examples/nni_*.yaml, 4 epochs each)
# and the float baseline (the same 4 epochs), then prints one Markdown row per run: final test
# accuracy and the sparsity of each pruned layer (from the last line of metrics.jsonl).
#   sh bench/nni_pruners.sh [build/sparq] > /tmp/nni.md
set -e
SPARQ=${1:-build/sparq}
OUT=${NNI_BENCH_OUT:-/tmp/sparq_nni_bench}
mkdir -p "$OUT"
row() {  # name, run folder, log
  python3 "$(dirname "$0")/run_row.py" "$1" "$2" "$3" accuracy sparsity layer_sparsity
}
echo "| job | test accuracy | sparsity (PQ layers) | per layer |"
echo "|---|---|---|---|"
"$SPARQ" run examples/lenet_fashion_mnist.yaml --epochs 4 --output "$OUT/float" > "$OUT/float.log" 2>&1
row "float (lenet_fashion_mnist, 4 epochs)" "$OUT/float" "$OUT/float.log"
for job in examples/nni_*.yaml; do
  name=$(basename "$job" .yaml)
  [ "$name" = nni_ptq ] && continue  # quantizes a trained float run; not a pruner
  "$SPARQ" run "$job" --output "$OUT/$name" > "$OUT/$name.log" 2>&1
  row "$name" "$OUT/$name" "$OUT/$name.log"
done
