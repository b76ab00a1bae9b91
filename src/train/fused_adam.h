// FusedAdam: Adam and AdamW in one pass per parameter instead of LibTorch's eight tensor ops
// (a tiny network's step is mostly op overhead: the HGQ jet tagger has 38 parameter tensors).
// - CPU: one parallel loop per tensor, LibTorch 1.13's arithmetic element by element (its
//   vectorised kernels' fused multiply-adds included), so the parameters are LibTorch's own to
//   the bit on AVX2 and AVX-512 machines; the step counts are the state's.
// - CUDA: one kernel per 24 tensors, each parameter's step count on the device, so a step
//   replayed from a CUDA graph corrects its bias as a launched one does (LibTorch's Adam reads the
//   count on the host); the host counts are written back before a save (sync_host) and read after
//   a load (sync_device).
// The moments are the torch::optim state's own tensors: checkpoints stay as they were.
#pragma once

#include <torch/optim/optimizer.h>

#include <string>
#include <vector>

namespace sparq::train {

class FusedAdam {
 public:
  /// Empty where it can replace `optimizer` (Adam or AdamW without amsgrad, every parameter a
  /// contiguous float32 tensor on the CPU, or on CUDA in a CUDA build), else why not.
  static std::string refusal(torch::optim::Optimizer& optimizer);
  explicit FusedAdam(torch::optim::Optimizer& optimizer);
  ~FusedAdam();
  /// One optimizer step over the parameters that have gradients (launched, or being captured:
  /// then every one of them must have its state already, else sparq::Error).
  void step();
  /// The device's step counts into the torch::optim state (before a save; nothing on the CPU).
  void sync_host();
  /// The state's step counts and moments onto the device (after a load).
  void sync_device();

 private:
  void cpu_step();
  void cuda_step();
  /// fn(state, options): parameter j's Adam or AdamW state (null when it has none and !create)
  /// and its group's options.
  template <typename Fn>
  void with_state(size_t j, bool create, Fn&& fn);

  torch::optim::Optimizer& optimizer_;
  bool adamw_;
  std::vector<torch::Tensor> params_;  ///< in group order
  std::vector<size_t> group_of_;
  bool cuda_ = false;
  torch::Tensor steps_;  ///< CUDA: int64 [params] on the device, steps done per parameter
};

}  // namespace sparq::train
