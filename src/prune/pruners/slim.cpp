// SlimPruner (network slimming): a trainable factor gamma per block multiplies the target, an
// L1 penalty on gamma pushes the unimportant ones down, and after `training_steps` steps the
// smallest |gamma| are masked. Gamma trains with its own Adam before the main step, then freezes.
#include <fmt/format.h>
#include <torch/torch.h>

#include "block_optimizer.h"
#include "sparq/error.h"
#include "sparq/prune/mask_pruner.h"

namespace sparq::prune {
namespace {

class SlimPruner : public MaskPruner {
 public:
  SlimPruner(PruningSpec spec, std::vector<PrunerTarget> targets)
      : MaskPruner(std::move(spec), std::move(targets)), steps_(spec_.integer("training_steps")) {
    std::vector<torch::Tensor> factors;
    for (auto& t : targets_) {
      if (!t.setting.active()) continue;
      if (t.setting.apply_method != "mul")
        throw ConfigError(fmt::format("SlimPruner: {} has apply_method '{}'; Slim scales the target, so it needs "
                                      "'mul'",
                                      t.what(), t.setting.apply_method));
      t.mask->add_factor(t.kernel);
      factors.push_back(t.mask->factor);
    }
    optimizer_ = std::make_unique<BlockOptimizer>(factors, "slim_optimizer");
  }
  void before_step(int64_t s) override {
    if (s < steps_) return;
    for (auto& t : targets_)
      if (t.mask->factor.defined()) t.mask->factor.requires_grad_(false);  // trained out
  }
  void after_backward(int64_t s) override {
    if (s < steps_) optimizer_->step();
  }
  void after_step(int64_t s) override {
    if (s + 1 == steps_) generate();
  }
  torch::Tensor loss(int64_t s) override {
    if (s >= steps_) return {};
    torch::Tensor sum;
    int64_t n = 0;
    for (const auto& t : targets_)
      if (t.mask->factor.defined()) {
        auto l1 = t.mask->factor.abs().sum();
        sum = sum.defined() ? sum + l1 : l1;
        ++n;
      }
    return n ? sum * (spec_.number("regular_scale") / static_cast<double>(n)) : torch::Tensor();
  }
  int64_t steps_needed() const override { return steps_; }
  torch::Tensor metric(const PrunerTarget& t) override { return t.mask->factor.detach().abs(); }
  void save(torch::serialize::OutputArchive& root) override { optimizer_->save(root); }
  void load(torch::serialize::InputArchive& root) override { optimizer_->load(root); }

 private:
  int64_t steps_;
  std::unique_ptr<BlockOptimizer> optimizer_;
};

const bool registered = register_pruner(
    {"SlimPruner", "trained per-block scaling factors with an L1 penalty (network slimming)",
     {integer("training_steps", 100, 1), number("regular_scale", 1.0, 0.0)}, MaskGranularity::Kind::OutChannel, false,
     [](const PruningSpec& spec, std::vector<PrunerTarget> targets) -> std::shared_ptr<MaskPruner> {
       return std::make_shared<SlimPruner>(spec, std::move(targets));
     }});

}  // namespace
}  // namespace sparq::prune
