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
__device__ __forceinline__ bool rounds_up(int round, T u, T fl, T d) {
  switch (round) {
    case TRN: return false;
    case TRN_ZERO: return (u < 0) && (d > 0);
    case RND: return d >= T(0.5);
    case RND_MIN_INF: return d > T(0.5);
    case RND_ZERO: return (d > T(0.5)) || ((d == T(0.5)) && (u < 0));
    case RND_INF: return (d > T(0.5)) || ((d == T(0.5)) && (u > 0));
    default: return (d > T(0.5)) || ((d == T(0.5)) && (fl * T(0.5) != floor(fl * T(0.5))));
  }
}

template <typename T>
__device__ __forceinline__ T denorm_min();
template <>
__device__ __forceinline__ float denorm_min<float>() { return 1.40129846e-45f; }
template <>
__device__ __forceinline__ double denorm_min<double>() { return 4.9406564584124654e-324; }

/// HGQ, one element per thread: the width's constants (as the CPU's hgq_kernel computes them per
/// width), the code, and with Backward the derivatives times the incoming gradient.
template <typename T, bool Backward>
__global__ void hgq_kernel(const T* __restrict__ x, const T* __restrict__ kb, const T* __restrict__ ib,
                           const T* __restrict__ fb, int64_t period, int64_t n, int round, int overflow,
                           T* __restrict__ q, const T* __restrict__ g, T* __restrict__ dx, T* __restrict__ gf,
                           T* __restrict__ gi) {
  const T ln2 = T(0.69314718055994530942);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const int64_t j = period == 1 ? 0 : e % period;
    // Trained widths rounded here, half to even as the CPU's usable_widths: no rounding kernels.
    const T kk = kb[j], ff = rint(fb[j]), ir = rint(ib[j]), ii = ir > -ff ? ir : -ff;
    const int fi = static_cast<int>(ff);
    const T scale = ldexp(T(1), fi), step = ldexp(T(1), -fi);
    const T span = ii + ff;
    const T nmax = ldexp(T(1), static_cast<int>(span)) - T(1);
    const T nmin = -kk * ldexp(T(1), static_cast<int>(span));
    const bool symmetric = overflow == SAT_SYM && kk > 0 && span > 0;
    const T nlo = symmetric ? -nmax : nmin;
    const T xv = x[e];
    T u = xv * scale;
    if (u == T(0) && xv != T(0)) u = copysign(denorm_min<T>(), xv);  // a tiny x keeps its sign for TRN
    const T fl = floor(u), d = u - fl;
    T code = fl + (rounds_up<T>(round, u, fl, d) ? T(1) : T(0));
    const bool saturate = overflow != WRAP;
    if (saturate) code = code < nlo ? nlo : (code > nmax ? nmax : code);
    const T qv = code * step + T(0);
    if (!Backward) {
      q[e] = qv;
      continue;
    }
    const T gv = g[e];
    if (!saturate) {
      dx[e] = gv;
      gf[e] = gv * (ln2 * (xv - qv));
      gi[e] = T(0);
      continue;
    }
    const T top = ldexp(T(1), static_cast<int>(ii));
    const T hi = top - step, lo = symmetric ? -hi : -kk * top;
    const bool above = u > nmax, below = !above && u < nlo;
    const T c = above ? hi : (below ? lo : xv);
    const T bound_f = above ? ln2 * step : (below && symmetric ? -ln2 * step : T(0));
    const T bound_i = above ? ln2 * top : (below ? (symmetric ? -ln2 * top : -kk * ln2 * top) : T(0));
    dx[e] = (above || below) ? T(0) : gv;
    gf[e] = gv * (ln2 * (c - qv) + bound_f);
    gi[e] = gv * bound_i;
  }
}

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

void hgq_quantize(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f, at::Tensor& q,
                  int round, int overflow) {
  const int64_t n = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_hgq_quantize_cuda", [&] {
    hgq_kernel<scalar_t, false><<<grid_for(n), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), i.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), k.numel(), n,
        round, overflow, q.data_ptr<scalar_t>(), nullptr, nullptr, nullptr, nullptr);
  });
}

void hgq_backward(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f,
                  const at::Tensor& g, at::Tensor& dx, at::Tensor& gf, at::Tensor& gi, int round, int overflow) {
  const int64_t n = x.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_hgq_backward_cuda", [&] {
    hgq_kernel<scalar_t, true><<<grid_for(n), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), i.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(), k.numel(), n,
        round, overflow, nullptr, g.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(),
        gi.data_ptr<scalar_t>());
  });
}

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
