// TaylorPruner: the first-order Taylor importance (w * dL/dw)^2, averaged over the first
// `training_steps` optimizer steps, summed per block; masks once, after those steps.
#include <torch/torch.h>

#include <algorithm>

#include "sparq/prune/mask_pruner.h"

namespace sparq::prune {
namespace {

class TaylorPruner : public MaskPruner {
 public:
  TaylorPruner(PruningSpec spec, std::vector<PrunerTarget> targets)
      : MaskPruner(std::move(spec), std::move(targets)), steps_(spec_.integer("training_steps")) {
    for (const auto& t : targets_) acc_.push_back(t.tensor.defined() ? torch::zeros_like(t.tensor) : torch::Tensor());
  }
  void before_step(int64_t) override {}
  void after_backward(int64_t s) override {
    if (s >= steps_) return;
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < targets_.size(); ++i)
      if (targets_[i].setting.active() && targets_[i].tensor.grad().defined())
        acc_[i] += (targets_[i].tensor * targets_[i].tensor.grad()).pow(2);
    ++seen_;
  }
  void after_step(int64_t s) override {
    if (s + 1 == steps_) generate();
  }
  int64_t steps_needed() const override { return steps_; }
  torch::Tensor metric(const PrunerTarget& t) override {
    auto it = std::find_if(targets_.begin(), targets_.end(),
                           [&](const PrunerTarget& o) { return o.module == t.module && o.target == t.target; });
    const auto& acc = acc_[it - targets_.begin()];
    return shrink(acc / static_cast<double>(std::max<int64_t>(seen_, 1)), t.kernel, BlockReduce::SumAbs);
  }
  void save(torch::serialize::OutputArchive& root) override {
    for (size_t i = 0; i < acc_.size(); ++i)
      if (acc_[i].defined()) root.write("taylor_acc." + std::to_string(i), acc_[i], true);
    root.write("taylor_seen", torch::tensor(seen_));
  }
  void load(torch::serialize::InputArchive& root) override {
    for (size_t i = 0; i < acc_.size(); ++i)
      if (acc_[i].defined()) root.try_read("taylor_acc." + std::to_string(i), acc_[i], true);
    torch::Tensor seen;
    if (root.try_read("taylor_seen", seen)) seen_ = seen.item<int64_t>();
  }

 private:
  int64_t steps_, seen_ = 0;
  std::vector<torch::Tensor> acc_;
};

const bool registered = register_pruner(
    {"TaylorPruner", "first-order Taylor importance (w * grad)^2 over training_steps steps",
     {integer("training_steps", 100, 1)}, MaskGranularity::Kind::OutChannel, false,
     [](const PruningSpec& spec, std::vector<PrunerTarget> targets) -> std::shared_ptr<MaskPruner> {
       return std::make_shared<TaylorPruner>(spec, std::move(targets));
     }});

}  // namespace
}  // namespace sparq::prune
