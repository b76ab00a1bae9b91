// The fused MLP's work on one tile of samples, written once for the CUDA kernels (a block per tile)
// and for the CPU, which runs the same phases thread after thread (the fused path's twin where
// there is no GPU, and what its tests check on every machine).
//
// A tile keeps everything in one block of shared memory: the network's (quantized) weights, the
// tile's inputs and every layer's output z (feature-major, rows kStride apart so that the threads
// of a warp reach distinct banks), two scratch rows of the widest lane and a scratch area for
// partial sums. kThreads threads work on a tile's kTile samples, in two layouts:
//   matrix phases   a sample and a quarter of the outputs per thread (a warp: 32 samples, the
//                   same outputs, so the weights are read once for the warp)
//   lane phases     a feature and a run of samples per thread: the HGQ constants of a width are
//                   computed once for its run
// The forward keeps every layer's z in global memory (a row per tile); the backward reads them
// back, then per layer:
//   a   = lane(z_prev)                 the layer's input, recomputed from the kept z
//   dW  = Σ_t δ[:,t] a[:,t]ᵀ, db = Σ_t δ  in 4x4 blocks, the samples split among threads when there
//         are fewer blocks than threads (their parts added in order): one partial row per tile
//   δ'  = Wᵀ δ, then the lane's backward (a feature's runs keep their width sums in double, and
//         the runs are added in order: no atomics)
// and the partial rows of all tiles are added in tile order afterwards (deterministic sums).
#pragma once

#include <cstdint>

#include "quant/fixed_point_element.h"

namespace sparq::train::mlp {

constexpr int kTile = 64;                  ///< samples per tile
constexpr int kGroups = 4;                 ///< threads per sample in the matrix phases
constexpr int kThreads = kTile * kGroups;  ///< threads per tile (per block)
constexpr int kStride = kTile + 1;         ///< shared-memory row stride
constexpr int kMaxLayers = 8;
constexpr int kMaxOps = 40;
constexpr int kMaxChain = 6;   ///< element-wise ops on one lane
constexpr int kMaxWidth = 128;
constexpr int kGradSums = 20;  ///< partial sums of one 4x4 weight block: 16 weights, 4 biases
constexpr float kMinI = -23, kMaxI = 23, kMinF = -24, kMaxF = 24;  // FixedPointQuantizerImpl's HGQ bounds
static_assert(kMaxWidth <= kThreads, "a lane phase gives every feature at least one thread");
/// The scratch area for partial sums (the lanes' width sums, or dense_grads' parts), in floats.
constexpr int kSumsFloats = (2 * kMaxChain > kGradSums ? 2 * kMaxChain : kGradSums) * kThreads;

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
  int z_keep = 0;                                ///< offset of its z in a tile's row of `Desc::z`
};

/// The network, as the kernels read it (passed by value).
struct Desc {
  int64_t n = 0;  ///< samples
  int layers = 0, ops = 0, in_width = 0, in_ops_begin = 0, in_ops_end = 0;
  int z0_smem = 0, p_smem = 0, q_smem = 0, sums_smem = 0;
  int smem_floats = 0;            ///< shared memory of the backward
  int row = 0;                    ///< floats per tile in the partial buffer
  float* z = nullptr;             ///< every layer's z, kept by the forward for the backward
  int z_row = 0;                  ///< floats per tile there
  bool input_lane_grads = false;  ///< the input lane has trained widths: the backward goes through it
  Layer layer[kMaxLayers];
  LaneOp op[kMaxOps];
};

SPARQ_HD int64_t tiles(const Desc& d) { return (d.n + kTile - 1) / kTile; }
/// The forward's shared memory: what lies before the second scratch row (q) and the sums.
SPARQ_HD int forward_floats(const Desc& d) { return d.q_smem; }
SPARQ_HD int valid_in(const Desc& d, int64_t tile) {
  const int64_t left = d.n - tile * kTile;
  return left < kTile ? static_cast<int>(left) : kTile;
}

