// CUDA version of the per-tensor loop of fixed_point_kernels.inc: same arithmetic, one thread per
// element (grid-stride), modes chosen at run time (uniform across the grid, so no divergence).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>

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

/// What one HGQ element gives: q, and with Backward dx = g·dq/dx, g·dq/df and g·dq/di.
template <typename T>
struct HgqElement {
  T q, dx, gf, gi;
};

/// HGQ of one element from its width's k, i, f (the constants as the CPU's hgq_kernel computes them
/// per width; i and f rounded half to even here, as the CPU's usable_widths does: no rounding kernels).
template <typename T, bool Backward>
__device__ __forceinline__ HgqElement<T> hgq_element(T xv, T kk, T fraw, T iraw, T gv, int round, int overflow) {
  const T ln2 = T(0.69314718055994530942);
  const T ff = rint(fraw), ir = rint(iraw), ii = ir > -ff ? ir : -ff;
  const int fi = static_cast<int>(ff);
  const T scale = ldexp(T(1), fi), step = ldexp(T(1), -fi);
  const T span = ii + ff;
  const T nmax = ldexp(T(1), static_cast<int>(span)) - T(1);
  const T nmin = -kk * ldexp(T(1), static_cast<int>(span));
  const bool symmetric = overflow == SAT_SYM && kk > 0 && span > 0;
  const T nlo = symmetric ? -nmax : nmin;
  T u = xv * scale;
  if (u == T(0) && xv != T(0)) u = copysign(denorm_min<T>(), xv);  // a tiny x keeps its sign for TRN
  const T fl = floor(u), d = u - fl;
  T code = fl + (rounds_up<T>(round, u, fl, d) ? T(1) : T(0));
  const bool saturate = overflow != WRAP;
  if (saturate) code = code < nlo ? nlo : (code > nmax ? nmax : code);
  HgqElement<T> out{code * step + T(0), T(0), T(0), T(0)};
  if (!Backward) return out;
  if (!saturate) {
    out.dx = gv, out.gf = gv * (ln2 * (xv - out.q));
    return out;
  }
  const T top = ldexp(T(1), static_cast<int>(ii));
  const T hi = top - step, lo = symmetric ? -hi : -kk * top;
  const bool above = u > nmax, below = !above && u < nlo;
  const T c = above ? hi : (below ? lo : xv);
  const T bound_f = above ? ln2 * step : (below && symmetric ? -ln2 * step : T(0));
  const T bound_i = above ? ln2 * top : (below ? (symmetric ? -ln2 * top : -kk * ln2 * top) : T(0));
  out.dx = (above || below) ? T(0) : gv;
  out.gf = gv * (ln2 * (c - out.q) + bound_f);
  out.gi = gv * bound_i;
  return out;
}

/// HGQ, one element per thread; with Backward dx, g·dq/df and g·dq/di per element (widths with one
/// entry per element: nothing to sum).
template <typename T, bool Backward>
__global__ void hgq_kernel(const T* __restrict__ x, const T* __restrict__ kb, const T* __restrict__ ib,
                           const T* __restrict__ fb, int64_t period, int64_t n, int round, int overflow,
                           T* __restrict__ q, const T* __restrict__ g, T* __restrict__ dx, T* __restrict__ gf,
                           T* __restrict__ gi) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const int64_t j = period == 1 ? 0 : e % period;
    const auto h = hgq_element<T, Backward>(x[e], kb[j], fb[j], ib[j], Backward ? g[e] : T(0), round, overflow);
    if (!Backward) {
      q[e] = h.q;
      continue;
    }
    dx[e] = h.dx, gf[e] = h.gf, gi[e] = h.gi;
  }
}

/// The backward for widths shared by rows (period < n): dx per element, and per block the sums of
/// g·dq/df and g·dq/di over its rows for each width, in double (`partial`, [block][2][period]).
/// Threads (x: 32 widths, y: 8 rows apart) keep their own sums; a block adds its 8 in a fixed
/// order, and hgq_sums_finish adds the blocks in order: the same sums every run.
template <typename T>
__global__ void hgq_sums_kernel(const T* __restrict__ x, const T* __restrict__ kb, const T* __restrict__ ib,
                                const T* __restrict__ fb, const T* __restrict__ g, int64_t period, int64_t n,
                                int64_t rows_per_block, int round, int overflow, T* __restrict__ dx,
                                double* __restrict__ partial) {
  __shared__ double sf[8][32], si[8][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t r0 = blockIdx.x * rows_per_block, r1 = r0 + rows_per_block;
  for (int64_t c0 = 0; c0 < period; c0 += 32) {
    const int64_t c = c0 + tx;
    double af = 0, ai = 0;
    if (c < period) {
      const T kk = kb[c], ff = fb[c], ii = ib[c];
      for (int64_t r = r0 + ty; r < r1; r += 8) {
        const int64_t e = r * period + c;
        if (e >= n) break;
        const auto h = hgq_element<T, true>(x[e], kk, ff, ii, g[e], round, overflow);
        dx[e] = h.dx;
        af += static_cast<double>(h.gf), ai += static_cast<double>(h.gi);
      }
    }
    sf[ty][tx] = af, si[ty][tx] = ai;
    __syncthreads();
    if (ty == 0 && c < period) {
      double tf = 0, ti = 0;
      for (int y = 0; y < 8; ++y) tf += sf[y][tx], ti += si[y][tx];
      partial[(blockIdx.x * 2) * period + c] = tf;
      partial[(blockIdx.x * 2 + 1) * period + c] = ti;
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void hgq_sums_finish(const double* __restrict__ partial, int64_t blocks, int64_t period, T* __restrict__ sums) {
  for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < 2 * period; j += (int64_t)blockDim.x * gridDim.x) {
    const int64_t which = j / period, c = j % period;
    double s = 0;
    for (int64_t b = 0; b < blocks; ++b) s += partial[(b * 2 + which) * period + c];
    sums[j] = static_cast<T>(s);
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

void hgq_backward_sums(const at::Tensor& x, const at::Tensor& k, const at::Tensor& i, const at::Tensor& f,
                       const at::Tensor& g, at::Tensor& dx, at::Tensor& sums, int round, int overflow) {
  const int64_t n = x.numel(), period = k.numel(), rows = (n + period - 1) / period;
  const int64_t blocks = std::min<int64_t>(std::max<int64_t>((rows + 63) / 64, 1), 512);
  const int64_t rows_per_block = (rows + blocks - 1) / blocks;
  at::Tensor partial = at::empty({blocks * 2 * period}, x.options().dtype(at::kDouble));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_hgq_backward_sums_cuda", [&] {
    hgq_sums_kernel<scalar_t><<<static_cast<unsigned>(blocks), dim3(32, 8), 0, stream>>>(
        x.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), i.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(),
        g.data_ptr<scalar_t>(), period, n, rows_per_block, round, overflow, dx.data_ptr<scalar_t>(),
        partial.data_ptr<double>());
    hgq_sums_finish<scalar_t><<<grid_for(2 * period), 256, 0, stream>>>(partial.data_ptr<double>(), blocks, period,
                                                                        sums.data_ptr<scalar_t>());
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
