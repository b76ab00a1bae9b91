// Continuous Sparsification (spec §2.1): temperature schedule, round reset, hard mask.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(CS, TemperatureScheduleRoundResetAndHardMask) {
  auto cs = prune::make_method(spec("cs", {{"threshold_decay", 1e-3}}), {2, 2}, LayerKind::Linear);
  auto w = torch::tensor({{1.0f, -2.0f}, {3.0f, 4.0f}});
  cs->post_pretrain();
  EXPECT_TRUE(cs->apply(w).allclose(w));  // s = s0 = 0, beta = 1: m = sigma(0) / sigma(0) = 1
  EXPECT_NEAR(cs->loss().item<float>(), 1e-3f * 4, 1e-9);
  // beta grows by final_temp^(1/(E-1)) per epoch: 14.14 after 42 of 85 epochs, 200 after 84.
  for (int e = 0; e < 42; ++e) cs->post_epoch(e, 85);
  EXPECT_NEAR(buffer(*cs, "beta").item<float>(), 14.14f, 0.01f);
  for (int e = 42; e < 84; ++e) cs->post_epoch(e, 85);
  EXPECT_NEAR(buffer(*cs, "beta").item<float>(), 200.0f, 0.01f);
  // Gates: two open, two closed. After a round open gates go back to s0, closed ones are amplified.
  auto s = cs->named_parameters()["s"];
  {
    torch::NoGradGuard no_grad;
    s.copy_(torch::tensor({{0.5f, -0.5f}, {0.2f, -0.1f}}));
  }
  auto m = values(cs->apply(w) / w);
  EXPECT_NEAR(m[0], 2.0f, 1e-4f);  // sigma(200 * 0.5) * 1 / sigma(0)
  EXPECT_NEAR(m[1], 0.0f, 1e-4f);
  cs->post_round();
  expect_near(values(s), {0.0f, -100.0f, 0.0f, -20.0f}, 1e-3f);
  EXPECT_EQ(buffer(*cs, "beta").item<float>(), 1.0f);
  {
    torch::NoGradGuard no_grad;
    s.copy_(torch::tensor({{0.5f, -0.5f}, {0.0f, -0.1f}}));
  }
  cs->pre_finetune();
  expect_near(values(cs->apply(w)), {1.0f, 0.0f, 0.0f, 0.0f}, 0);  // 1[s > 0]: an unmoved gate is pruned
  // The L1 term follows the gates (the Trainer adds it in the training stage only).
  EXPECT_NEAR(cs->loss().item<float>(), 1e-3f * (2 * torch::sigmoid(s)).sum().item<float>(), 1e-7f);
}
