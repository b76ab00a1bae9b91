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
  python3 - "$1" "$2/metrics.jsonl" "$3" <<'PY'
import json, re, sys
name, metrics, log = sys.argv[1:]
lines = [json.loads(l) for l in open(metrics)]
acc = re.search(r"test accuracy ([0-9.]+)%", open(log).read()).group(1)
secs = sum(l["seconds"] for l in lines)
curve = " ".join(f"{l.get('sparsity', 0)*100:.1f}" for l in lines)
print(f"| {name} | {len(lines)} | {acc}% | {lines[-1].get('sparsity', 0)*100:.1f}% | {secs:.0f} s | {curve} |")
PY
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
