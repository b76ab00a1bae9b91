#!/usr/bin/env bash
# LeNet on Fashion-MNIST, sparq against the reference harness (PQuantML and plain PyTorch on
# Debian's torch 1.13, Python) in the same sitting, runs alternated: float (5 epochs) and the
# harness's pdp_fxp_ramp variant (PDP 0.8 + fixed-point, 1 + 3 + 1 epochs; sparq's
# bench/jobs/lenet_pdp_fxp_peer.yaml). Median s/epoch of each, the compressed/float ratio on each
# side and sparq's speed-up.
#   bench/compare_peers.sh [ROUNDS] [VARIANTS]   (VARIANTS: float,pdp_fxp_ramp (default) or one of
#   them; needs python3-torch and PQuantML's source in /tmp/pquant-src, see ../shared/peers/README.md;
#   about 3 minutes a round for both)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
variants=${2:-float,pdp_fxp_ramp}
harness=../shared/peers/pquant_cpu_bench.py
out=$(mktemp -d)
declare -A job=([float]=bench/jobs/lenet_float_peer.yaml [pdp_fxp_ramp]=bench/jobs/lenet_pdp_fxp_peer.yaml)
for r in $(seq "$rounds"); do
  /usr/bin/python3 "$harness" --variants "$variants" --threads 2 --out "$out/peer_$r.json" >/dev/null
  for v in ${variants//,/ }; do
    build/sparq run "${job[$v]}" --output "$out/sparq_${v}_$r" >/dev/null
  done
done
/usr/bin/python3 - "$out" "$rounds" "$variants" <<'PY'
import json, statistics, sys
out, rounds, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
peer = {v: [] for v in variants}; mine = {v: [] for v in variants}; acc = {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{out}/peer_{r}.json"))["results"]:
        peer[res["variant"]].append(res["train_s_per_epoch_median"])
        acc[("peer", res["variant"])] = res["test_acc"]
    for v in variants:
        epochs = [json.loads(l) for l in open(f"{out}/sparq_{v}_{r}/metrics.jsonl")]
        mine[v].append(statistics.median(e["seconds"] for e in epochs))
        acc[("sparq", v)] = epochs[-1]["eval_accuracy"]
print("| round | " + " | ".join(f"peer {v} s/epoch | sparq {v} s/epoch" for v in variants) + " |")
print("|---" * (1 + 2 * len(variants)) + "|")
for r in range(rounds):
    print(f"| {r + 1} | " + " | ".join(f"{peer[v][r]:.2f} | {mine[v][r]:.2f}" for v in variants) + " |")
med = {(s, v): statistics.median(d[v]) for s, d in (("peer", peer), ("sparq", mine)) for v in variants}
print("| median | " + " | ".join(f"{med['peer', v]:.2f} | {med['sparq', v]:.2f}" for v in variants) + " |")
for v in variants:
    print(f"{v}: sparq {med['peer', v] / med['sparq', v]:.2f}x faster than the peer; test accuracy peer "
          f"{acc['peer', v]:.4f}, sparq {acc['sparq', v]:.4f}")
if "float" in variants and "pdp_fxp_ramp" in variants:
    for s in ("peer", "sparq"):
        print(f"{s}: pdp_fxp_ramp / float epoch = {med[s, 'pdp_fxp_ramp'] / med[s, 'float']:.2f}x")
PY
