// LevelPruner: |w| per element (or the L1 norm of each block when a granularity is given).
#include <torch/torch.h>

#include "norm_metric.h"

namespace sparq::prune {
namespace {
const bool registered = register_pruner(
    {"LevelPruner", "magnitude |w|, element-wise by default", {}, MaskGranularity::Kind::Element,
     false, tensor_metric([](const torch::Tensor& w, const std::vector<int64_t>& k) {
       return shrink(w, k, BlockReduce::SumAbs);
     })});
}  // namespace
}  // namespace sparq::prune
