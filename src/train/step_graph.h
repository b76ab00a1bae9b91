// The two pieces that let a training step run from a CUDA graph (built with CUDA only; the CPU
// build has the types but never makes them):
// - DeviceAdam: Adam and AdamW over float32 CUDA parameters in one kernel per 24 tensors, each
//   parameter's step count on the device, so a replayed step corrects its bias as a launched one
//   does (LibTorch's Adam reads the count on the host). The moments are the torch::optim state's
//   own tensors, so checkpoints stay as they were: the host counts are written back before a save
//   (sync_host) and read after a load (sync_device).
// - StepGraph: one step captured on a side stream and replayed, with its static batch and result.
#pragma once

#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/train/trainer.h"

namespace sparq::train {

class DeviceAdam {
 public:
  /// Empty where it can replace `optimizer` (Adam or AdamW without amsgrad, every parameter
  /// float32 on CUDA, a CUDA build), else why not.
  static std::string refusal(torch::optim::Optimizer& optimizer);
  explicit DeviceAdam(torch::optim::Optimizer& optimizer);
  ~DeviceAdam();
  /// One optimizer step over the parameters that have gradients (launched, or being captured:
  /// then every one of them must have its state already, else sparq::Error).
  void step();
  void sync_host();
  void sync_device();

 private:
  torch::optim::Optimizer& optimizer_;
  std::vector<torch::Tensor> params_;  ///< in group order
  std::vector<size_t> group_of_;
  torch::Tensor steps_;  ///< int64 [params] on the device: steps done per parameter
};

class StepGraph {
 public:
  StepGraph();
  ~StepGraph();
  /// Whether this build can capture graphs at all.
  static bool supported();
  /// Runs body() eagerly on a side stream (the real step of this batch; lazy state and per-stream
  /// handles come into being outside the graph) and returns what it returned, then captures
  /// body() once more as the graph (`result`). Throws what the warm-up step throws; a capture
  /// that fails leaves captured() false and the reason in failure().
  StepResult capture(const std::function<StepResult()>& body);
  const std::string& failure() const { return failure_; }
  void replay();
  bool captured() const;

  torch::Tensor x, y;  ///< the static batch the graph reads (each replay copies a batch in)
  StepResult result;   ///< what the captured step returned (overwritten by each replay)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string failure_;
};

}  // namespace sparq::train
