#!/usr/bin/env bash
# The integer reference against sparq's evaluation on the whole Fashion-MNIST test split: the 8-bit,
# 4-bit, HGQ and PDP LeNet examples as they are, the 8-bit job with WRAP data lanes, and the 8-bit
# job once per rounding mode (1 epoch each), an 8-bit MLP (no batch norm: the hls4ml hand-off is
# exact end to end); `sparq verify` on each run folder (the integer reference, the hls4ml hand-off
# in QONNX's semantics where it applies, ONNX Runtime), then the table.
#   bench/integer_reference.sh [OUT_DIR]      (about 12 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
run() {  # name job [sparq run options]
  local name=$1 job=$2; shift 2
  build/sparq run "$job" --output "$out/$name" "$@" > "$out/$name.log"
  build/sparq verify "$out/$name" > "$out/$name.verify" || true
}
if [ -z "${SKIP_EXAMPLES:-}" ]; then  # SKIP_EXAMPLES=1: only the WRAP and rounding-mode runs
  for job in lenet_fashion_mnist_8bit lenet_fashion_mnist_4bit lenet_hgq lenet_pdp; do run "$job" "examples/$job.yaml"; done
fi
sed 's/overflow_mode_data: SAT/overflow_mode_data: WRAP/' \
  examples/lenet_fashion_mnist_8bit.yaml > "$out/wrap.yaml"
run wrap "$out/wrap.yaml" --epochs 3
for mode in TRN TRN_ZERO RND RND_ZERO RND_INF RND_MIN_INF RND_CONV; do
  sed "s/round_mode: RND\$/round_mode: $mode/" \
    examples/lenet_fashion_mnist_8bit.yaml > "$out/round_$mode.yaml"
  run "round_$mode" "$out/round_$mode.yaml" --epochs 1
done
cat > "$out/mlp_8bit.yaml" <<JOB
name: mlp_8bit
model: {zoo: mlp, widths: [256, 128]}
data: {dataset: fashion_mnist}
training: {optimizer: adam, lr: 0.001, batch_size: 256, epochs: 3, seed: 0}
compression:
  quantization_parameters:
    default_weight_integer_bits: 1
    default_weight_fractional_bits: 6
    default_data_keep_negatives: 1
    default_data_integer_bits: 3
    default_data_fractional_bits: 4
    round_mode: RND_CONV
    layer_specific:
      fc1: {input: {keep_negatives: 0, integer_bits: 0, fractional_bits: 8}}
JOB
run mlp_8bit "$out/mlp_8bit.yaml"
echo "| run | test accuracy | logits that differ (integer reference vs sparq) | float32 nodes | hls4ml hand-off vs sparq |"
echo "|---|---|---|---|---|"
for v in "$out"/*.verify; do
  name=$(basename "$v" .verify)
  acc=$(sed -n 's/^accuracy: sparq //p' "$v")
  diff=$(sed -n 's/^integer reference: \([0-9]* of [0-9]*\) logits.*/\1/p' "$v")
  floats=$(sed -n 's/.*(no integer form): //p' "$v")
  hls=$(sed -n 's/^hls4ml hand-off ([^)]*): \([0-9]* of [0-9]*\) logits.*/\1/p; s/^hls4ml hand-off: not available for this model: export --format [a-z0-9]*: [^:]*: \(.*\)$/refused: \1/p' "$v" | cut -c1-90)
  echo "| $name | $acc | ${diff:-$(head -c 200 "$v")} | ${floats:-none} | ${hls:-?} |"
done
