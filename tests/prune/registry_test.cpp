// Adding a pruning method is one file: this test file registers "keep_top" (a magnitude mask
// fixed after pretraining) and a PQuantML config then trains with it like any built-in method.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/prune/methods.h"
#include "test_util.h"

using namespace sparq;

namespace {

class KeepTop : public prune::PruningMethod {
 public:
  KeepTop(const PruningSpec& spec, const std::vector<int64_t>& shape) : keep_(spec.number("keep")) {
    mask = register_buffer("mask", torch::ones(shape));
  }
  torch::Tensor apply(const torch::Tensor& w) override { return w * mask; }
  torch::Tensor hard_mask(const torch::Tensor&) override { return mask; }
  void post_pretrain() override {
    stage_ = prune::Stage::Training;
    torch::NoGradGuard no_grad;
    auto w = weight_.abs().flatten();
    auto k = static_cast<int64_t>(keep_ * static_cast<double>(w.numel()));
    auto threshold = std::get<0>(w.topk(k)).min();
    mask.copy_((weight_.abs() >= threshold).to(mask.scalar_type()));
  }
  void update_mask(const torch::Tensor& raw) override { weight_ = raw; }
  torch::Tensor mask, weight_;

 private:
  double keep_;
};

const bool registered = prune::register_method(
    {"keep_top", 100, {prune::number("keep", 0.5, 0.0, 1.0)},
     [](const PruningSpec& spec, const std::vector<int64_t>& shape, prune::LayerKind) {
       return std::make_shared<KeepTop>(spec, shape);
     },
     nullptr});

}  // namespace

TEST(MethodRegistry, AMethodRegisteredInItsOwnFileTrainsFromAConfig) {
  ASSERT_TRUE(registered);
  ASSERT_TRUE(prune::find_method("keep_top"));
  EXPECT_EQ(prune::default_spec("keep_top").number("keep"), 0.5);
  EXPECT_EQ(prune::default_spec("keep_top").number("threshold_decay"), 0.0);  // the shared parameter
  auto plan = test::pquant_plan(R"(training_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 0}
pruning_parameters: {pruning_method: keep_top, keep: 0.25}
)");
  train::seed_everything(1);
  models::Graph model(models::zoo_spec("mlp", {8}, 3, {{16}, 64, 1, "ReLU"}));
  compress(model, plan);
  test::RunTrainer trainer(model, train::TrainOptions{}, "", plan.schedule, plan.events);
  auto history = trainer.fit(test::blobs(64, 1), test::blobs(16, 2));
  EXPECT_NEAR(history.back().sparsity, 0.75, 0.02);  // keep 25% of every layer
  // Its parameters are checked like those of the built-in methods.
  EXPECT_NE(test::error_of<ConfigError>([] { test::pquant_plan("pruning_parameters: {pruning_method: keep_top, keep: 2}"); })
                .find("keep: 2 is out of range"),
            std::string::npos);
}
