// MovementPruner: a trainable score per block receives the mask's gradient straight through
// (dS = dL/dw_eff * w over the block), so weights moving away from zero gain score. From
// warmup_step to cooldown_begin_step the goals rise cubically, and masks are remade from the
// scores after every step past the warm-up.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "block_optimizer.h"
#include "sparq/error.h"
#include "sparq/prune/mask_pruner.h"

namespace sparq::prune {
namespace {

class MovementPruner : public MaskPruner {
 public:
  MovementPruner(PruningSpec spec, std::vector<PrunerTarget> targets)
      : MaskPruner(std::move(spec), std::move(targets)),
        warmup_(spec_.integer("warmup_step")),
        cooldown_(spec_.integer("cooldown_begin_step")) {
    if (warmup_ >= cooldown_)
      throw ConfigError(fmt::format("MovementPruner: warmup_step {} must be less than cooldown_begin_step {}",
                                    warmup_, cooldown_));
    std::vector<torch::Tensor> scores;
    for (auto& t : targets_)
      if (t.setting.active()) {
        t.mask->add_score(t.kernel);
        scores.push_back(t.mask->score);
      }
    optimizer_ = std::make_unique<BlockOptimizer>(scores, "movement_optimizer");
  }
  void before_step(int64_t) override {}
  void after_backward(int64_t) override { optimizer_->step(); }
  void after_step(int64_t s) override {
    if (s + 1 <= warmup_) return;
    set_goal_factor(goal(s + 1));
    generate();
  }
  torch::Tensor loss(int64_t s) override {
    torch::Tensor sum;
    int64_t n = 0;
    for (const auto& t : targets_)
      if (t.mask->score.defined() && t.setting.sparse_threshold) {
        auto term = torch::sigmoid(t.mask->score).sum() / static_cast<double>(t.mask->score.numel());
        sum = sum.defined() ? sum + term : term;
        ++n;
      }
    return n ? sum * (spec_.number("regular_scale") * goal(s) / static_cast<double>(n)) : torch::Tensor();
  }
  int64_t steps_needed() const override { return cooldown_; }
  torch::Tensor metric(const PrunerTarget& t) override {
    auto s = t.mask->score.detach();
    return t.setting.sparse_threshold ? torch::sigmoid(s) : s;
  }
  void save(torch::serialize::OutputArchive& root) override { optimizer_->save(root); }
  void load(torch::serialize::InputArchive& root) override { optimizer_->load(root); }

 private:
  /// The goal factor after `done` steps: 0 until the warm-up ends, 1 from the cool-down on.
  double goal(int64_t done) const {
    if (done <= warmup_) return 0.0;
    double left = 1.0 - static_cast<double>(std::min(done, cooldown_) - warmup_) / static_cast<double>(cooldown_ - warmup_);
    return std::clamp(1.0 - left * left * left, 0.0, 1.0);
  }
  int64_t warmup_, cooldown_;
  std::unique_ptr<BlockOptimizer> optimizer_;
};

const bool registered = register_pruner(
    {"MovementPruner", "movement scores trained through the mask, cubic schedule from warm-up to cool-down",
     {integer("warmup_step", 0, 0), integer("cooldown_begin_step", 100, 1), number("regular_scale", 1.0, 0.0)},
     MaskGranularity::Kind::OutChannel, false,
     [](const PruningSpec& spec, std::vector<PrunerTarget> targets) -> std::shared_ptr<MaskPruner> {
       return std::make_shared<MovementPruner>(spec, std::move(targets));
     }});

}  // namespace
}  // namespace sparq::prune
