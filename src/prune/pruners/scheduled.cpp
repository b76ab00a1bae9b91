// LinearPruner and AGPPruner: an inner pruner (Level, L1Norm, L2Norm, FPGM, Slim, Taylor) whose
// goals (ratios, thresholds, min/max ratios) rise over `total_times` generations, one every
// `interval_steps` optimizer steps: linearly (k / total) or as AGP's cubic 1 - (1 - k / total)^3.
// The inner pruner's own training (Slim's factors, Taylor's sums) and loss run every step; its
// own mask timing is replaced by the schedule's.
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/prune/mask_pruner.h"

namespace sparq::prune {
namespace {

class ScheduledPruner : public MaskPruner {
 public:
  ScheduledPruner(PruningSpec spec, std::vector<PrunerTarget> targets, bool cubic)
      : MaskPruner(std::move(spec), targets),
        cubic_(cubic),
        interval_(spec_.integer("interval_steps")),
        total_(spec_.integer("total_times")) {
    PruningSpec inner{spec_.text("pruner"), {}};
    for (const auto& [key, value] : spec_.params)
      if (key.rfind("pruner.", 0) == 0) inner.params[key.substr(7)] = value;
    inner.params["start_epoch"] = int64_t{0};
    inner_ = find_pruner(inner.method)->make(inner, std::move(targets));
    inner_->set_goal_factor(0.0);
  }
  void before_step(int64_t) override {}  // the inner pruner's own timing is the schedule's
  void after_backward(int64_t s) override { inner_->after_backward(s); }
  void after_step(int64_t s) override {
    const int64_t done = s + 1;
    if (done % interval_ != 0 || done / interval_ > total_) return;
    double k = static_cast<double>(done / interval_) / static_cast<double>(total_);
    inner_->set_goal_factor(cubic_ ? 1.0 - std::pow(1.0 - k, 3) : k);
    inner_->generate();
  }
  torch::Tensor loss(int64_t s) override { return inner_->loss(s); }
  int64_t steps_needed() const override { return interval_ * total_; }
  torch::Tensor metric(const PrunerTarget& t) override { return inner_->metric(t); }
  void save(torch::serialize::OutputArchive& root) override { inner_->save(root); }
  void load(torch::serialize::InputArchive& root) override { inner_->load(root); }

 private:
  bool cubic_;
  int64_t interval_, total_;
  std::shared_ptr<MaskPruner> inner_;
};

std::vector<ParamInfo> schedule_params() {
  return {integer("interval_steps", 100, 1), integer("total_times", 10, 1)};
}

PrunerFactory scheduled(bool cubic) {
  return [cubic](const PruningSpec& spec, std::vector<PrunerTarget> targets) -> std::shared_ptr<MaskPruner> {
    return std::make_shared<ScheduledPruner>(spec, std::move(targets), cubic);
  };
}

const bool registered =
    register_pruner({"LinearPruner", "an inner pruner with goals rising linearly over total_times steps of interval_steps",
                     schedule_params(), MaskGranularity::Kind::OutChannel, true, scheduled(false)}) &&
    register_pruner({"AGPPruner", "an inner pruner with goals rising as AGP's cubic 1 - (1 - k/total)^3",
                     schedule_params(), MaskGranularity::Kind::OutChannel, true, scheduled(true)});

}  // namespace
}  // namespace sparq::prune
