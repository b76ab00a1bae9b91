// Wanda (spec §2.4): worked examples, N:M patterns and the collection window.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

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
