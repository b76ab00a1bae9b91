// L1NormPruner: the L1 norm of each block (a row or filter by default).
#include <torch/torch.h>

#include "norm_metric.h"

namespace sparq::prune {
namespace {
const bool registered = register_pruner(
    {"L1NormPruner", "L1 norm per block (output channel by default)", {}, MaskGranularity::Kind::OutChannel,
     false, tensor_metric([](const torch::Tensor& w, const std::vector<int64_t>& k) {
       return shrink(w, k, BlockReduce::SumAbs);
     })});
}  // namespace
}  // namespace sparq::prune
