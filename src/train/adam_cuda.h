// Adam and AdamW on CUDA for a batch of float32 tensors in one launch (built only against a CUDA
// LibTorch, SPARQ_WITH_CUDA). The step count of each tensor lives on the device: the kernel
// corrects the bias with it and a second launch counts the step, so a replayed CUDA graph trains
// as the launched steps do.
#pragma once

#include <cstdint>

namespace sparq::train::cuda {

struct AdamTensor {
  float* param;
  const float* grad;
  float* exp_avg;
  float* exp_avg_sq;
  int64_t* step;  ///< steps done so far (this one is step + 1)
  int64_t numel;
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;  ///< AdamW: p *= 1 - lr·wd; Adam: g += wd·p
};

constexpr int kAdamBatch = 24;  ///< tensors per launch (the kernel's arguments stay under 4 KiB)

struct AdamBatch {
  AdamTensor t[kAdamBatch];
  int count = 0;
};

/// One Adam step of every tensor in the batch, on the current stream; then their counts + 1.
void adam_step(const AdamBatch& batch, int64_t max_numel);

}  // namespace sparq::train::cuda
