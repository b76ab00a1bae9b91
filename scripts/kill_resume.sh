#!/usr/bin/env bash
# kill -9 at random points, then --resume: each interrupted run must end identical to an
# uninterrupted one (issue 22; docs/reliability.md). Usage:
#   scripts/kill_resume.sh [RUNS=20] [SEED]
# Trains a small quantized and pruned MLP once without interruption, then RUNS times with one to
# three kill -9 at random moments (during training, a checkpoint write or the final writes), each
# time resuming (or starting again when no epoch had finished) until the run completes. Compares
# every epoch's metrics (all but timings) and model.pt byte for byte with the uninterrupted run.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
RANDOM=${2:-$$}
sparq=${SPARQ:-build/sparq}
work=$(mktemp -d /tmp/sparq-kill.XXXXXX)
trap 'rm -rf "$work"' EXIT

cat > "$work/job.yaml" <<'JOB'
model: {zoo: mlp, widths: [64, 32]}
data: {dataset: random, shape: [32], samples: 2048, num_classes: 5, seed: 3}
training: {batch_size: 32, seed: 1, progress: none}
compression:
  quantization_parameters: {default_weight_integer_bits: 0, default_weight_fractional_bits: 7,
                            default_data_integer_bits: 3, default_data_fractional_bits: 4}
  pruning_parameters: {pruning_method: pdp, sparsity: 0.5, epsilon: 0.02}
  training_parameters: {pretraining_epochs: 1, epochs: 4, fine_tuning_epochs: 1}
output: OUT
JOB

job_for() { sed "s|OUT|$work/$1|" "$work/job.yaml" > "$work/$1.yaml"; echo "$work/$1.yaml"; }
# The metrics that must match: everything but wall-clock timings.
metrics() { /usr/bin/python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    for k in ("seconds", "samples_per_second"): m.pop(k, None)
    print(json.dumps(m, sort_keys=True))' "$1"; }

start=$(date +%s.%N)
"$sparq" run "$(job_for ref)" > /dev/null
full=$(/usr/bin/python3 -c "import sys; print(f'{float(sys.argv[1]) - float(sys.argv[2]):.3f}')" "$(date +%s.%N)" "$start")  # no bc on the GPU machine
echo "uninterrupted run: ${full}s, $(wc -l < "$work/ref/metrics.jsonl") epochs"

failed=0
for i in $(seq 1 "$runs"); do
  job=$(job_for "run$i")
  kills=$((1 + RANDOM % 3))
  log=""
  for k in $(seq 1 "$kills"); do
    resume=""; [ -f "$work/run$i/checkpoint.pt" ] && resume=--resume
    "$sparq" run "$job" $resume > /dev/null 2>&1 &
    pid=$!
    # A random moment between 5% and 90% of an uninterrupted run's length (startup included).
    r=$((50 + RANDOM % 850))
    delay=$(/usr/bin/python3 -c "import sys; print(f'{float(sys.argv[1]) * float(sys.argv[2]) / 1000:.3f}')" "$full" "$r")
    sleep "$delay"
    done_epochs=0; [ -f "$work/run$i/metrics.jsonl" ] && done_epochs=$(wc -l < "$work/run$i/metrics.jsonl")
    if kill -9 "$pid" 2> /dev/null; then
      log+=" kill@${delay}s(${done_epochs} epochs done)"
      wait "$pid" 2> /dev/null || true
    else
      wait "$pid" 2> /dev/null || true
      log+=" (finished before ${delay}s)"; break
    fi
  done
  resume=""; [ -f "$work/run$i/checkpoint.pt" ] && resume=--resume
  if ! "$sparq" run "$job" $resume > "$work/run$i.log" 2>&1; then
    echo "run $i:$log; resume failed: $(tail -1 "$work/run$i.log")"; failed=$((failed + 1)); continue
  fi
  if ! cmp -s <(metrics "$work/ref/metrics.jsonl") <(metrics "$work/run$i/metrics.jsonl"); then
    echo "run $i:$log; metrics differ"; diff <(metrics "$work/ref/metrics.jsonl") <(metrics "$work/run$i/metrics.jsonl") | head -4
    failed=$((failed + 1)); continue
  fi
  if ! cmp -s "$work/ref/model.pt" "$work/run$i/model.pt"; then
    echo "run $i:$log; model.pt differs"; failed=$((failed + 1)); continue
  fi
  echo "run $i:$log; resumed: identical"
done
echo "$((runs - failed)) of $runs interrupted runs identical to the uninterrupted one"
[ "$failed" -eq 0 ]
