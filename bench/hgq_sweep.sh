#!/usr/bin/env bash
# HGQ on Fashion-MNIST mlp: one run per beta (examples/mlp_hgq.yaml with hgq_beta replaced) and the
# uniform 8-bit model (the same job with HGQ off), then the accuracy-vs-EBOPs table.
#   bench/hgq_sweep.sh [BETA ...]        (default: 1e-7 1e-6 3e-6 1e-5 3e-5; about 1 minute a run)
set -euo pipefail
cd "$(dirname "$0")/.."
betas=("$@")
[ ${#betas[@]} -gt 0 ] || betas=(1e-7 1e-6 3e-6 1e-5 3e-5)
out=${SWEEP_DIR:-$(mktemp -d)}
mkdir -p "$out"
sed 's/use_high_granularity_quantization: true/use_high_granularity_quantization: false/' examples/mlp_hgq.yaml > "$out/uniform.yaml"
build/sparq run "$out/uniform.yaml" --output "$out/uniform" > "$out/uniform.log"
for b in "${betas[@]}"; do
  sed "s/hgq_beta: .*/hgq_beta: $b/" examples/mlp_hgq.yaml > "$out/beta_$b.yaml"
  build/sparq run "$out/beta_$b.yaml" --output "$out/beta_$b" > "$out/beta_$b.log"
done
/usr/bin/python3 - "$out" "${betas[@]}" <<'PY'
import json, sys
out, betas = sys.argv[1], sys.argv[2:]
def last(run):
    lines = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return lines[-1]
base = last("uniform")
print("| model | beta | test accuracy | EBOPs | EBOPs vs uniform 8-bit | weight bits (mean, non-zero) | sparsity |")
print("|---|---|---|---|---|---|---|")
def row(name, beta, m):
    mean_bits = m["weight_bits"] / max(m["nonzero_weights"], 1)
    print(f"| {name} | {beta} | {100*m['eval_accuracy']:.2f}% | {m['ebops']:.4g} | {base['ebops']/m['ebops']:.2f}x fewer |"
          f" {mean_bits:.2f} | {100*m['sparsity']:.1f}% |")
row("uniform 8-bit (fixed)", "-", base)
for b in betas:
    row("HGQ per weight", b, last(f"beta_{b}"))
PY
