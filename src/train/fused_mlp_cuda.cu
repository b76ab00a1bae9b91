// CUDA kernels of the fused MLP: the tile code of fused_mlp_tile.h with a block per tile and a
// barrier between its phases, then one kernel that adds the tiles' partial rows in order.
#include <ATen/cuda/CUDAContext.h>
#include <fmt/format.h>

#include "train/fused_mlp_cuda.h"

namespace sparq::train::mlp::cuda {

namespace {

static_assert(sizeof(Desc) <= 4096, "the description travels as a kernel parameter");

struct Barrier {
  template <typename Phase>
  __device__ void operator()(Phase&& phase) const {
    phase(static_cast<int>(threadIdx.x));
    __syncthreads();
  }
};

// Two blocks of the jet tagger's size (108 KiB of shared memory) fit an SM: the register bound too.
__global__ void __launch_bounds__(kThreads, 2)
    forward_kernel(const Desc d, const float* __restrict__ x, float* __restrict__ y) {
  extern __shared__ __align__(16) float s[];
  forward_tile(d, s, x, y, blockIdx.x, Barrier{});
  // Every block clamps the widths it reads; block 0 also writes them back (the same numbers
  // whichever a block reads first).
  if (blockIdx.x == 0) clamp_widths(d, threadIdx.x);
}

__global__ void __launch_bounds__(kThreads, 2) backward_kernel(const Desc d, const float* __restrict__ x,
                                                               const float* __restrict__ gy,
                                                               float* __restrict__ partial) {
  extern __shared__ __align__(16) float s[];
  backward_tile(d, s, x, gy, partial + blockIdx.x * static_cast<int64_t>(d.row), blockIdx.x, Barrier{});
}

__global__ void sums_kernel(const float* __restrict__ partial, int64_t tiles, int row, float* __restrict__ sums) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= row) return;
  double acc = 0;
  for (int64_t t = 0; t < tiles; ++t) acc += partial[t * row + j];
  sums[j] = static_cast<float>(acc);
}

/// The device's shared memory per block with the opt-in, set once on both kernels.
int shared_limit() {
  static const int limit = [] {
    int device = 0, bytes = 0;
    C10_CUDA_CHECK(cudaGetDevice(&device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    for (const void* kernel : {reinterpret_cast<const void*>(forward_kernel), reinterpret_cast<const void*>(backward_kernel)}) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
      // All of the SM's unified memory as shared memory: more tiles per SM.
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                          cudaSharedmemCarveoutMaxShared));
    }
    return bytes;
  }();
  return limit;
}

size_t shared_bytes(int floats) { return static_cast<size_t>(floats) * sizeof(float); }

}  // namespace

std::string refusal(const Desc& d) {
  const size_t need = shared_bytes(d.smem_floats), have = static_cast<size_t>(shared_limit());
  if (need > have)
    return fmt::format("the weights and a tile's activations need {} KiB of shared memory, the GPU has {} KiB",
                       need / 1024, have / 1024);
  return {};
}

void forward(const Desc& d, const float* x, float* y) {
  shared_limit();
  const auto blocks = static_cast<unsigned>(tiles(d));
  if (blocks == 0) return;
  forward_kernel<<<blocks, kThreads, shared_bytes(forward_floats(d)), at::cuda::getCurrentCUDAStream()>>>(d, x, y);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void backward(const Desc& d, const float* x, const float* gy, float* partial, float* sums) {
  shared_limit();
  const int64_t n = tiles(d);
  if (n == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  backward_kernel<<<static_cast<unsigned>(n), kThreads, shared_bytes(d.smem_floats), stream>>>(d, x, gy, partial);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sums_kernel<<<(d.row + 255) / 256, 256, 0, stream>>>(partial, n, d.row, sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sparq::train::mlp::cuda
