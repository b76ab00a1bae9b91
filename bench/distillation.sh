#!/bin/sh
# Distillation on Fashion-MNIST: the float LeNet (10 epochs) teaches a LeNet with half the
# channels and a 32-wide dense layer (examples/distill_lenet_small.yaml, kl on the logits) for
# EPOCHS epochs (default: the example's 4) and each seed of SEEDS (default 0); the same student
# trained alone (same epochs, seed) is the baseline. Prints one Markdown row per run: test
# accuracy, last distill_loss, training seconds.
#   sh bench/distillation.sh [build/sparq] > /tmp/distill.md
#   EPOCHS=10 SEEDS="0 1 2" sh bench/distillation.sh build/sparq
set -e
SPARQ=${1:-build/sparq}
OUT=${DISTILL_BENCH_OUT:-/tmp/sparq_distill_bench}
mkdir -p "$OUT"
row() {  # name, run folder, log
  python3 "$(dirname "$0")/run_row.py" "$1" "$2" "$3" epochs accuracy distill_loss seconds
}
echo "| job | epochs | test accuracy | last distill_loss | training |"
echo "|---|---|---|---|---|"
"$SPARQ" run examples/lenet_fashion_mnist.yaml --output "$OUT/teacher" > "$OUT/teacher.log" 2>&1
row "teacher: float lenet" "$OUT/teacher" "$OUT/teacher.log"
# the example job with the bench's teacher folder, and without its distillation section
EPOCHS=${EPOCHS:-4}
for seed in ${SEEDS:-0}; do
  sed -e "s|teacher: ../runs/lenet_fashion_mnist|teacher: $OUT/teacher|" -e "s|epochs: 4|epochs: $EPOCHS|" \
    -e "s|seed: 0|seed: $seed|" examples/distill_lenet_small.yaml > "$OUT/distilled_$seed.yaml"
  sed '/^distillation:/,$d' "$OUT/distilled_$seed.yaml" > "$OUT/alone_$seed.yaml"
  "$SPARQ" run "$OUT/alone_$seed.yaml" --output "$OUT/alone_$seed" > "$OUT/alone_$seed.log" 2>&1
  row "student alone, seed $seed" "$OUT/alone_$seed" "$OUT/alone_$seed.log"
  "$SPARQ" run "$OUT/distilled_$seed.yaml" --output "$OUT/distilled_$seed" > "$OUT/distilled_$seed.log" 2>&1
  row "student distilled (kl, lambda 1), seed $seed" "$OUT/distilled_$seed" "$OUT/distilled_$seed.log"
done
