// CUDA versions of integer_kernels.inc and of the per-channel update of integer_qparams.h: the
// same arithmetic (products and sums rounded separately, rint for half to even).
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>

#include "quant/integer_cuda.h"

namespace sparq::quant::cuda {

namespace {

__global__ void update_kernel(const float* __restrict__ lo, const float* __restrict__ hi, float* min_val,
                              float* max_val, float* scale, float* zero_point, int64_t channels,
                              kernels::RangeUpdate update, kernels::RangeRule rule) {
  const int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (c < channels)
    kernels::update_channel(lo[c], hi[c], min_val[c], max_val[c], scale[c], zero_point[c], update, rule);
}

template <typename T>
__device__ T code_of(T xv, T s, T zp, T qmin, T qmax, bool nni, bool& pass) {
  if (nni) {
    T q = zp + xv / s;
    pass = q >= qmin && q <= qmax;
    return rint(q < qmin ? qmin : (q > qmax ? qmax : q));
  }
  const T inv = static_cast<T>(__frcp_rn(static_cast<float>(s)));  // 1.0f / s, correctly rounded
  const T r = rint(xv * inv) + zp;
  pass = r >= qmin && r <= qmax;
  return r < qmin ? qmin : (r > qmax ? qmax : r);
}

template <typename T>
__global__ void forward_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ scale,
                               const float* __restrict__ zero_point, int64_t n, int64_t channels, int64_t inner,
                               T qmin, T qmax, bool nni) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = (e / inner) % channels;
    const T s = scale[c], zp = zero_point[c];
    bool pass;
    const T code = code_of<T>(x[e], s, zp, qmin, qmax, nni, pass);
    y[e] = (code - zp) * s;
  }
}

template <typename T>
__global__ void backward_kernel(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ dx,
                                const float* __restrict__ scale, const float* __restrict__ zero_point, int64_t n,
                                int64_t channels, int64_t inner, T qmin, T qmax, bool nni) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)blockDim.x * gridDim.x) {
    const int64_t c = (e / inner) % channels;
    bool pass;
    code_of<T>(x[e], T(scale[c]), T(zero_point[c]), qmin, qmax, nni, pass);
    dx[e] = pass ? g[e] : T(0);
  }
}

dim3 grid_for(int64_t n) {
  const int64_t blocks = (n + 255) / 256;
  return dim3(static_cast<unsigned>(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8));
}

}  // namespace

void integer_update(const at::Tensor& lo, const at::Tensor& hi, at::Tensor& min_val, at::Tensor& max_val,
                    at::Tensor& scale, at::Tensor& zero_point, kernels::RangeUpdate update,
                    const kernels::RangeRule& rule) {
  const int64_t channels = min_val.numel();
  update_kernel<<<grid_for(channels), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
      lo.data_ptr<float>(), hi.data_ptr<float>(), min_val.data_ptr<float>(), max_val.data_ptr<float>(),
      scale.data_ptr<float>(), zero_point.data_ptr<float>(), channels, update, rule);
}

void integer_forward(const at::Tensor& x, at::Tensor& y, const at::Tensor& scale, const at::Tensor& zero_point,
                     int64_t inner, double qmin, double qmax, bool nni) {
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_integer_forward_cuda", [&] {
    forward_kernel<scalar_t><<<grid_for(n), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), scale.data_ptr<float>(), zero_point.data_ptr<float>(), n,
        scale.numel(), inner, scalar_t(qmin), scalar_t(qmax), nni);
  });
}

void integer_backward(const at::Tensor& x, const at::Tensor& g, at::Tensor& dx, const at::Tensor& scale,
                      const at::Tensor& zero_point, int64_t inner, double qmin, double qmax, bool nni) {
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sparq_integer_backward_cuda", [&] {
    backward_kernel<scalar_t><<<grid_for(n), 256, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), scale.data_ptr<float>(),
        zero_point.data_ptr<float>(), n, scale.numel(), inner, scalar_t(qmin), scalar_t(qmax), nni);
  });
}

}  // namespace sparq::quant::cuda
