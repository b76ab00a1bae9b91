#!/usr/bin/python3
"""Runs a QONNX file the way QONNX defines its ops, in float64 numpy, for sparq's tests.

    qonnx_run.py MODEL.onnx INPUT.f32 OUTPUT.f64 BATCH

INPUT.f32 holds BATCH samples of the model's input shape (raw float32, channels-first, as the
graph input is declared); OUTPUT.f64 gets the graph output (raw float64). The ops: QONNX `Quant`
(qonnx.custom_op.general: clamp to the integer range, then ROUND = half to even / FLOOR / CEIL /
DOWN / HALF_UP / HALF_DOWN), and the standard ops sparq writes, Conv/MaxPool/AveragePool/
BatchNormalization also in qonnx.custom_op.channels_last (NHWC data, OHWI weights). Onnx
Runtime cannot run Quant nodes, and qonnx itself is no Debian package: this is the independent
reader of sparq's QONNX and hls4ml files. Sums are float64, exact for the small codes of tests.
"""
import math
import sys

import numpy as np
import onnx
from onnx import numpy_helper

CHANNELS_LAST = "qonnx.custom_op.channels_last"


def attrs(node):
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def quant(x, scale, zeropt, bits, signed, narrow, mode):
    y = x / scale + zeropt
    bits = float(np.asarray(bits).reshape(-1)[0]) if np.asarray(bits).size == 1 else bits
    if signed:
        lo = -(2.0 ** (bits - 1)) + (1 if narrow else 0)
        hi = 2.0 ** (bits - 1) - 1
    else:
        lo, hi = 0.0, 2.0**bits - 1
    y = np.minimum(np.maximum(y, lo), hi)
    rounders = {
        "ROUND": np.round,  # numpy rounds half to even
        "FLOOR": np.floor,
        "CEIL": np.ceil,
        "DOWN": np.trunc,
        "HALF_UP": lambda v: np.where(v >= 0, np.floor(v + 0.5), -np.floor(-v + 0.5)),
        "HALF_DOWN": lambda v: np.where(v >= 0, np.ceil(v - 0.5), -np.ceil(-v - 0.5)),
    }
    return (rounders[mode](y) - zeropt) * scale


def conv_nchw(x, w, b, a):
    """Conv over channels-first x [N, C, *S] with OI[K...] weights, via channels-last."""
    xl = np.moveaxis(x, 1, -1)
    wl = np.moveaxis(w, 1, -1)
    return np.moveaxis(conv_nhwc(xl, wl, b, a), -1, 1)


