// MDMM (spec §2.7): every constraint and metric, the multiplier update, fine-tuning.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

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
