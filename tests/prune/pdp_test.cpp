// PDP (spec §2.3): the worked examples, structured pruning and the ramp.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(PDP, WorkedExampleUnstructured) {
  auto w = torch::tensor({0.9f, -0.1f, 0.5f, 0.05f, -0.7f, 0.3f, 0.02f, -0.4f}).view({1, 8});
  for (auto [tau, want] : {std::pair{1e-5, std::vector<float>{1, 0, 1, 0, 1, 0, 0, 1}},
                           std::pair{0.05, std::vector<float>{1.0f, 0.095f, 0.928f, 0.083f, 0.999f, 0.343f, 0.080f,
                                                              0.679f}}}) {
    auto pdp = prune::make_method(spec("pdp", {{"sparsity", 0.5}, {"epsilon", 1.0}, {"temperature", tau}}), {1, 8},
                                  LayerKind::Linear);
    pdp->pre_epoch(0, 10);  // r = min(1, 1.0 * 1) * 0.5
    EXPECT_EQ(buffer(*pdp, "mask").sum().item<float>(), 8.0f);  // pretraining: mask of ones
    pdp->post_pretrain();
    expect_near(values(pdp->apply(w) / w), want, 1e-3f);
    // The stored mask (soft) becomes 0/1 at fine-tuning: >= 0.5 is kept.
    pdp->update_mask(w);
    pdp->pre_finetune();
    expect_near(values(buffer(*pdp, "mask")), {1, 0, 1, 0, 1, 0, 0, 1}, 0);
    expect_near(values(pdp->apply(w)), {0.9f, 0, 0.5f, 0, -0.7f, 0, 0, -0.4f}, 0);
  }
}

TEST(PDP, WorkedExampleStructuredAndRamp) {
  auto w = torch::tensor({3.0f, -1.0f, 2.0f, 0.5f}).view({4, 1});  // row norms 3, 1, 2, 0.5
  auto pdp = prune::make_method(spec("pdp", {{"sparsity", 0.5}, {"epsilon", 1.0}, {"structured_pruning", true}}),
                                {4, 1}, LayerKind::Linear);
  EXPECT_EQ(buffer(*pdp, "mask").sizes(), (std::vector<int64_t>{4, 1}));
  pdp->pre_epoch(0, 1);
  pdp->post_pretrain();
  expect_near(values(pdp->apply(w)), {3, 0, 2, 0}, 0);  // t = (2 + 1) / 2

  // Ramp: r = min(1, epsilon (e + 1)) r0, restarting with the stage-local epoch.
  auto ramp = prune::make_method(spec("pdp", {}), {4, 4}, LayerKind::Linear);
  ramp->pre_epoch(0, 100);
  EXPECT_FLOAT_EQ(buffer(*ramp, "r").item<float>(), 0.015f * 0.8f);
  ramp->pre_epoch(65, 100);
  EXPECT_FLOAT_EQ(buffer(*ramp, "r").item<float>(), 0.99f * 0.8f);
  ramp->pre_epoch(66, 100);
  EXPECT_FLOAT_EQ(buffer(*ramp, "r").item<float>(), 0.8f);
  // The global budget replaces the configured target from the next epoch on.
  ramp->set_budget(0.25);
  ramp->pre_epoch(99, 100);
  EXPECT_FLOAT_EQ(buffer(*ramp, "r").item<float>(), 0.25f);
  // r = 0 prunes nothing (PQuantML would still prune the smallest weight).
  auto none = prune::make_method(spec("pdp", {{"sparsity", 0.0}}), {1, 8}, LayerKind::Linear);
  none->pre_epoch(0, 1);
  none->post_pretrain();
  auto v = torch::rand({1, 8}) + 0.1;
  EXPECT_TRUE(none->apply(v).equal(v));
}

