// What the one-shot pruners (Level, L1Norm, L2Norm, FPGM) share: a metric that is a function of
// the target tensor alone, masks made once at the pruner's first step.
#pragma once

#include <functional>

#include "sparq/prune/mask_pruner.h"

namespace sparq::prune {

class TensorMetricPruner : public MaskPruner {
 public:
  using Metric = std::function<torch::Tensor(const torch::Tensor& tensor, const std::vector<int64_t>& kernel)>;
  TensorMetricPruner(PruningSpec spec, std::vector<PrunerTarget> targets, Metric metric)
      : MaskPruner(std::move(spec), std::move(targets)), metric_(std::move(metric)) {}
  torch::Tensor metric(const PrunerTarget& t) override { return metric_(t.tensor.detach(), t.kernel); }

 private:
  Metric metric_;
};

/// A factory for a TensorMetricPruner with `metric`.
inline PrunerFactory tensor_metric(TensorMetricPruner::Metric metric) {
  return [metric](const PruningSpec& spec, std::vector<PrunerTarget> targets) -> std::shared_ptr<MaskPruner> {
    return std::make_shared<TensorMetricPruner>(spec, std::move(targets), metric);
  };
}

}  // namespace sparq::prune
