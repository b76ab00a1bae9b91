// Pruning methods (spec pquantml-pruning §2.1 CS, §2.2 DST, §2.3 PDP, §2.4 Wanda, §2.5
// AutoSparse, §2.6 activation pruning, §2.7 MDMM, §2.3.7 budget): the spec's worked examples, schedules, and
// end-to-end guarantees.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/compress/compress.h"
#include "sparq/prune/budget.h"
#include "sparq/prune/methods.h"
#include "sparq/train/trainer.h"
#include "test_util.h"

using namespace sparq;
using prune::LayerKind;

namespace {

PruningSpec spec(const std::string& method, std::map<std::string, ParamValue> overrides) {
  auto s = prune::default_spec(method);
  for (auto& [k, v] : overrides) s.params[k] = v;
  return s;
}

torch::Tensor buffer(const prune::PruningMethod& m, const std::string& name) {
  return m.named_buffers()[name];
}

std::vector<float> values(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat32).contiguous().flatten();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

void expect_near(const std::vector<float>& got, const std::vector<float>& want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

}  // namespace

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

TEST(Budget, WorkedExampleSplitsTheGlobalTarget) {
  auto a = torch::cat({torch::full({256}, 0.001f), torch::ones({256})}).view({32, 16});
  auto b = torch::linspace(0.01, 0.99, 1024).view({32, 32});
  auto budgets = prune::layer_budgets({a, b}, 0.75);
  EXPECT_DOUBLE_EQ(budgets[0], 0.5);
  EXPECT_DOUBLE_EQ(budgets[1], static_cast<double>(895.0f / 1024.0f));
  // Kept weights over both layers: 256 + 129 = 385 of 1536, a keep ratio of about 1 - 0.75.
  double kept = (1 - budgets[0]) * 512 + (1 - budgets[1]) * 1024;
  EXPECT_NEAR(kept / 1536, 0.2507, 1e-4);
  auto zero = prune::layer_budgets({a, b}, 0.0);
  EXPECT_EQ(zero, (std::vector<double>{0.0, 0.0}));
}

namespace {
/// Feeds one batch whose input-feature norms are `norms` to a Wanda method in the training stage.
void feed_norms(prune::PruningMethod& wanda, const torch::Tensor& norms, const torch::Tensor& w) {
  wanda.train();
  wanda.post_pretrain();
  wanda.collect_input(norms.view({1, -1}), w);  // one sample: sum of squares = norms^2
}
}  // namespace

TEST(Wanda, WorkedExampleLayerWideAndNM) {
  auto w = torch::tensor({{1.0f, -2.0f, 0.5f, 3.0f}, {0.1f, 1.0f, -1.0f, 0.2f}});
  auto norms = torch::tensor({2.0f, 0.5f, 1.0f, 0.1f});
  std::map<std::string, ParamValue> once = {{"t_delta", int64_t{1}}, {"t_start_collecting_batch", int64_t{0}},
                                            {"sparsity", 0.5}, {"calculate_pruning_budget", false}};
  auto layer_wide = prune::make_method(spec("wanda", once), {2, 4}, LayerKind::Linear);
  feed_norms(*layer_wide, norms, w);
  expect_near(values(layer_wide->hard_mask(w)), {1, 1, 0, 0, 0, 1, 1, 0}, 0);  // ties: lower index pruned first
  EXPECT_TRUE(buffer(*layer_wide, "done").item<bool>());
  auto nm_spec = once;
  nm_spec["N"] = int64_t{2}, nm_spec["M"] = int64_t{4};
  auto nm = prune::make_method(spec("wanda", nm_spec), {2, 4}, LayerKind::Linear);
  feed_norms(*nm, norms, w);
  expect_near(values(nm->hard_mask(w)), {1, 1, 0, 0, 0, 1, 1, 0}, 0);
}

TEST(Wanda, NMPatternHoldsInEveryGroupAndConvPrunesPerFilter) {
  torch::manual_seed(1);
  auto w = torch::randn({8, 16}) + 0.01;  // no exact zeros
  auto wanda = prune::make_method(spec("wanda", {{"t_delta", int64_t{3}}, {"t_start_collecting_batch", int64_t{0}},
                                                 {"N", int64_t{2}}, {"M", int64_t{4}}}),
                                  {8, 16}, LayerKind::Linear);
  wanda->train();
  wanda->post_pretrain();
  for (int b = 0; b < 2; ++b) wanda->collect_input(torch::randn({5, 16}), w);
  EXPECT_EQ(buffer(*wanda, "mask").sum().item<float>(), 128.0f);  // t_delta batches not yet seen
  wanda->collect_input(torch::randn({5, 16}), w);
  auto groups = wanda->hard_mask(w).view({-1, 4}).sum(1);
  EXPECT_TRUE((groups == 2).all().item<bool>()) << groups;  // N = 2 of every 4 pruned, in all 32 groups

  // Conv: every output filter keeps trunc(K (1 - s)) of its K = 2*1*2 weights.
  auto conv_w = torch::randn({3, 2, 1, 2}) + 0.01;
  auto conv = prune::make_method(spec("wanda", {{"t_delta", int64_t{1}}, {"t_start_collecting_batch", int64_t{0}},
                                                {"sparsity", 0.5}}),
                                 {3, 2, 1, 2}, LayerKind::Conv);
  conv->train();
  conv->post_pretrain();
  conv->collect_input(torch::randn({4, 2, 5, 5}), conv_w);
  auto per_filter = conv->hard_mask(conv_w).view({3, -1}).sum(1);
  EXPECT_TRUE((per_filter == 2).all().item<bool>()) << per_filter;
}

TEST(Wanda, WaitsForTStartEpochsOfTraining) {
  auto w = torch::randn({4, 4}) + 0.01;
  auto wanda = prune::make_method(spec("wanda", {{"t_delta", int64_t{1}}, {"t_start_collecting_batch", int64_t{2}}}),
                                  {4, 4}, LayerKind::Linear);
  wanda->train();
  wanda->pre_epoch(0, 1);
  wanda->post_epoch(0, 1);  // pretraining epochs do not count
  wanda->post_pretrain();
  wanda->collect_input(torch::randn({3, 4}), w);
  EXPECT_FALSE(buffer(*wanda, "done").item<bool>());
  wanda->post_epoch(0, 5);
  wanda->post_epoch(1, 5);
  wanda->eval();
  wanda->collect_input(torch::randn({3, 4}), w);  // eval-mode forwards never collect
  EXPECT_FALSE(buffer(*wanda, "done").item<bool>());
  wanda->train();
  wanda->collect_input(torch::randn({3, 4}), w);
  EXPECT_TRUE(buffer(*wanda, "done").item<bool>());
  wanda->post_epoch(2, 5);
  EXPECT_NEAR(buffer(*wanda, "mask").mean().item<float>(), 0.125f, 1e-6);  // trunc(16 * 0.9) = 14 of 16 pruned
}

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

TEST(ActivationPruning, WorkedExampleWindow) {
  auto ap = prune::make_method(spec("activation_pruning", {{"t_delta", int64_t{2}}, {"threshold", 0.3},
                                                           {"t_start_collecting_batch", int64_t{0}}}),
                               {3, 4}, LayerKind::Linear);
  auto w = torch::ones({3, 4});
  ap->train();
  ap->post_pretrain();
  // Outputs positive in 50%, 10%, 100% of a batch of 10, then 30%, 20%, 0%.
  auto batch = [](std::vector<int> positives) {
    auto y = -torch::ones({10, 3});
    for (int c = 0; c < 3; ++c) y.narrow(1, c, 1).narrow(0, 0, positives[c]).fill_(1.0);
    return y;
  };
  ap->collect_output(batch({5, 1, 10}));
  ap->collect_output(batch({3, 2, 0}));
  expect_near(values(ap->apply(w)), std::vector<float>(12, 1.0f), 0);  // live only after the epoch
  ap->post_epoch(0, 1);
  expect_near(values(buffer(*ap, "mask")), {1, 0, 1}, 0);  // means 0.4, 0.15, 0.5 against 0.3
  expect_near(values(ap->apply(w).sum(1)), {4, 0, 4}, 0);
  EXPECT_EQ(buffer(*ap, "mask").sizes(), (std::vector<int64_t>{3, 1}));
}

TEST(DST, WorkedExampleSurrogateGradientAndLoss) {
  auto dst = prune::make_method(spec("dst", {{"threshold_init", 0.1}}), {1, 4}, LayerKind::Linear);
  dst->post_pretrain();
  auto w = torch::tensor({{0.3f, -0.05f, 0.9f, -1.2f}}).requires_grad_();
  auto out = dst->apply(w);
  expect_near(values(out), {0.3f, 0.0f, 0.9f, -1.2f}, 0);
  out.sum().backward();
  expect_near(values(w.grad()), {1.36f, 0.09f, 1.36f, 1.0f}, 1e-5f);
  auto threshold = dst->named_parameters()["threshold"];
  EXPECT_EQ(threshold.sizes(), (std::vector<int64_t>{1, 1}));  // channelwise: one per output row
  EXPECT_NEAR(threshold.grad().item<float>(), -0.63f, 1e-5f);
  EXPECT_NEAR(dst->loss().item<float>(), 5e-6f * std::exp(-0.1f), 1e-10f);
  expect_near(values(dst->hard_mask(w)), {1, 0, 1, 1}, 0);
  // A threshold above every weight would prune >= max_pruning_pct: it is reset to 0.
  {
    torch::NoGradGuard no_grad;
    threshold.fill_(5.0);
  }
  expect_near(values(dst->apply(w.detach())), {0.3f, -0.05f, 0.9f, -1.2f}, 0);
  EXPECT_EQ(threshold.item<float>(), 0.0f);
  auto weightwise = prune::make_method(spec("dst", {{"threshold_type", std::string("weightwise")}}), {3, 2, 2, 2},
                                       LayerKind::Conv);
  EXPECT_EQ(weightwise->named_parameters()["threshold"].sizes(), (std::vector<int64_t>{3, 8}));
}

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

namespace {
/// MDMM in the training stage, train mode: the penalty of one forward of `w`.
float mdmm_penalty(std::map<std::string, ParamValue> params, const torch::Tensor& w) {
  auto m = prune::make_method(spec("mdmm", std::move(params)), w.sizes().vec(), LayerKind::Linear);
  m->train();
  m->post_pretrain();
  m->apply(w);
  return m->loss().item<float>();
}
}  // namespace

TEST(MDMM, WorkedExampleEveryConstraintAndMetric) {
  auto w = torch::tensor({{0.5f, 0.0005f, -0.2f, 0.0f}});
  auto p = [](double h) { return static_cast<float>(10 * (h + h * h / 2)); };  // lambda 1, scale 10, damping 1
  const double g = (0.81 - 0.25) * 0.7005 / 4;  // 0.09807: coarse L0 0.5, L1 0.7005, mean
  const double g_smooth = 0.09727;
  using V = std::map<std::string, ParamValue>;
  EXPECT_NEAR(mdmm_penalty({}, w), 1.0288f, 1e-4f);
  EXPECT_NEAR(mdmm_penalty({{"constraint_type", std::string("LessThanOrEqual")}, {"target_value", 0.05}}, w),
              p(g - 0.05), 1e-5f);
  EXPECT_EQ(mdmm_penalty({{"constraint_type", std::string("GreaterThanOrEqual")}, {"target_value", 0.05}}, w), 0.0f);
  EXPECT_NEAR(mdmm_penalty({{"constraint_type", std::string("GreaterThanOrEqual")}, {"target_value", 0.2}}, w),
              p(0.2 - g), 1e-5f);
  EXPECT_NEAR(mdmm_penalty({{"l0_mode", std::string("smooth")}}, w), p(g_smooth), 1e-3f);
  EXPECT_NEAR(mdmm_penalty({{"scale_mode", std::string("sum")}}, w), p(g * 4), 1e-4f);
  // Structured (rf 2): rows padded to 4 give groups (0.5, 0.0005) (0, pad) | (0, 0) (0.3, pad): half are zero.
  auto ws = torch::tensor({{0.5f, 0.0005f, 0.0f}, {0.0f, 0.0f, 0.3f}});
  V structured = {{"metric_type", std::string("StructuredSparsity")}, {"rf", int64_t{2}}, {"target_value", 0.3}};
  EXPECT_NEAR(mdmm_penalty(structured, ws), p(0.2), 1e-5f);
  structured["constraint_type"] = std::string("LessThanOrEqual");
  EXPECT_NEAR(mdmm_penalty(structured, ws), p(0.2), 1e-5f);
  structured["constraint_type"] = std::string("GreaterThanOrEqual");
  EXPECT_EQ(mdmm_penalty(structured, ws), 0.0f);
  structured["target_value"] = 0.75;
  EXPECT_NEAR(mdmm_penalty(structured, ws), p(0.25), 1e-5f);
}

TEST(MDMM, MultiplierUpdateGradientsAndFineTuning) {
  auto w = torch::tensor({{0.5f, 0.0005f, -0.2f, 0.0f}}).requires_grad_();
  auto m = prune::make_method(spec("mdmm", {}), {1, 4}, LayerKind::Linear);
  m->train();
  m->post_pretrain();
  EXPECT_TRUE(m->apply(w).equal(w));  // no mask in training
  auto penalty = m->loss();
  EXPECT_EQ(buffer(*m, "lmbda").item<float>(), 1.0f);  // the update uses the previous call's h (0)
  // dP/dW = scale (lambda + damping h) (s*^2 - l0^2)/n sign(W)
  const double h = (0.81 - 0.25) * 0.7005 / 4;
  penalty.backward();
  float slope = static_cast<float>(10 * (1 + h) * (0.81 - 0.25) / 4);
  expect_near(values(w.grad()), {slope, slope, -slope, 0.0f}, 1e-5f);
  m->apply(w);
  EXPECT_NEAR(buffer(*m, "lmbda").item<float>(), 1.0f + 1e-3f * 10 * static_cast<float>(h), 1e-7f);
  m->eval();
  m->apply(w);  // eval-mode calls do not move lambda
  EXPECT_NEAR(buffer(*m, "lmbda").item<float>(), 1.0f + 1e-3f * 10 * static_cast<float>(h), 1e-7f);
  expect_near(values(m->hard_mask(w)), {1, 0, 1, 0}, 0);
  // Fine-tuning: constraint off, weights at |W| <= epsilon masked on every call.
  m->pre_finetune();
  EXPECT_FALSE(m->loss().defined());
  auto grown = torch::tensor({{0.5f, 0.0005f, -0.2f, 0.002f}});
  expect_near(values(m->apply(grown)), {0.5f, 0.0f, -0.2f, 0.002f}, 0);

  // use_grad: lambda is a parameter trained by gradient ascent (its gradient is -scale h).
  auto g = prune::make_method(spec("mdmm", {{"use_grad", true}}), {1, 4}, LayerKind::Linear);
  g->train();
  g->post_pretrain();
  g->apply(w.detach());
  g->loss().backward();
  auto lmbda = g->named_parameters()["lmbda"];
  EXPECT_NEAR(lmbda.grad().item<float>(), -10 * static_cast<float>(h), 1e-5f);
  EXPECT_EQ(lmbda.item<float>(), 1.0f);
}

TEST(PruningEndToEnd, PrunedWeightsStayZeroAndResumeKeepsMasks) {
  auto train = test::blobs(256, 1), eval = test::blobs(64, 2);
  for (const char* method : {"pdp", "wanda", "cs", "activation_pruning", "dst", "autosparse", "mdmm"}) {
    SCOPED_TRACE(method);
    Plan plan = test::pquant_plan("quantization_parameters: {}");
    auto spec = prune::default_spec(method);
    auto& p = spec.params;
    if (std::string(method) == "pdp") p["epsilon"] = 0.5, p["sparsity"] = 0.6;
    if (std::string(method) == "wanda") p["t_delta"] = int64_t{3}, p["t_start_collecting_batch"] = int64_t{1}, p["sparsity"] = 0.6;
    if (std::string(method) == "cs") p["final_temp"] = int64_t{50}, p["threshold_decay"] = 1e-2, p["threshold_init"] = 0.0;
    if (std::string(method) == "activation_pruning") p["t_delta"] = int64_t{4}, p["t_start_collecting_batch"] = int64_t{0};
    if (std::string(method) == "dst") p["alpha"] = 1e-2, p["threshold_init"] = 0.05;
    if (std::string(method) == "autosparse") p["threshold_init"] = -3.0;
    if (std::string(method) == "mdmm") p["epsilon"] = 0.05;
    Rule pruning;
    pruning.select.op_types = {"Linear"};
    pruning.targets["weight"].prune = PruneSetting{spec, true};
    pruning.module.pruning_first = true;
    plan.rules.push_back(pruning);
    Schedule schedule;
    schedule.pretraining_epochs = 1, schedule.epochs = 3, schedule.rounds = 1, schedule.fine_tuning_epochs = 2;
    std::vector<std::string> names;
    auto run = [&](const std::string& dir, std::vector<int64_t> stops) {
      std::vector<torch::Tensor> state;
      bool resume = false;
      stops.push_back(-1);
      models::Graph model{nullptr};
      for (int64_t stop : stops) {
        train::seed_everything(4);
        model = models::Graph(models::parse_model_yaml(R"(
input_shape: [8]
layers:
  - {name: fc1, op: Linear, out_features: 16}
  - {name: relu1, op: ReLU}
  - {name: fc2, op: Linear, out_features: 3}
)", "mlp.yaml"));
        compress(model, plan);
        train::TrainOptions o;
        o.lr = 0.01, o.batch_size = 32, o.seed = 4, o.progress = train::Progress::None;
        test::RunTrainer trainer(model, o, dir, schedule);
        trainer.fit(train, eval, resume, stop);
        resume = true;
      }
      for (const auto& b : model->named_buffers()) state.push_back(b.value().clone()), names.push_back(b.key());
      for (const auto& w : model->named_parameters()) state.push_back(w.value().detach().clone()), names.push_back(w.key());
      return std::make_pair(model, state);
    };
    test::TempDir full("prune_full"), split("prune_split");
    auto [model, straight] = run(full.path().string(), {});
    auto [resumed_model, resumed] = run(split.path().string(), {2, 4});  // stops in training and fine-tuning
    ASSERT_EQ(straight.size(), resumed.size());
    for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(straight[i].equal(resumed[i])) << names[i];
    // Pruned weights are exact zeros in the parameters (and so in checkpoint.pt) after fine-tuning.
    int64_t zeros = 0;
    for (const char* name : {"fc1", "fc2"}) {
      auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, name));
      auto mask = layer->pruning()->hard_mask(layer->weight);
      EXPECT_TRUE((layer->weight.masked_select(mask.expand_as(layer->weight) == 0) == 0).all().item<bool>());
      zeros += (mask.expand_as(layer->weight) == 0).sum().item<int64_t>();
    }
    EXPECT_GT(zeros, 0) << "nothing was pruned";
    torch::serialize::InputArchive root, weights;
    root.load_from(full.file("checkpoint.pt"));
    root.read("model", weights);
    torch::Tensor saved;
    weights.read("fc1.weight", saved);
    auto fc1 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc1"));
    EXPECT_TRUE(saved.equal(fc1->weight.detach()));
  }
}
