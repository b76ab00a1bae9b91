#!/usr/bin/env bash
# sparq tune with 1 and then 2 worker processes on the same study definition (examples/
# mlp_hgq_study.yaml: NSGA-II over HGQ's beta and the learning rate, 12 trials), each into its
# own study folder: wall time, trials per hour and their ratio, and each study's Pareto front.
#   bench/tune_workers.sh [OUT_DIR]      (about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
job=examples/mlp_hgq_study.yaml
declare -A seconds
for workers in 1 2; do
  start=$(date +%s.%N)
  build/sparq tune "$job" --workers "$workers" --output "$out/workers_$workers" > "$out/workers_$workers.log" 2>&1
  end=$(date +%s.%N)
  seconds[$workers]=$(echo "$end - $start" | bc -l)
  echo "--workers $workers: ${seconds[$workers]} s"
  sed -n '/^Pareto front/,/^best job/p' "$out/workers_$workers.log"
done
echo "trials per hour: 1 worker $(echo "3600 * 12 / ${seconds[1]}" | bc -l | cut -c1-6), 2 workers $(echo "3600 * 12 / ${seconds[2]}" | bc -l | cut -c1-6), ratio $(echo "${seconds[1]} / ${seconds[2]}" | bc -l | cut -c1-5)"
