// AutoSparse (spec §2.5): worked example and alpha schedule.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(AutoSparse, WorkedExampleAndAlphaSchedule) {
  auto as = prune::make_method(spec("autosparse", {{"threshold_init", -2.0}, {"alpha", 0.5}}), {1, 4},
                               LayerKind::Linear);
  auto w = torch::tensor({{0.5f, -0.1f, 0.05f, -0.3f}}).requires_grad_();
  EXPECT_TRUE(as->apply(w).equal(w));  // pretraining: identity
  as->post_pretrain();
  auto out = as->apply(w);
  expect_near(values(out), {0.3808f, 0.0f, 0.0f, -0.1808f}, 1e-4f);
  expect_near(values(as->hard_mask(w)), {1, 0, 0, 1}, 0);
  out.sum().backward();
  expect_near(values(w.grad()), {1.0f, 0.5f, 0.5f, 1.0f}, 1e-6f);  // pruned weights leak alpha
  // alpha = alpha0 max((1 + cos(pi e/E))/2, 1 - sigmoid(-6 + 12 e/E)); 0 from alpha_reset_epoch on.
  as->post_epoch(3, 10);
  EXPECT_NEAR(buffer(*as, "alpha").item<float>(), 0.4584f, 1e-4f);
  auto long_run = prune::make_method(spec("autosparse", {}), {1, 4}, LayerKind::Linear);
  for (auto [e, multiplier] : {std::pair{10, 0.992f}, {25, 0.953f}, {50, 0.5f}, {75, 0.146f}, {89, 0.030f}}) {
    long_run->post_epoch(e, 100);
    EXPECT_NEAR(buffer(*long_run, "alpha").item<float>(), 0.5f * multiplier, 1e-3f) << e;
  }
  long_run->post_epoch(90, 100);
  EXPECT_EQ(buffer(*long_run, "alpha").item<float>(), 0.0f);
  // Fine-tuning: the last mask, no shrinkage.
  as->pre_finetune();
  expect_near(values(as->apply(w.detach())), {0.5f, 0.0f, 0.0f, -0.3f}, 0);
}