// The CPU's one-pass masked weight (forward and backward) against the spec's formula in LibTorch
// ops: w·sigmoid((w² - t²)/τ), t the mean of the smallest kept and largest pruned |w|, the
// gradient through t reaching those two weights.
TEST(PDP, OnePassMaskedWeightEqualsTheComposedOps) {
  torch::manual_seed(3);
  for (double tau : {0.05, 1e-3}) {
    SCOPED_TRACE(tau);
    auto w = (torch::randn({40, 30}) * 0.3).requires_grad_(true);  // 1,200 weights, 70% pruned
    auto pdp = prune::make_method(spec("pdp", {{"sparsity", 0.7}, {"epsilon", 1.0}, {"temperature", tau}}), {40, 30},
                                  LayerKind::Linear);
    pdp->pre_epoch(0, 1);
    pdp->post_pretrain();
    auto upstream = torch::randn({40, 30});
    auto mine = pdp->apply(w);
    (mine * upstream).sum().backward();
    auto mine_grad = w.grad().clone();
    w.mutable_grad().reset();

    auto sorted = std::get<0>(w.abs().flatten().sort(0, /*descending=*/true));
    const int64_t l = static_cast<int64_t>((1.0 - 0.7) * 1200) - 1;
    auto t = (sorted[l] + sorted[l + 1]) / 2;
    auto want = w * torch::sigmoid((w.pow(2) - t.pow(2)) / tau);
    (want * upstream).sum().backward();

    EXPECT_LE((mine - want).abs().max().item<float>(), 1e-6f);
    const float scale = w.grad().abs().max().item<float>();
    EXPECT_LE((mine_grad - w.grad()).abs().max().item<float>(), 1e-5f * scale);
    // The threshold's own gradient is there: the two weights that define t differ from the direct term.
    auto direct = upstream * (torch::sigmoid((w.pow(2) - t.pow(2)) / tau) +
                              2 * w.pow(2) / tau * torch::sigmoid((w.pow(2) - t.pow(2)) / tau) *
                                  (1 - torch::sigmoid((w.pow(2) - t.pow(2)) / tau)));
    EXPECT_EQ(((mine_grad - direct.detach()).abs() > 1e-4f * scale).sum().item<int64_t>(), 2);
  }
}

// With tied magnitudes the threshold's two weights are the l-th and (l+1)-th in the order
// "larger magnitude first, ties by index" (the selection by histogram keeps the order's rule).
TEST(PDP, ThresholdWeightsUnderTiesFollowTheOrder) {
  torch::manual_seed(4);
  auto levels = torch::tensor({0.1f, 0.2f, 0.3f, 0.4f});
  auto w = (levels.index({torch::randint(4, {200})}) * (torch::randint(2, {200}) * 2 - 1)).view({10, 20});
  w.requires_grad_(true);
  const double tau = 0.05;
  auto pdp = prune::make_method(spec("pdp", {{"sparsity", 0.5}, {"epsilon", 1.0}, {"temperature", tau}}), {10, 20},
                                LayerKind::Linear);
  pdp->pre_epoch(0, 1);
  pdp->post_pretrain();
  auto upstream = torch::randn({10, 20});
  (pdp->apply(w) * upstream).sum().backward();
  auto v = w.detach().abs().flatten();
  auto order = std::get<1>(v.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const int64_t l = 99;
  auto t = (v[order[l]] + v[order[l + 1]]) / 2;
  auto m = torch::sigmoid((w.detach().pow(2) - t.pow(2)) / tau);
  auto direct = (upstream * (m + 2 * w.detach().pow(2) / tau * m * (1 - m))).flatten();
  auto extra = ((w.grad().flatten() - direct).abs() > 1e-4).nonzero().flatten();
  ASSERT_EQ(extra.numel(), 2);
  EXPECT_EQ(extra[0].item<int64_t>(), std::min(order[l].item<int64_t>(), order[l + 1].item<int64_t>()));
  EXPECT_EQ(extra[1].item<int64_t>(), std::max(order[l].item<int64_t>(), order[l + 1].item<int64_t>()));
}
