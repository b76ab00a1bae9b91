#!/bin/sh
# Distillation on Fashion-MNIST: the float LeNet (10 epochs) teaches a LeNet with half the
# channels and a 32-wide dense layer (examples/distill_lenet_small.yaml, 4 epochs, kl on the
# logits); the same student trained alone (same epochs, seed) is the baseline. Prints one
# Markdown row per run: test accuracy, parameters, training seconds.
#   sh bench/distillation.sh [build/sparq] > /tmp/distill.md
set -e
SPARQ=${1:-build/sparq}
OUT=${DISTILL_BENCH_OUT:-/tmp/sparq_distill_bench}
mkdir -p "$OUT"
row() {  # name, run folder, log
  python3 - "$1" "$2/metrics.jsonl" "$3" <<'PY'
import json, re, sys
name, metrics, log = sys.argv[1:]
lines = [json.loads(l) for l in open(metrics)]
acc = re.search(r"test accuracy ([0-9.]+)%", open(log).read()).group(1)
secs = sum(l["seconds"] for l in lines)
d = lines[-1].get("distill_loss")
print(f"| {name} | {len(lines)} | {acc}% | {'' if d is None else f'{d:.4f}'} | {secs:.0f} s |")
PY
}
echo "| job | epochs | test accuracy | last distill_loss | training |"
echo "|---|---|---|---|---|"
"$SPARQ" run examples/lenet_fashion_mnist.yaml --output "$OUT/teacher" > "$OUT/teacher.log" 2>&1
row "teacher: float lenet" "$OUT/teacher" "$OUT/teacher.log"
# the example job with the bench's teacher folder, and without its distillation section
sed "s|teacher: ../runs/lenet_fashion_mnist|teacher: $OUT/teacher|" examples/distill_lenet_small.yaml > "$OUT/distilled.yaml"
sed '/^distillation:/,$d' examples/distill_lenet_small.yaml > "$OUT/alone.yaml"
"$SPARQ" run "$OUT/alone.yaml" --output "$OUT/alone" > "$OUT/alone.log" 2>&1
row "student alone" "$OUT/alone" "$OUT/alone.log"
"$SPARQ" run "$OUT/distilled.yaml" --output "$OUT/distilled" > "$OUT/distilled.log" 2>&1
row "student distilled (kl, lambda 1)" "$OUT/distilled" "$OUT/distilled.log"
