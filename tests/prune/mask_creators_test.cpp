// SparseML's mask creators on the spec's reference cases (sparseml §4.2 D) and the counting rules
// of its test suite (§4.1: exact zeros, grouped masks constant per group, global targets).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/prune/mask_creators.h"

namespace sparq::prune {
namespace {

std::vector<float> flat(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat32).contiguous().reshape({-1});
  return {c.data_ptr<float>(), c.data_ptr<float>() + c.numel()};
}

MaskType kind(MaskType::Kind k) {
  MaskType t;
  t.kind = k;
  return t;
}

TEST(MaskCreators, UnstructuredExactCounts) {  // D1-D3
  auto w = torch::tensor({{0.1f, -0.5f, 0.3f, 0.0f}, {0.7f, -0.2f, 0.05f, 0.4f}}).abs();
  EXPECT_EQ(flat(exact_mask(w, 0.5)), (std::vector<float>{0, 1, 1, 0, 1, 0, 0, 1}));
  EXPECT_EQ(flat(exact_mask(w, 0.3)), (std::vector<float>{1, 1, 1, 0, 1, 1, 0, 1}));  // round(2.4) = 2
  EXPECT_EQ(flat(exact_mask(w, 0.0)), std::vector<float>(8, 1));
  EXPECT_EQ(flat(exact_mask(w, 1.0)), std::vector<float>(8, 0));
  auto ties = torch::tensor({0.5f, 1.f, 1.f, 1.f, 2.f, 3.f});
  EXPECT_EQ(flat(exact_mask(ties, 0.5)), (std::vector<float>{0, 1, 0, 0, 1, 1}));
  EXPECT_EQ((1 - exact_mask(torch::rand({5}), 0.5)).sum().item<float>(), 2);  // round(2.5) = 2
  auto zeros = torch::zeros({10});
  EXPECT_EQ((1 - exact_mask(zeros, 0.3)).sum().item<float>(), 3);  // ties at the minimum: exactly 3
  for (double s : {0.0, 0.4, 0.6, 0.9, 0.99, 1.0})
    for (auto shape : {std::vector<int64_t>{64, 64}, std::vector<int64_t>{64, 64, 3, 3}, std::vector<int64_t>{64, 513},
                       std::vector<int64_t>{63, 513, 3, 3}}) {
      auto t = torch::randn(shape).abs();
      double zeros_expected = std::nearbyint(s * static_cast<double>(t.numel()));
      EXPECT_EQ((1 - exact_mask(t, s)).sum().item<double>(), zeros_expected) << s;
    }
}

TEST(MaskCreators, GlobalFourBlockNmAndFilter) {  // D4-D7
  auto a = torch::tensor({0.1f, 0.2f, 0.3f, 0.4f}), b = torch::tensor({0.05f, 0.5f, 0.6f, 0.7f});
  auto g = global_masks({a, b}, 0.5, MaskType{});
  EXPECT_EQ(flat(g[0]), (std::vector<float>{0, 0, 0, 1}));
  EXPECT_EQ(flat(g[1]), (std::vector<float>{0, 1, 1, 1}));

  MaskType block4;
  block4.kind = MaskType::Kind::Block, block4.a = 1, block4.b = 4, block4.four_block = true;
  auto w = torch::tensor({{1.f, 1.f, 1.f, 1.f, .1f, .1f, .1f, .1f}, {.5f, .5f, .5f, .5f, 2.f, 2.f, 2.f, 2.f}});
  EXPECT_EQ(flat(sparsity_mask(w, 0.5, block4)), (std::vector<float>{1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1}));
  MaskType b14;
  b14.kind = MaskType::Kind::Block, b14.a = 1, b14.b = 4;
  EXPECT_TRUE(sparsity_mask(w, 0.5, block4).equal(sparsity_mask(w, 0.5, b14)));  // four-block = [1, 4]
  auto w6 = torch::tensor({{1.f, 1.f, 1.f, 1.f, 3.f, 0.f}, {1.f, 1.f, 1.f, 1.f, 0.f, 0.f}});
  auto scores = group_scores(w6, block4);  // the partial block's score is the mean of its 2 members
  EXPECT_FLOAT_EQ(scores[0][1].item<float>(), 1.5f);
  EXPECT_FLOAT_EQ(scores[1][1].item<float>(), 0.f);
  auto conv = torch::randn({8, 12, 3, 3}).abs();
  auto m = sparsity_mask(conv, 0.5, block4);
  EXPECT_EQ(m.sizes(), conv.sizes());
  EXPECT_TRUE(m.view({8, 3, 4, 3, 3}).amax(2).equal(m.view({8, 3, 4, 3, 3}).amin(2)));  // constant per block
  MaskType rows;  // [4, 1]: 4 output rows of one input column
  rows.kind = MaskType::Kind::Block, rows.a = 4, rows.b = 1;
  auto mr = sparsity_mask(torch::randn({8, 6}).abs(), 0.5, rows).view({2, 4, 6});
  EXPECT_TRUE(mr.amax(1).equal(mr.amin(1)));
  EXPECT_THROW(sparsity_mask(torch::rand({6, 6}), 0.5, [] { MaskType t; t.kind = MaskType::Kind::Block, t.a = 4, t.b = 1; return t; }()), Error);

  MaskType nm;
  nm.kind = MaskType::Kind::NM, nm.n = 2, nm.m = 4;
  EXPECT_EQ(flat(sparsity_mask(torch::tensor({{0.1f, -0.9f, 0.3f, 0.2f}}), 0.5, nm)), (std::vector<float>{0, 1, 1, 0}));
  EXPECT_THROW(sparsity_mask(torch::tensor({{0.1f, -0.9f, 0.3f, 0.2f}}), 0.3, nm), Error);
  EXPECT_THROW(sparsity_mask(torch::tensor({0.1f, -0.9f, 0.3f, 0.2f}), 0.5, nm), Error);
  auto c4 = sparsity_mask(torch::randn({4, 8, 3, 3}), 0.5, nm);  // groups along input channels
  EXPECT_TRUE(c4.permute({0, 2, 3, 1}).reshape({-1, 4}).sum(1).eq(2).all().item<bool>());

  auto filt = torch::tensor({{1.f, 0.f, 0.f}, {5.f, 0.f, 0.f}, {2.f, 0.f, 0.f}, {4.f, 0.f, 0.f}});
  auto mf = sparsity_mask(filt, 0.5, kind(MaskType::Kind::Filter));
  EXPECT_EQ(flat(mf), (std::vector<float>{0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1}));
  auto mc = sparsity_mask(torch::randn({6, 10}).abs(), 0.3, kind(MaskType::Kind::Channel));
  EXPECT_EQ((mc.sum(0) == 0).sum().item<int64_t>(), 3);  // whole columns
  auto shared = shared_masks({torch::randn({6, 4}), torch::randn({6, 9})}, 0.5, kind(MaskType::Kind::Filter));
  EXPECT_TRUE(shared[0].select(1, 0).equal(shared[1].select(1, 0)));  // the same rows
}

TEST(MaskCreators, InterpolationTables) {  // §2.9
  EXPECT_DOUBLE_EQ(interpolate_sparsity(0.5, 0, 1, 0, 5, "linear"), 2.5);
  EXPECT_DOUBLE_EQ(interpolate_sparsity(0.5, 0, 1, 0, 5, "cubic"), 4.375);
  EXPECT_NEAR(interpolate_sparsity(0.5, 0, 1, 0, 5, "inverse_cubic"), 1.031, 1e-3);
  std::vector<double> cubic = {0.05, 0.25325, 0.416, 0.54275, 0.638, 0.70625, 0.752, 0.77975, 0.794, 0.79925, 0.8};
  std::vector<double> inv = {0.05, 0.075883, 0.103762, 0.134072, 0.167426, 0.204725, 0.247395, 0.297925, 0.361397,
                             0.451881, 0.8};
  for (int e = 0; e <= 10; ++e) {
    EXPECT_NEAR(interpolate_sparsity(e, 0, 10, 0.05, 0.8, "linear"), 0.05 + 0.075 * e, 1e-12);
    EXPECT_NEAR(interpolate_sparsity(e, 0, 10, 0.05, 0.8, "cubic"), cubic[e], 1e-9);
    EXPECT_NEAR(interpolate_sparsity(e, 0, 10, 0.05, 0.8, "inverse_cubic"), inv[e], 1e-6);
  }
  EXPECT_DOUBLE_EQ(interpolate_sparsity(1e300, 0, 10, 0.05, 0.8, "inverse_cubic"), 0.8);  // clamped (SparseML: init)
}

}  // namespace
}  // namespace sparq::prune
