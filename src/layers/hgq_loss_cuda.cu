// The GPU twin of hgq_loss.cpp for Dense and activation layers: one block per layer (the widths
// of an hls4ml-sized layer are a few thousand numbers), sums in double in a fixed order (the same
// result every run), the EBOPs formulas of spec pquantml §3.6 with their derivatives.
#include <ATen/cuda/CUDAContext.h>

#include "layers/hgq_loss_cuda.h"

namespace sparq::layers::cuda {

namespace {

constexpr int kThreads = 512;

/// The sum of every thread's `v`, returned to all threads (a fixed tree: deterministic).
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

/// Width element j's f and i as the EBOPs read them: rounded half to even (i unrounded under WRAP).
__device__ void rounded_widths(const TrainedWidths& t, int64_t j, double& fr, double& ir) {
  fr = rint(static_cast<double>(t.f[j]));
  ir = t.wrap ? static_cast<double>(t.i[j]) : rint(static_cast<double>(t.i[j]));
}

/// Bits of lane element e: k + relu(round(i) + round(f)), fixed bits, or 32.
__device__ double lane_bits(const HgqLossArgs& a, const LaneWidths& l, int64_t e) {
  const int64_t j = l.numel == 1 ? 0 : e;
  if (l.trained >= 0) {
    const TrainedWidths& t = a.trained[l.trained];
    double fr, ir;
    rounded_widths(t, j, fr, ir);
    return static_cast<double>(t.k[j]) + fmax(ir + fr, 0.0);
  }
  return l.bits ? static_cast<double>(l.bits[j]) : 32.0;
}

/// Adds d EBOPs / d bits of lane element e: into its width element, or (one width for the whole
/// lane) into `broadcast`, summed over the block afterwards by `flush`.
__device__ void add_slope(const HgqLossArgs& a, const LaneWidths& l, int64_t e, double v, double& broadcast) {
  if (l.trained < 0) return;
  if (l.numel == 1) broadcast += v;
  else a.trained[l.trained].slope[e] += v;
}
__device__ void flush(const HgqLossArgs& a, const LaneWidths& l, double broadcast, double* shared) {
  if (l.trained < 0 || l.numel != 1) return;
  const double total = block_sum(broadcast, shared);
  if (threadIdx.x == 0) a.trained[l.trained].slope[0] += total;
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads) hgq_layer_loss_kernel(HgqLossArgs a) {
  __shared__ double shared[kThreads];
  const int64_t t0 = threadIdx.x;
  for (int q = 0; q < a.n_trained; ++q)
    for (int64_t j = t0; j < a.trained[q].numel; j += kThreads) a.trained[q].slope[j] = 0;
  __syncthreads();
  double ebops = 0;  // this thread's share
  if (a.kind == HgqLossArgs::kDense) {
    // Σ_{pos,o,i} B_in[pos,i]·B_w[o,i] + mean(B_b)·positions·out
    const int64_t F = a.features, P = a.positions, O = a.outputs;
    double *in_sum = a.sums, *w_column = a.sums + F;
    for (int64_t i = t0; i < F; i += kThreads) {
      double s = 0, w = 0;
      for (int64_t p = 0; p < P; ++p) s += lane_bits(a, a.input, p * F + i);
      for (int64_t o = 0; o < O; ++o) w += lane_bits(a, a.weight, o * F + i);
      in_sum[i] = s, w_column[i] = w;
      ebops += s * w;
    }
    __syncthreads();
    double broadcast = 0;
    for (int64_t e = t0; e < O * F; e += kThreads) add_slope(a, a.weight, e, in_sum[e % F], broadcast);
    flush(a, a.weight, broadcast, shared);
    broadcast = 0;
    for (int64_t e = t0; e < P * F; e += kThreads) add_slope(a, a.input, e, w_column[e % F], broadcast);
    flush(a, a.input, broadcast, shared);
    if (a.has_bias) {
      // mean(B_b)·positions·out: each of the out biases counts `positions` times
      const double per_bias = static_cast<double>(P);
      broadcast = 0;
      for (int64_t e = t0; e < O; e += kThreads) {
        ebops += lane_bits(a, a.bias, e) * per_bias;
        add_slope(a, a.bias, e, per_bias, broadcast);
      }
      flush(a, a.bias, broadcast, shared);
    }
  } else if (a.kind == HgqLossArgs::kActivation) {
    // 1e-4·Σ 2^B_in·B_out
    const double ln2 = 0.69314718055994530942;
    double broadcast_in = 0, broadcast_out = 0;
    for (int64_t e = t0; e < a.lane; e += kThreads) {
      const double table = 1e-4 * exp2(lane_bits(a, a.input, e)), b_out = lane_bits(a, a.output, e);
      ebops += table * b_out;
      add_slope(a, a.input, e, ln2 * table * b_out, broadcast_in);
      add_slope(a, a.output, e, table, broadcast_out);
    }
    flush(a, a.input, broadcast_in, shared);
    flush(a, a.output, broadcast_out, shared);
  }
  __syncthreads();
  const double beta = static_cast<double>(*a.beta);
  double value = beta * block_sum(ebops, shared);
  for (int q = 0; q < a.n_trained; ++q) {
    const TrainedWidths& t = a.trained[q];
    double rounded = 0;
    for (int64_t j = t0; j < t.numel; j += kThreads) {
      double fr, ir;
      rounded_widths(t, j, fr, ir);
      t.grad[j] = static_cast<float>((ir + fr > 0 ? beta * t.slope[j] : 0.0) + t.gamma);
      rounded += fr + (t.wrap ? 0.0 : ir);  // gamma's sum leaves WRAP's i out
    }
    value += t.gamma * block_sum(rounded, shared);
  }
  if (t0 == 0) *a.value = static_cast<float>(value);
}

__global__ void scale_kernel(ScaleArgs a) {
  const int t = blockIdx.y;
  const float g = *a.g;
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < a.n[t]; e += (int64_t)blockDim.x * gridDim.x)
    a.out[t][e] = a.in[t][e] * g;
}

}  // namespace

void scale_by(const ScaleArgs& args) {
  int64_t most = 1;
  for (int t = 0; t < args.count; ++t) most = args.n[t] > most ? args.n[t] : most;
  const dim3 grid(static_cast<unsigned>((most + 255) / 256 < 1024 ? (most + 255) / 256 : 1024),
                  static_cast<unsigned>(args.count));
  scale_kernel<<<grid, 256, 0, at::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void hgq_layer_loss(const HgqLossArgs& args) {
  hgq_layer_loss_kernel<<<1, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sparq::layers::cuda
