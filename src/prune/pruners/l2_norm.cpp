// L2NormPruner: the L2 norm of each block (a row or filter by default).
#include <torch/torch.h>

#include "norm_metric.h"

namespace sparq::prune {
namespace {
const bool registered = register_pruner(
    {"L2NormPruner", "L2 norm per block (output channel by default)", {}, MaskGranularity::Kind::OutChannel,
     false, tensor_metric([](const torch::Tensor& w, const std::vector<int64_t>& k) {
       return shrink(w, k, BlockReduce::L2);
     })});
}  // namespace
}  // namespace sparq::prune
