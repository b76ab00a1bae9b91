// The fused MLP's work on one tile of samples, written once for the CUDA kernels (a block per tile,
// a thread per sample) and for the CPU, which runs the same phases thread after thread (the
// fused path's twin where there is no GPU, and what its tests check on every machine).
//
// A tile keeps everything in one block of shared memory: the network's (quantized) weights, the
// tile's inputs and every layer's output z (feature-major, rows kStride apart so that the threads
// of a warp reach distinct banks), and two scratch rows of the widest lane. The forward pass of a
// sample runs in its own thread; the backward recomputes it, then per layer:
//   a   = lane(z_prev)                 the layer's input, recomputed from the kept z
//   dW  = Σ_t δ[:,t] a[:,t]ᵀ, db = Σ_t δ  across the tile's samples: one partial row per tile
//   δ'  = Wᵀ δ, then the lane's backward with the threads over the features (a feature's samples
//         in one to kTile/width threads, whose HGQ width sums are added in order: no atomics)
// and the partial rows of all tiles are added in tile order afterwards (deterministic sums).
#pragma once

#include <cstdint>

#include "quant/fixed_point_element.h"

namespace sparq::train::mlp {

constexpr int kTile = 64;             ///< samples per tile (threads per block)
constexpr int kStride = kTile + 1;    ///< shared-memory row stride
constexpr int kMaxLayers = 8;
constexpr int kMaxOps = 40;
constexpr int kMaxChain = 6;          ///< element-wise ops on one lane
constexpr int kMaxWidth = 128;
constexpr float kMinI = -23, kMaxI = 23, kMinF = -24, kMaxF = 24;  // FixedPointQuantizerImpl's HGQ bounds

enum OpKind : int { kRelu, kFixed, kHgq };

/// One element-wise op of a lane: a ReLU, a fixed-width quantizer (training semantics) or an HGQ
/// quantizer with trained widths (one per feature or one for the lane).
struct LaneOp {
  int kind = kRelu, round = 0, overflow = 0;
  int period = 1;                                  ///< kHgq: widths in the lane (1 or the lane's width)
  float* k = nullptr;                              ///< kHgq: widths (i and f clamped in place by the forward)
  float* i = nullptr;
  float* f = nullptr;
  quant::element::FixedConstants<float> fixed{};  ///< kFixed
  int grad = -1;  ///< kHgq: offset of its sums g·dq/df (lane width entries, then g·dq/di) in the partial row
};

struct Layer {
  int in = 0, out = 0, in_pad = 0, out_pad = 0;  ///< pads: multiples of 4 (register blocks)
  const float* w = nullptr;                      ///< [out][in]
  const float* b = nullptr;                      ///< [out], or null
  int ops_begin = 0, ops_end = 0;                ///< the lane ops applied to this layer's output
  int w_grad = 0, b_grad = -1;                   ///< offsets in the partial row
  int w_smem = 0, b_smem = 0, z_smem = 0;        ///< offsets in shared memory (floats)
};

/// The network, as the kernels read it (passed by value).
struct Desc {
  int64_t n = 0;  ///< samples
  int layers = 0, ops = 0, in_width = 0, in_ops_begin = 0, in_ops_end = 0;
  int z0_smem = 0, p_smem = 0, q_smem = 0, sums_smem = 0, smem_floats = 0;
  int row = 0;                   ///< floats per tile in the partial buffer
  bool input_lane_grads = false; ///< the input lane has trained widths: the backward goes through it
  Layer layer[kMaxLayers];
  LaneOp op[kMaxOps];
};

SPARQ_HD int64_t tiles(const Desc& d) { return (d.n + kTile - 1) / kTile; }
SPARQ_HD int valid_in(const Desc& d, int64_t tile) {
  const int64_t left = d.n - tile * kTile;
  return left < kTile ? static_cast<int>(left) : kTile;
}

SPARQ_HD float clamped(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/// The value of one op on feature j.
SPARQ_HD float op_value(const LaneOp& op, float v, int j) {
  if (op.kind == kRelu) return v > 0 ? v : 0.0f;
  if (op.kind == kFixed) return quant::element::fixed_training_value<float>(v, op.fixed, op.round);
  const int w = op.period == 1 ? 0 : j;
  return quant::element::hgq_element<float, false>(v, op.k[w], clamped(op.f[w], kMinF, kMaxF),
                                                   clamped(op.i[w], kMinI, kMaxI), 0.0f, op.round, op.overflow)
      .q;
}

SPARQ_HD float chain_value(const Desc& d, int begin, int end, float v, int j) {
  for (int o = begin; o < end; ++o) v = op_value(d.op[o], v, j);
  return v;
}

/// The gradient to the lane's input z from g at its output; g·dq/df and g·dq/di of the chain's
/// trained ops added to sf, si (indexed from `begin`).
SPARQ_HD float chain_backward(const Desc& d, int begin, int end, float z, float g, int j, double* sf, double* si) {
  float in[kMaxChain];
  float v = z;
  for (int o = 0; o < end - begin; ++o) in[o] = v, v = op_value(d.op[begin + o], v, j);
  for (int o = end - begin - 1; o >= 0; --o) {
    const LaneOp& op = d.op[begin + o];
    if (op.kind == kRelu) {
      g = in[o] > 0 ? g : 0.0f;
    } else if (op.kind == kFixed) {
      g *= quant::element::fixed_training_slope<float>(in[o], op.fixed);
    } else {
      const int w = op.period == 1 ? 0 : j;
      const auto h = quant::element::hgq_element<float, true>(in[o], op.k[w], clamped(op.f[w], kMinF, kMaxF),
                                                              clamped(op.i[w], kMinI, kMaxI), g, op.round,
                                                              op.overflow);
      sf[o] += static_cast<double>(h.gf), si[o] += static_cast<double>(h.gi);
      g = h.dx;
    }
  }
  return g;
}

// ---- phases: `t` is the thread; a phase that reads other threads' values follows a barrier ----

/// Weights (zero-padded) and the tile's inputs into shared memory, all threads together.
SPARQ_HD void load_tile(const Desc& d, float* s, const float* x, int64_t tile, int t) {
  for (int l = 0; l < d.layers; ++l) {
    const Layer& L = d.layer[l];
    for (int e = t; e < L.out_pad * L.in_pad; e += kTile) {
      const int o = e / L.in_pad, i = e % L.in_pad;
      s[L.w_smem + e] = (o < L.out && i < L.in) ? L.w[o * L.in + i] : 0.0f;
    }
    for (int o = t; o < L.out_pad; o += kTile) s[L.b_smem + o] = (L.b && o < L.out) ? L.b[o] : 0.0f;
  }
  const int valid = valid_in(d, tile), width = d.in_width;
  const float* xt = x + tile * kTile * width;
  for (int e = t; e < kTile * width; e += kTile) {
    const int r = e / width, j = e % width;
    s[d.z0_smem + j * kStride + r] = r < valid ? xt[e] : 0.0f;
  }
}

/// a = the lane (ops [begin, end)) of z, for sample t.
SPARQ_HD void lane_column(const Desc& d, int begin, int end, const float* z, float* a, int width, int t) {
  for (int j = 0; j < width; ++j) a[j * kStride + t] = chain_value(d, begin, end, z[j * kStride + t], j);
}

/// z = W a + b for sample t (four outputs at a time).
SPARQ_HD void dense_column(const Layer& L, const float* s, const float* a, float* z, int t) {
  const float* w = s + L.w_smem;
  for (int o = 0; o < L.out; o += 4) {
    float acc0 = s[L.b_smem + o], acc1 = s[L.b_smem + o + 1], acc2 = s[L.b_smem + o + 2], acc3 = s[L.b_smem + o + 3];
    const float* w0 = w + o * L.in_pad;
    for (int i = 0; i < L.in; ++i) {
      const float av = a[i * kStride + t];
      acc0 += w0[i] * av, acc1 += w0[L.in_pad + i] * av, acc2 += w0[2 * L.in_pad + i] * av,
          acc3 += w0[3 * L.in_pad + i] * av;
    }
    z[o * kStride + t] = acc0;
    if (o + 1 < L.out) z[(o + 1) * kStride + t] = acc1;
    if (o + 2 < L.out) z[(o + 2) * kStride + t] = acc2;
    if (o + 3 < L.out) z[(o + 3) * kStride + t] = acc3;
  }
}

/// Sample t through every layer: z of each layer kept in shared memory (p: scratch).
SPARQ_HD void forward_column(const Desc& d, float* s, int t) {
  const float* z = s + d.z0_smem;
  int width = d.in_width, begin = d.in_ops_begin, end = d.in_ops_end;
  for (int l = 0; l < d.layers; ++l) {
    const Layer& L = d.layer[l];
    lane_column(d, begin, end, z, s + d.p_smem, width, t);
    dense_column(L, s, s + d.p_smem, s + L.z_smem, t);
    z = s + L.z_smem, width = L.out, begin = L.ops_begin, end = L.ops_end;
  }
}

/// The network's output for sample t (the last layer's lane).
SPARQ_HD void write_output(const Desc& d, const float* s, float* y, int64_t tile, int t) {
  const Layer& L = d.layer[d.layers - 1];
  if (t >= valid_in(d, tile)) return;
  float* yt = y + (tile * kTile + t) * L.out;
  for (int o = 0; o < L.out; ++o) yt[o] = chain_value(d, L.ops_begin, L.ops_end, s[L.z_smem + o * kStride + t], o);
}

/// δ = the gradient to the network's output, for sample t (0 beyond the batch).
SPARQ_HD void load_output_grad(const Desc& d, float* s, const float* gy, int64_t tile, int t) {
  const Layer& L = d.layer[d.layers - 1];
  const bool valid = t < valid_in(d, tile);
  const float* gt = gy + (tile * kTile + t) * L.out;
  for (int o = 0; o < L.out; ++o) s[d.q_smem + o * kStride + t] = valid ? gt[o] : 0.0f;
}

/// The lane's backward in place on g (width rows): a feature's samples split among
/// kTile / width threads (one thread per feature from 64 features on), each keeping its sums of
/// the trained widths' g·dq/df, g·dq/di in double and leaving them in shared memory (`sums`)
/// for lane_sums.
SPARQ_HD int lane_split(int width) { return width >= kTile ? 1 : kTile / width; }
SPARQ_HD void lane_backward(const Desc& d, int begin, int end, const float* z, float* g, int width, int valid,
                            float* sums, int t) {
  if (begin == end) return;
  const int split = lane_split(width), chunk = (kTile + split - 1) / split;
  for (int slot = t; slot < width * split; slot += kTile) {
    const int j = slot % width, part = slot / width;
    const int r0 = part * chunk, r1 = r0 + chunk < valid ? r0 + chunk : valid;
    double sf[kMaxChain] = {}, si[kMaxChain] = {};
    for (int r = r0; r < r1; ++r)
      g[j * kStride + r] = chain_backward(d, begin, end, z[j * kStride + r], g[j * kStride + r], j, sf, si);
    for (int o = 0; o < end - begin; ++o) {
      sums[(2 * o) * kMaxWidth + slot] = static_cast<float>(sf[o]);
      sums[(2 * o + 1) * kMaxWidth + slot] = static_cast<float>(si[o]);
    }
  }
}

/// The lane's trained widths' sums over the tile into the partial row (the parts of a feature
/// added in order), after lane_backward.
SPARQ_HD void lane_sums(const Desc& d, int begin, int end, const float* sums, int width, float* row, int t) {
  const int split = lane_split(width);
  for (int o = begin; o < end; ++o) {
    const LaneOp& op = d.op[o];
    if (op.kind != kHgq || op.grad < 0) continue;
    for (int j = t; j < width; j += kTile)
      for (int c = 0; c < 2; ++c) {
        double acc = 0;
        for (int part = 0; part < split; ++part) acc += sums[(2 * (o - begin) + c) * kMaxWidth + part * width + j];
        row[op.grad + c * width + j] = static_cast<float>(acc);
      }
  }
}

/// dW = Σ_r δ[:,r] a[:,r]ᵀ and db = Σ_r δ[:,r] over the tile, in 4x4 blocks of W spread over the threads.
SPARQ_HD void dense_grads(const Layer& L, const float* delta, const float* a, float* row, int t) {
  const int nob = L.out_pad / 4, nib = L.in_pad / 4;
  for (int q = t; q < nob * nib; q += kTile) {
    const int o0 = (q / nib) * 4, i0 = (q % nib) * 4;
    // Rows past the layer's width are read clamped to its last row and never written.
    const float* d0 = delta + (o0 < L.out ? o0 : L.out - 1) * kStride;
    const float* d1 = delta + (o0 + 1 < L.out ? o0 + 1 : L.out - 1) * kStride;
    const float* d2 = delta + (o0 + 2 < L.out ? o0 + 2 : L.out - 1) * kStride;
    const float* d3 = delta + (o0 + 3 < L.out ? o0 + 3 : L.out - 1) * kStride;
    const float* a0 = a + (i0 < L.in ? i0 : L.in - 1) * kStride;
    const float* a1 = a + (i0 + 1 < L.in ? i0 + 1 : L.in - 1) * kStride;
    const float* a2 = a + (i0 + 2 < L.in ? i0 + 2 : L.in - 1) * kStride;
    const float* a3 = a + (i0 + 3 < L.in ? i0 + 3 : L.in - 1) * kStride;
    float acc[4][4] = {};
    float bias[4] = {};
    for (int r = 0; r < kTile; ++r) {
      const float dv[4] = {d0[r], d1[r], d2[r], d3[r]};
      const float av[4] = {a0[r], a1[r], a2[r], a3[r]};
      for (int u = 0; u < 4; ++u) {
        bias[u] += dv[u];
        for (int v = 0; v < 4; ++v) acc[u][v] += dv[u] * av[v];
      }
    }
    for (int u = 0; u < 4 && o0 + u < L.out; ++u) {
      for (int v = 0; v < 4 && i0 + v < L.in; ++v) row[L.w_grad + (o0 + u) * L.in + i0 + v] = acc[u][v];
      if (i0 == 0 && L.b_grad >= 0) row[L.b_grad + o0 + u] = bias[u];
    }
  }
}

/// g = Wᵀ δ for sample t (four inputs at a time).
SPARQ_HD void dense_input_grad(const Layer& L, const float* s, const float* delta, float* g, int t) {
  const float* w = s + L.w_smem;
  for (int i = 0; i < L.in; i += 4) {
    float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    for (int o = 0; o < L.out; ++o) {
      const float dv = delta[o * kStride + t];
      const float* wr = w + o * L.in_pad + i;
      acc0 += wr[0] * dv, acc1 += wr[1] * dv, acc2 += wr[2] * dv, acc3 += wr[3] * dv;
    }
    g[i * kStride + t] = acc0;
    if (i + 1 < L.in) g[(i + 1) * kStride + t] = acc1;
    if (i + 2 < L.in) g[(i + 2) * kStride + t] = acc2;
    if (i + 3 < L.in) g[(i + 3) * kStride + t] = acc3;
  }
}

/// Clamps the trained widths in place as the HGQ quantizer's training forward does (one tile does it).
SPARQ_HD void clamp_widths(const Desc& d, int t) {
  for (int o = 0; o < d.ops; ++o) {
    const LaneOp& op = d.op[o];
    if (op.kind != kHgq) continue;
    for (int j = t; j < op.period; j += kTile)
      op.f[j] = clamped(op.f[j], kMinF, kMaxF), op.i[j] = clamped(op.i[j], kMinI, kMaxI);
  }
}

/// The forward of one tile: `each(phase)` runs phase(t) for every thread, then a barrier.
template <typename Each>
SPARQ_HD void forward_tile(const Desc& d, float* s, const float* x, float* y, int64_t tile, Each&& each) {
  each([&](int t) { load_tile(d, s, x, tile, t); });
  each([&](int t) {
    forward_column(d, s, t);
    write_output(d, s, y, tile, t);
  });
}

/// The backward of one tile: its partial row (weight, bias and width gradients summed over the
/// tile's samples); `gy` the gradient to the output.
template <typename Each>
SPARQ_HD void backward_tile(const Desc& d, float* s, const float* x, const float* gy, float* row, int64_t tile,
                            Each&& each) {
  const int valid = valid_in(d, tile);
  each([&](int t) { load_tile(d, s, x, tile, t); });
  each([&](int t) {
    forward_column(d, s, t);
    load_output_grad(d, s, gy, tile, t);
  });
  const Layer& last = d.layer[d.layers - 1];
  float* sums = s + d.sums_smem;
  if (last.ops_begin != last.ops_end) {
    each([&](int t) { lane_backward(d, last.ops_begin, last.ops_end, s + last.z_smem, s + d.q_smem, last.out, valid, sums, t); });
    each([&](int t) { lane_sums(d, last.ops_begin, last.ops_end, sums, last.out, row, t); });
  }
  float *delta = s + d.q_smem, *scratch = s + d.p_smem;
  for (int l = d.layers - 1; l >= 0; --l) {
    const Layer& L = d.layer[l];
    const float* z_prev = l == 0 ? s + d.z0_smem : s + d.layer[l - 1].z_smem;
    const int begin = l == 0 ? d.in_ops_begin : d.layer[l - 1].ops_begin;
    const int end = l == 0 ? d.in_ops_end : d.layer[l - 1].ops_end;
    each([&](int t) { lane_column(d, begin, end, z_prev, scratch, L.in, t); });
    each([&](int t) { dense_grads(L, delta, scratch, row, t); });
    if (l == 0 && !d.input_lane_grads) break;
    each([&](int t) { dense_input_grad(L, s, delta, scratch, t); });
    if (begin != end) {
      each([&](int t) { lane_backward(d, begin, end, z_prev, scratch, L.in, valid, sums, t); });
      each([&](int t) { lane_sums(d, begin, end, sums, L.in, row, t); });
    }
    float* swap = delta;
    delta = scratch, scratch = swap;
  }
}

}  // namespace sparq::train::mlp
