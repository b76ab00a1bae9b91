// FPGMPruner (filter pruning via geometric median): a block's summed Euclidean distance to every
// block of the same tensor; the blocks nearest the others (the most replaceable) go first.
#include <fmt/format.h>
#include <torch/torch.h>

#include "norm_metric.h"
#include "sparq/error.h"

namespace sparq::prune {
namespace {

torch::Tensor fpgm_metric(const torch::Tensor& w, const std::vector<int64_t>& kernel) {
  auto blocks = blocks_of(w, kernel);
  auto shape = blocks.sizes().vec();
  shape.pop_back();
  auto flat = blocks.reshape({-1, blocks.size(-1)}).to(torch::kFloat64);
  return torch::cdist(flat, flat).sum(1).reshape(shape).to(w.scalar_type());
}

std::shared_ptr<MaskPruner> make_fpgm(const PruningSpec& spec, std::vector<PrunerTarget> targets) {
  for (const auto& t : targets)
    if (t.setting.active() && t.setting.granularity.kind == MaskGranularity::Kind::Element)
      throw ConfigError(fmt::format("FPGMPruner: {} has granularity null (element-wise), but FPGM compares blocks; "
                                    "give out_channel, in_channel or a block size",
                                    t.what()));
  return tensor_metric(fpgm_metric)(spec, std::move(targets));
}

const bool registered = register_pruner({"FPGMPruner", "distance to the geometric median per block",
                                         {}, MaskGranularity::Kind::OutChannel, false, make_fpgm});
}  // namespace
}  // namespace sparq::prune
