#!/usr/bin/env bash
# ONNX Runtime on a run's exported model.onnx over the whole Fashion-MNIST test split: its
# accuracy, to compare with the test accuracy sparq printed for the same run (same samples,
# same normalisation: unit, /255). Needs build/node (scripts/setup.sh test installs it).
#   bench/onnx_agreement.sh runs/onnx_lenet
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: bench/onnx_agreement.sh RUN_FOLDER}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp" <<'PY'
import gzip, sys, numpy as np
d = "/usr/share/datasets/fashion-mnist/"
x = np.frombuffer(gzip.open(d + "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
y = np.frombuffer(gzip.open(d + "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
np.save(sys.argv[1] + "/x.npy", (x.astype(np.float32) / np.float32(255)))
np.save(sys.argv[1] + "/labels.npy", y.astype(np.int64))
PY
NODE_PATH=build/node/node_modules node scripts/ort_run.js "$run/model.onnx" "$tmp/x.npy" "$tmp/y.npy"
/usr/bin/python3 - "$tmp" <<'PY'
import sys, numpy as np
logits = np.load(sys.argv[1] + "/y.npy"); labels = np.load(sys.argv[1] + "/labels.npy")
print(f"onnxruntime: {int((logits.argmax(1) == labels).sum())}/{len(labels)} correct = {100 * (logits.argmax(1) == labels).mean():.2f}%")
PY
