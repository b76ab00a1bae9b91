// DST (spec §2.2): surrogate gradient and loss.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

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
