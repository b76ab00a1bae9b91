// StepGraph: one training step captured as a CUDA graph on a side stream and replayed, with its
// static batch and result (built with CUDA only; the CPU build has the type but never makes it).
// The optimizer half of a capturable step is FusedAdam (train/fused_adam.h).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/train/trainer.h"

namespace sparq::train {

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
