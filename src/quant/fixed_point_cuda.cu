// CUDA version of the per-tensor loop of fixed_point_kernels.inc: same arithmetic, one thread per
// element (grid-stride), modes chosen at run time (uniform across the grid, so no divergence).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>

#include "quant/fixed_point_cuda.h"

namespace sparq::quant::cuda {

namespace {

// Enum values of RoundMode and OverflowMode (sparq/quant/fixed_point.h).
enum { TRN, TRN_ZERO, RND, RND_ZERO, RND_INF, RND_MIN_INF, RND_CONV };
enum { SAT, SAT_SYM, WRAP, WRAP_SM };

template <typename T>
__global__ void quantize_kernel(const T* __restrict__ x, T* __restrict__ q, int64_t n, T scale, T step, T lo,
                                T nmax, T modulus, T inv_modulus, bool signed_type, int round, int overflow,
                                bool training) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const T u = x[e] * scale;
    const T fl = floor(u), d = u - fl;
    bool up;
    switch (round) {
      case TRN: up = false; break;
      case TRN_ZERO: up = (u < 0) && (d > 0); break;
      case RND: up = d >= T(0.5); break;
      case RND_MIN_INF: up = d > T(0.5); break;
      case RND_ZERO: up = (d > T(0.5)) || ((d == T(0.5)) && (u < 0)); break;
      case RND_INF: up = (d > T(0.5)) || ((d == T(0.5)) && (u > 0)); break;
      default: up = (d > T(0.5)) || ((d == T(0.5)) && (fl * T(0.5) != floor(fl * T(0.5)))); break;
    }
    T c = fl + (up ? T(1) : T(0));
    if (overflow == WRAP) {
      if (!training) {
        T t = c - modulus * floor(c * inv_modulus);
        c = (signed_type && t > nmax) ? t - modulus : t;
      }
    } else {
      c = c < lo ? lo : (c > nmax ? nmax : c);
    }
    q[e] = c * step + T(0);
  }
}

template <typename T>
__global__ void saturation_grad_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ out,
                                       int64_t n, T scale, T lo, T nmax) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const T u = x[e] * scale;
    out[e] = (u >= lo && u <= nmax) ? g[e] : T(0);
  }
}

dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8));
}

}  // namespace

void quantize(const at::Tensor& x, at::Tensor& q, const Format& p, int round, int overflow, bool training) {
  const int64_t n = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_fixed_quantize_cuda", [&] {
    quantize_kernel<scalar_t><<<grid_for(n), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), n, scalar_t(p.scale), scalar_t(p.step), scalar_t(p.lo),
        scalar_t(p.nmax), scalar_t(p.modulus), scalar_t(p.inv_modulus), p.signed_type, round, overflow, training);
  });
}

void saturation_grad(const at::Tensor& x, const at::Tensor& g, at::Tensor& out, const Format& p) {
  const int64_t n = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_saturation_grad_cuda", [&] {
    saturation_grad_kernel<scalar_t><<<grid_for(n), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n, scalar_t(p.scale),
        scalar_t(p.lo), scalar_t(p.nmax));
  });
}

}  // namespace sparq::quant::cuda
