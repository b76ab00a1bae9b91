#!/bin/sh
# SparseML recipes on LeNet / Fashion-MNIST next to float LeNet trained for the same epochs:
# seed 004's GradualKS recipe unchanged (25 epochs) and the gradual pruning + int8 QAT markdown
# recipe (10 epochs). Prints one Markdown row per run: test accuracy, final sparsity, seconds.
#   sh bench/sparseml_recipes.sh [build/sparq] > /tmp/sparseml.md
set -e
SPARQ=${1:-build/sparq}
OUT=${SPARSEML_BENCH_OUT:-/tmp/sparq_sparseml_bench}
mkdir -p "$OUT"
row() {  # name, run folder, log
  python3 "$(dirname "$0")/run_row.py" "$1" "$2" "$3" epochs accuracy sparsity seconds sparsity_curve
}
echo "| job | epochs | test accuracy | final sparsity | training | sparsity per epoch (%) |"
echo "|---|---|---|---|---|---|"
for epochs in 25 10; do
  "$SPARQ" run examples/lenet_fashion_mnist.yaml --epochs $epochs --output "$OUT/float$epochs" > "$OUT/float$epochs.log" 2>&1
  row "float lenet" "$OUT/float$epochs" "$OUT/float$epochs.log"
done
for job in sparseml_gradual_ks sparseml_prune_qat; do
  "$SPARQ" run examples/$job.yaml --output "$OUT/$job" > "$OUT/$job.log" 2>&1
  row "$job" "$OUT/$job" "$OUT/$job.log"
done