def conv_nhwc(x, w, b, a):
    """x [N, *S, C], w [O, *K, C/groups]."""
    dims = x.ndim - 2
    strides = a.get("strides", [1] * dims)
    dil = a.get("dilations", [1] * dims)
    pads = a.get("pads", [0] * (2 * dims))
    groups = a.get("group", 1)
    pad = [(0, 0)] + [(pads[d], pads[d + dims]) for d in range(dims)] + [(0, 0)]
    x = np.pad(x, pad)
    kernel = w.shape[1:-1]
    out_sizes = [(x.shape[1 + d] - dil[d] * (kernel[d] - 1) - 1) // strides[d] + 1 for d in range(dims)]
    out_c = w.shape[0]
    cin_g = w.shape[-1]
    out_g = out_c // groups
    y = np.zeros([x.shape[0]] + out_sizes + [out_c])
    for tap in np.ndindex(*kernel):
        sl = tuple(slice(tap[d] * dil[d], tap[d] * dil[d] + strides[d] * (out_sizes[d] - 1) + 1, strides[d]) for d in range(dims))
        patch = x[(slice(None),) + sl + (slice(None),)]
        for g in range(groups):
            wg = w[g * out_g:(g + 1) * out_g][(slice(None),) + tap + (slice(None),)]  # [out_g, cin_g]
            y[..., g * out_g:(g + 1) * out_g] += patch[..., g * cin_g:(g + 1) * cin_g] @ wg.T
    if b is not None:
        y += b
    return y


def pool_nhwc(x, a, kind):
    dims = x.ndim - 2
    kernel = a["kernel_shape"]
    strides = a.get("strides", kernel)
    pads = a.get("pads", [0] * (2 * dims))
    pad = [(0, 0)] + [(pads[d], pads[d + dims]) for d in range(dims)] + [(0, 0)]
    x = np.pad(x, pad, constant_values=(-np.inf if kind == "max" else 0.0))
    out_sizes = [(x.shape[1 + d] - kernel[d]) // strides[d] + 1 for d in range(dims)]
    acc = None
    for tap in np.ndindex(*kernel):
        sl = tuple(slice(tap[d], tap[d] + strides[d] * (out_sizes[d] - 1) + 1, strides[d]) for d in range(dims))
        v = x[(slice(None),) + sl + (slice(None),)]
        acc = v if acc is None else (np.maximum(acc, v) if kind == "max" else acc + v)
    return acc if kind == "max" else acc / float(np.prod(kernel))


def batchnorm(x, scale, bias, mean, var, eps, channel_axis):
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    r = lambda v: v.reshape(shape)
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(scale) + r(bias)


def run(model, x):
    g = model.graph
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) if numpy_helper.to_array(t).dtype.kind == "f"
           else numpy_helper.to_array(t) for t in g.initializer}
    env[g.input[0].name] = x.astype(np.float64)
    for n in g.node:
        a = attrs(n)
        i = [env[name] if name else None for name in n.input]
        op, last = n.op_type, n.domain == CHANNELS_LAST
        if op == "Quant":
            y = quant(i[0], i[1], i[2], i[3], a.get("signed", 1), a.get("narrow", 0), a.get("rounding_mode", "ROUND"))
        elif op == "Conv":
            b = i[2] if len(i) > 2 else None
            y = conv_nhwc(i[0], i[1], b, a) if last else conv_nchw(i[0], i[1], b, a)
        elif op in ("MaxPool", "AveragePool"):
            kind = "max" if op == "MaxPool" else "avg"
            y = pool_nhwc(i[0], a, kind) if last else np.moveaxis(pool_nhwc(np.moveaxis(i[0], 1, -1), a, kind), -1, 1)
        elif op == "GlobalAveragePool":
            y = i[0].mean(axis=tuple(range(2, i[0].ndim)), keepdims=True)
        elif op == "BatchNormalization":
            y = batchnorm(i[0], i[1], i[2], i[3], i[4], a.get("epsilon", 1e-5), -1 if last else 1)
        elif op == "Transpose":
            y = np.transpose(i[0], a["perm"])
        elif op == "Flatten":
            axis = a.get("axis", 1)
            y = i[0].reshape(int(np.prod(i[0].shape[:axis])), -1)
        elif op == "Reshape":
            shape = [i[0].shape[k] if s == 0 else s for k, s in enumerate(i[1].astype(np.int64).tolist())]
            y = i[0].reshape(shape)
        elif op == "MatMul":
            y = i[0] @ i[1]
        elif op == "Add":
            y = i[0] + i[1]
        elif op == "Sub":
            y = i[0] - i[1]
        elif op == "Mul":
            y = i[0] * i[1]
        elif op == "Div":
            y = i[0] / i[1]
        elif op == "Relu":
            y = np.maximum(i[0], 0)
        elif op == "Identity":
            y = i[0]
        elif op == "Concat":
            y = np.concatenate(i, axis=a["axis"])
        elif op == "Tanh":
            y = np.tanh(i[0])
        elif op == "Sigmoid":
            y = 1 / (1 + np.exp(-i[0]))
        elif op == "LeakyRelu":
            y = np.where(i[0] >= 0, i[0], i[0] * a.get("alpha", 0.01))
        elif op == "Clip":
            y = np.minimum(np.maximum(i[0], i[1]), i[2])
        elif op == "Softmax":
            e = np.exp(i[0] - i[0].max(axis=a.get("axis", -1), keepdims=True))
            y = e / e.sum(axis=a.get("axis", -1), keepdims=True)
        elif op == "Erf":
            y = np.vectorize(math.erf)(i[0])
        elif op == "GlobalMaxPool":
            y = i[0].max(axis=tuple(range(2, i[0].ndim)), keepdims=True)
        else:
            sys.exit(f"qonnx_run.py: node {n.name}: op {op} is not implemented here")
        env[n.output[0]] = y
    return env[g.output[0].name]


def main():
    model_path, in_path, out_path, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = onnx.load(model_path)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.fromfile(in_path, dtype=np.float32).reshape([batch] + dims)
    y = run(model, x)  # files for hls4ml declare batch 1; every op here takes any batch
    y.astype(np.float64).tofile(out_path)


if __name__ == "__main__":
    main()