SPARQ_HD float clamped(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

#ifdef __CUDA_ARCH__
#define SPARQ_UNROLL _Pragma("unroll")
#else
#define SPARQ_UNROLL
#endif

/// Four floats from 16-byte aligned shared memory, in one load on the GPU.
struct F4 {
  float x, y, z, w;
};
SPARQ_HD F4 load4(const float* p) {
#ifdef __CUDA_ARCH__
  const float4 v = *reinterpret_cast<const float4*>(p);
  return {v.x, v.y, v.z, v.w};
#else
  return {p[0], p[1], p[2], p[3]};
#endif
}

// ---- a lane's ops on one feature ----

/// The ops [begin, end) of a lane on feature j, with their HGQ constants computed once.
struct Chain {
  int n = 0;
  const LaneOp* op = nullptr;
  quant::element::HgqConstants<float> c[kMaxChain]{};
};

SPARQ_HD Chain chain_of(const Desc& d, int begin, int end, int j) {
  Chain ch;
  ch.n = end - begin, ch.op = d.op + begin;
  SPARQ_UNROLL
  for (int o = 0; o < kMaxChain; ++o) {
    if (o >= ch.n || ch.op[o].kind != kHgq) continue;
    const LaneOp& op = ch.op[o];
    const int w = op.period == 1 ? 0 : j;
    ch.c[o] = quant::element::hgq_constants<float>(op.k[w], clamped(op.f[w], kMinF, kMaxF),
                                                   clamped(op.i[w], kMinI, kMaxI), op.overflow);
  }
  return ch;
}

/// The value of the chain's op o.
SPARQ_HD float op_value(const Chain& ch, int o, float v) {
  const LaneOp& op = ch.op[o];
  if (op.kind == kRelu) return v > 0 ? v : 0.0f;
  if (op.kind == kFixed) return quant::element::fixed_training_value<float>(v, op.fixed, op.round);
  return quant::element::hgq_apply<float, false>(ch.c[o], v, 0.0f, op.round, op.overflow).q;
}

SPARQ_HD float chain_value(const Chain& ch, float v) {
  SPARQ_UNROLL
  for (int o = 0; o < kMaxChain; ++o)
    if (o < ch.n) v = op_value(ch, o, v);
  return v;
}

/// The gradient to the lane's input z from g at its output; g·dq/df and g·dq/di of the chain's
/// trained ops added to sf[o], si[o].
SPARQ_HD float chain_backward(const Chain& ch, float z, float g, double* sf, double* si) {
  float in[kMaxChain];
  float v = z;
  SPARQ_UNROLL
  for (int o = 0; o < kMaxChain; ++o)
    if (o < ch.n) in[o] = v, v = op_value(ch, o, v);
  SPARQ_UNROLL
  for (int o = kMaxChain - 1; o >= 0; --o) {
    if (o >= ch.n) continue;
    const LaneOp& op = ch.op[o];
    if (op.kind == kRelu) {
      g = in[o] > 0 ? g : 0.0f;
    } else if (op.kind == kFixed) {
      g *= quant::element::fixed_training_slope<float>(in[o], op.fixed);
    } else {
      const auto h = quant::element::hgq_apply<float, true>(ch.c[o], in[o], g, op.round, op.overflow);
      sf[o] += static_cast<double>(h.gf), si[o] += static_cast<double>(h.gi);
      g = h.dx;
    }
  }
  return g;
}

// ---- how the threads share a phase's work ----

/// `items` things to do over the tile's samples: each item's samples cut into `parts` runs of
/// `chunk`, so that items x parts fills the block (an item is a lane's feature, or a weight block).
struct Split {
  int chunk, parts;
};
SPARQ_HD Split split_rows(int items) {
  int threads = kThreads / items;
  threads = threads < 1 ? 1 : threads;
  const int chunk = (kTile + threads - 1) / threads;
  return {chunk, (kTile + chunk - 1) / chunk};
}

/// Thread t's feature j and samples [r0, r1) in a lane phase; false when it has none.
SPARQ_HD bool lane_run(int width, int t, int rows, int& j, int& r0, int& r1) {
  const Split sp = split_rows(width);
  if (t >= width * sp.parts) return false;
  j = t % width, r0 = (t / width) * sp.chunk;
  r1 = r0 + sp.chunk < rows ? r0 + sp.chunk : rows;
  return true;
}

// ---- phases: `t` is the thread; a phase that reads other threads' values follows a barrier ----

/// Weights (zero-padded) and the tile's inputs into shared memory, all threads together.
SPARQ_HD void load_tile(const Desc& d, float* s, const float* x, int64_t tile, int t) {
  for (int l = 0; l < d.layers; ++l) {
    const Layer& L = d.layer[l];
    for (int e = t; e < L.out_pad * L.in_pad; e += kThreads) {
      const int o = e / L.in_pad, i = e % L.in_pad;
      s[L.w_smem + e] = (o < L.out && i < L.in) ? L.w[o * L.in + i] : 0.0f;
    }
    for (int o = t; o < L.out_pad; o += kThreads) s[L.b_smem + o] = (L.b && o < L.out) ? L.b[o] : 0.0f;
  }
  const int valid = valid_in(d, tile), width = d.in_width;
  const float* xt = x + tile * kTile * width;
  for (int e = t; e < kTile * width; e += kThreads) {
    const int r = e / width, j = e % width;
    s[d.z0_smem + j * kStride + r] = r < valid ? xt[e] : 0.0f;
  }
}

/// a = the lane (ops [begin, end)) of z, every sample of the tile.
SPARQ_HD void lane_values(const Desc& d, int begin, int end, const float* z, float* a, int width, int t) {
  int j, r0, r1;
  if (!lane_run(width, t, kTile, j, r0, r1)) return;
  const Chain ch = chain_of(d, begin, end, j);
  for (int r = r0; r < r1; ++r) a[j * kStride + r] = chain_value(ch, z[j * kStride + r]);
}

/// z = W a + b: thread t's sample, four outputs at a time (its group's share).
SPARQ_HD void dense_column(const Layer& L, const float* s, const float* a, float* z, int t) {
  const int r = t % kTile, in4 = L.in / 4 * 4;
  const float* w = s + L.w_smem;
  for (int o = 4 * (t / kTile); o < L.out; o += 4 * kGroups) {
    float acc0 = s[L.b_smem + o], acc1 = s[L.b_smem + o + 1], acc2 = s[L.b_smem + o + 2], acc3 = s[L.b_smem + o + 3];
    const float* w0 = w + o * L.in_pad;
    int i = 0;
    for (; i < in4; i += 4) {
      const float a0 = a[i * kStride + r], a1 = a[(i + 1) * kStride + r], a2 = a[(i + 2) * kStride + r],
                  a3 = a[(i + 3) * kStride + r];
      const F4 v0 = load4(w0 + i), v1 = load4(w0 + L.in_pad + i), v2 = load4(w0 + 2 * L.in_pad + i),
               v3 = load4(w0 + 3 * L.in_pad + i);
      acc0 += v0.x * a0 + v0.y * a1 + v0.z * a2 + v0.w * a3;
      acc1 += v1.x * a0 + v1.y * a1 + v1.z * a2 + v1.w * a3;
      acc2 += v2.x * a0 + v2.y * a1 + v2.z * a2 + v2.w * a3;
      acc3 += v3.x * a0 + v3.y * a1 + v3.z * a2 + v3.w * a3;
    }
    for (; i < L.in; ++i) {
      const float av = a[i * kStride + r];
      acc0 += w0[i] * av, acc1 += w0[L.in_pad + i] * av, acc2 += w0[2 * L.in_pad + i] * av,
          acc3 += w0[3 * L.in_pad + i] * av;
    }
    z[o * kStride + r] = acc0;
    if (o + 1 < L.out) z[(o + 1) * kStride + r] = acc1;
    if (o + 2 < L.out) z[(o + 2) * kStride + r] = acc2;
    if (o + 3 < L.out) z[(o + 3) * kStride + r] = acc3;
  }
}

/// The tile through every layer: z of each layer kept in shared memory (p: the lanes' values).
template <typename Each>
SPARQ_HD void forward_layers(const Desc& d, float* s, Each&& each) {
  const float* z = s + d.z0_smem;
  int width = d.in_width, begin = d.in_ops_begin, end = d.in_ops_end;
  for (int l = 0; l < d.layers; ++l) {
    const Layer& L = d.layer[l];
    float* a = s + d.p_smem;
    if (begin != end) each([&](int t) { lane_values(d, begin, end, z, a, width, t); });
    const float* input = begin != end ? a : z;
    each([&](int t) { dense_column(L, s, input, s + L.z_smem, t); });
    z = s + L.z_smem, width = L.out, begin = L.ops_begin, end = L.ops_end;
  }
}

/// The tile's z of every layer into `Desc::z` (the forward), or back into shared memory (the backward).
template <bool Store>
SPARQ_HD void keep_z(const Desc& d, float* s, int64_t tile, int t) {
  float* row = d.z + tile * d.z_row;
  for (int l = 0; l < d.layers; ++l) {
    const Layer& L = d.layer[l];
    for (int e = t; e < L.out * kTile; e += kThreads) {
      float& shared = s[L.z_smem + (e / kTile) * kStride + e % kTile];
      if (Store) row[L.z_keep + e] = shared;
      else shared = row[L.z_keep + e];
    }
  }
}

/// The network's output (the last layer's lane), the tile's valid samples.
SPARQ_HD void write_output(const Desc& d, const float* s, float* y, int64_t tile, int t) {
  const Layer& L = d.layer[d.layers - 1];
  int j, r0, r1;
  if (!lane_run(L.out, t, valid_in(d, tile), j, r0, r1)) return;
  const Chain ch = chain_of(d, L.ops_begin, L.ops_end, j);
  float* yt = y + tile * kTile * L.out;
  for (int r = r0; r < r1; ++r) yt[r * L.out + j] = chain_value(ch, s[L.z_smem + j * kStride + r]);
}

/// δ = the gradient to the network's output (0 beyond the batch).
SPARQ_HD void load_output_grad(const Desc& d, float* s, const float* gy, int64_t tile, int t) {
  const Layer& L = d.layer[d.layers - 1];
  const int valid = valid_in(d, tile);
  const float* gt = gy + tile * kTile * L.out;
  for (int e = t; e < kTile * L.out; e += kThreads) {
    const int r = e / L.out, o = e % L.out;
    s[d.q_smem + o * kStride + r] = r < valid ? gt[e] : 0.0f;
  }
}

/// The lane's backward in place on g (width rows), each thread on its feature's run of samples,
/// leaving its sums of the trained widths' g·dq/df, g·dq/di in shared memory (`sums`) for lane_sums.
SPARQ_HD void lane_backward(const Desc& d, int begin, int end, const float* z, float* g, int width, int valid,
                            float* sums, int t) {
  int j, r0, r1;
  if (!lane_run(width, t, valid, j, r0, r1)) return;
  const Chain ch = chain_of(d, begin, end, j);
  double sf[kMaxChain] = {}, si[kMaxChain] = {};
  for (int r = r0; r < r1; ++r) g[j * kStride + r] = chain_backward(ch, z[j * kStride + r], g[j * kStride + r], sf, si);
  SPARQ_UNROLL
  for (int o = 0; o < kMaxChain; ++o) {
    if (o >= ch.n) continue;
    sums[(2 * o) * kThreads + t] = static_cast<float>(sf[o]);
    sums[(2 * o + 1) * kThreads + t] = static_cast<float>(si[o]);
  }
}

/// The lane's trained widths' sums over the tile into the partial row (the runs of a feature added
/// in order), after lane_backward.
SPARQ_HD void lane_sums(const Desc& d, int begin, int end, const float* sums, int width, float* row, int t) {
  const int parts = split_rows(width).parts;
  for (int o = begin; o < end; ++o) {
    const LaneOp& op = d.op[o];
    if (op.kind != kHgq || op.grad < 0) continue;
    for (int j = t; j < width; j += kThreads)
      for (int c = 0; c < 2; ++c) {
        double acc = 0;
        for (int part = 0; part < parts; ++part) acc += sums[(2 * (o - begin) + c) * kThreads + part * width + j];
        row[op.grad + c * width + j] = static_cast<float>(acc);
      }
  }
}

/// dW = Σ_r δ[:,r] a[:,r]ᵀ and db = Σ_r δ[:,r] over the tile, in 4x4 blocks of W spread over the
/// threads. With fewer blocks than threads a block's samples are cut into parts, whose sums go to
/// `scratch` for dense_grad_sums; else each thread writes its blocks into the partial row.
SPARQ_HD int grad_blocks(const Layer& L) { return (L.out_pad / 4) * (L.in_pad / 4); }
SPARQ_HD void dense_grads(const Layer& L, const float* delta, const float* a, float* row, float* scratch, int t) {
  const int nib = L.in_pad / 4, blocks = grad_blocks(L);
  const Split sp = split_rows(blocks);
  for (int item = t; item < blocks * sp.parts; item += kThreads) {
    const int q = item % blocks, r0 = (item / blocks) * sp.chunk;
    const int r1 = r0 + sp.chunk < kTile ? r0 + sp.chunk : kTile;
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
    for (int r = r0; r < r1; ++r) {
      const float dv[4] = {d0[r], d1[r], d2[r], d3[r]};
      const float av[4] = {a0[r], a1[r], a2[r], a3[r]};
      SPARQ_UNROLL
      for (int u = 0; u < 4; ++u) {
        bias[u] += dv[u];
        SPARQ_UNROLL
        for (int v = 0; v < 4; ++v) acc[u][v] += dv[u] * av[v];
      }
    }
    if (sp.parts > 1) {  // items <= kThreads here: one item per thread
      SPARQ_UNROLL
      for (int u = 0; u < 4; ++u) {
        SPARQ_UNROLL
        for (int v = 0; v < 4; ++v) scratch[(4 * u + v) * kThreads + item] = acc[u][v];
        scratch[(16 + u) * kThreads + item] = bias[u];
      }
      continue;
    }
    for (int u = 0; u < 4 && o0 + u < L.out; ++u) {
      for (int v = 0; v < 4 && i0 + v < L.in; ++v) row[L.w_grad + (o0 + u) * L.in + i0 + v] = acc[u][v];
      if (i0 == 0 && L.b_grad >= 0) row[L.b_grad + o0 + u] = bias[u];
    }
  }
}

/// The parts of dense_grads' blocks added in order into the partial row (when it cut them).
SPARQ_HD bool grads_in_parts(const Layer& L) { return split_rows(grad_blocks(L)).parts > 1; }
SPARQ_HD void dense_grad_sums(const Layer& L, const float* scratch, float* row, int t) {
  const int nib = L.in_pad / 4, blocks = grad_blocks(L), parts = split_rows(blocks).parts;
  for (int e = t; e < blocks * kGradSums; e += kThreads) {
    const int q = e % blocks, c = e / blocks;
    float acc = 0;
    for (int part = 0; part < parts; ++part) acc += scratch[c * kThreads + part * blocks + q];
    const int o = (q / nib) * 4 + (c < 16 ? c / 4 : c - 16), i = (q % nib) * 4 + c % 4;
    if (o >= L.out) continue;
    if (c < 16 && i < L.in) row[L.w_grad + o * L.in + i] = acc;
    if (c >= 16 && q % nib == 0 && L.b_grad >= 0) row[L.b_grad + o] = acc;
  }
}

/// g = Wᵀ δ: thread t's sample, four inputs at a time (its group's share).
SPARQ_HD void dense_input_grad(const Layer& L, const float* s, const float* delta, float* g, int t) {
  const int r = t % kTile;
  const float* w = s + L.w_smem;
  for (int i = 4 * (t / kTile); i < L.in; i += 4 * kGroups) {
    float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
    for (int o = 0; o < L.out; ++o) {
      const float dv = delta[o * kStride + r];
      const F4 wr = load4(w + o * L.in_pad + i);
      acc0 += wr.x * dv, acc1 += wr.y * dv, acc2 += wr.z * dv, acc3 += wr.w * dv;
    }
    g[i * kStride + r] = acc0;
    if (i + 1 < L.in) g[(i + 1) * kStride + r] = acc1;
    if (i + 2 < L.in) g[(i + 2) * kStride + r] = acc2;
    if (i + 3 < L.in) g[(i + 3) * kStride + r] = acc3;
  }
}

/// Clamps the trained widths in place as the HGQ quantizer's training forward does (one tile does it).
SPARQ_HD void clamp_widths(const Desc& d, int t) {
  for (int o = 0; o < d.ops; ++o) {
    const LaneOp& op = d.op[o];
    if (op.kind != kHgq) continue;
    for (int j = t; j < op.period; j += kThreads)
      op.f[j] = clamped(op.f[j], kMinF, kMaxF), op.i[j] = clamped(op.i[j], kMinI, kMaxI);
  }
}

/// The forward of one tile: `each(phase)` runs phase(t) for every thread, then a barrier.
template <typename Each>
SPARQ_HD void forward_tile(const Desc& d, float* s, const float* x, float* y, int64_t tile, Each&& each) {
  each([&](int t) { load_tile(d, s, x, tile, t); });
  forward_layers(d, s, each);
  each([&](int t) {
    write_output(d, s, y, tile, t);
    keep_z<true>(d, s, tile, t);
  });
}

/// The backward of one tile: its partial row (weight, bias and width gradients summed over the
/// tile's samples); `gy` the gradient to the output.
template <typename Each>
SPARQ_HD void backward_tile(const Desc& d, float* s, const float* x, const float* gy, float* row, int64_t tile,
                            Each&& each) {
  const int valid = valid_in(d, tile);
  each([&](int t) {
    load_tile(d, s, x, tile, t);
    keep_z<false>(d, s, tile, t);
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
    if (begin != end) each([&](int t) { lane_values(d, begin, end, z_prev, scratch, L.in, t); });
    const float* a = begin != end ? scratch : z_prev;
    each([&](int t) { dense_grads(L, delta, a, row, sums, t); });
    if (grads_in_parts(L)) each([&](int t) { dense_grad_sums(L, sums, row, t); });
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
