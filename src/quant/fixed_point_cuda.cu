// CUDA version of the per-tensor loop of fixed_point_kernels.inc: same arithmetic, one thread per
// element (grid-stride), modes chosen at run time (uniform across the grid, so no divergence).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>

#include "quant/fixed_point_cuda.h"
#include "quant/fixed_point_element.h"

namespace sparq::quant::cuda {

namespace {

using namespace element;

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
    const bool up = rounds_up<T>(round, u, fl, d);
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
