// The arithmetic is LibTorch's Adam/AdamW (torch::optim) element by element in float, the bias
// corrections in double from the device's step count; blockIdx.y picks the tensor.
#include <ATen/cuda/CUDAContext.h>

#include "train/adam_cuda.h"

namespace sparq::train::cuda {

namespace {

__global__ void adam_kernel(AdamBatch b) {
  const AdamTensor& t = b.t[blockIdx.y];
  __shared__ float step_size, bias2_sqrt;
  if (threadIdx.x == 0) {
    const double step = static_cast<double>(*t.step + 1);
    step_size = static_cast<float>(t.lr / (1 - pow(t.beta1, step)));
    bias2_sqrt = static_cast<float>(sqrt(1 - pow(t.beta2, step)));
  }
  __syncthreads();
  const float beta1 = static_cast<float>(t.beta1), one_minus_beta1 = static_cast<float>(1 - t.beta1);
  const float beta2 = static_cast<float>(t.beta2), one_minus_beta2 = static_cast<float>(1 - t.beta2);
  const float eps = static_cast<float>(t.eps), wd = static_cast<float>(t.weight_decay);
  const float decay = static_cast<float>(1 - t.lr * t.weight_decay);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < t.numel; e += (int64_t)blockDim.x * gridDim.x) {
    float g = t.grad[e], w = t.param[e];
    if (t.weight_decay != 0) {
      if (t.decoupled) w = w * decay;
      else g = g + wd * w;
    }
    const float m = t.exp_avg[e] * beta1 + g * one_minus_beta1;
    const float v = t.exp_avg_sq[e] * beta2 + one_minus_beta2 * g * g;
    t.exp_avg[e] = m, t.exp_avg_sq[e] = v;
    const float denom = sqrtf(v) / bias2_sqrt + eps;
    t.param[e] = w - step_size * (m / denom);
  }
}

__global__ void count_steps(AdamBatch b) {
  if (threadIdx.x < b.count) *b.t[threadIdx.x].step += 1;
}

}  // namespace

void adam_step(const AdamBatch& batch, int64_t max_numel) {
  if (batch.count == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  int64_t blocks = (max_numel + 255) / 256;
  blocks = blocks < 1 ? 1 : (blocks > 512 ? 512 : blocks);
  adam_kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(batch.count)), 256, 0, stream>>>(batch);
  count_steps<<<1, 32, 0, stream>>>(batch);
}

}  // namespace sparq::train::cuda
