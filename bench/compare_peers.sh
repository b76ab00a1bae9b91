#!/usr/bin/env bash
# Float LeNet on Fashion-MNIST: sparq against the reference harness's plain PyTorch (Debian torch
# 1.13, Python) in the same sitting, runs alternated, median s/epoch of each and their ratio.
#   bench/compare_peers.sh [ROUNDS]       (needs python3-torch; about 1 minute a round)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
harness=../shared/peers/pquant_cpu_bench.py
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  /usr/bin/python3 "$harness" --variants float --threads 2 --out "$out/peer_$r.json" >/dev/null
  build/sparq run bench/jobs/lenet_float_peer.yaml --output "$out/sparq_$r" >/dev/null
done
/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
peer, mine, peer_acc, my_acc = [], [], [], []
for r in range(1, rounds + 1):
    res = json.load(open(f"{out}/peer_{r}.json"))["results"][0]
    peer.append(res["train_s_per_epoch_median"]); peer_acc.append(res["test_acc"])
    epochs = [json.loads(l) for l in open(f"{out}/sparq_{r}/metrics.jsonl")]
    mine.append(statistics.median(e["seconds"] for e in epochs)); my_acc.append(epochs[-1]["eval_accuracy"])
print("round  peer s/epoch  sparq s/epoch")
for r in range(rounds):
    print(f"{r+1:5}  {peer[r]:12.2f}  {mine[r]:13.2f}")
p, m = statistics.median(peer), statistics.median(mine)
print(f"median {p:12.2f}  {m:13.2f}   speed-up sparq/peer = {p/m:.2f}x")
print(f"test accuracy after 5 epochs: peer {peer_acc[-1]:.4f}, sparq {my_acc[-1]:.4f}")
PY
