// Normalisation, seeded split and seeded shuffled batches.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "sparq/data/dataset.h"
#include "sparq/error.h"
#include "test_util.h"

using namespace sparq::data;

namespace {
Dataset ramp(int64_t n) {
  auto x = torch::arange(n * 2, torch::kFloat32).reshape({n, 2});
  return make_dataset(x, torch::arange(n) % 3, Task::Classification, 0, "ramp");
}
}  // namespace

TEST(Shuffle, IsASeededPermutationThatChangesPerEpoch) {
  auto a = shuffled_indices(1000, 7, 0);
  EXPECT_TRUE(a.equal(shuffled_indices(1000, 7, 0)));
  EXPECT_FALSE(a.equal(shuffled_indices(1000, 7, 1)));
  EXPECT_FALSE(a.equal(shuffled_indices(1000, 8, 0)));
  EXPECT_TRUE(std::get<0>(a.sort()).equal(torch::arange(1000)));
}

TEST(Split, SeededDisjointAndComplete) {
  auto ds = ramp(100);
  auto [train, val] = split(ds, 0.2, 3);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(val.size(), 20);
  std::set<float> seen;
  for (auto* part : {&train, &val})
    for (int64_t i = 0; i < part->size(); ++i) seen.insert(part->x[i][0].item<float>());
  EXPECT_EQ(seen.size(), 100u);
  auto [train2, val2] = split(ds, 0.2, 3);
  EXPECT_TRUE(val.x.equal(val2.x));
  EXPECT_FALSE(val.x.equal(split(ds, 0.2, 4).second.x));
  EXPECT_EQ(split(ds, 0.0, 3).second.size(), 0);
}

TEST(Batches, CoverEverySampleOncePerEpoch) {
  auto ds = ramp(10);
  Batches batches(ds, 4, true, 1, 0);
  ASSERT_EQ(batches.count(), 3);
  EXPECT_EQ(batches.get(2).first.size(0), 2);  // the last batch is partial
  std::vector<float> firsts;
  for (int64_t b = 0; b < 3; ++b) {
    auto [x, y] = batches.get(b);
    for (int64_t i = 0; i < x.size(0); ++i) {
      firsts.push_back(x[i][0].item<float>());
      EXPECT_EQ(y[i].item<int64_t>(), static_cast<int64_t>(x[i][0].item<float>() / 2) % 3);  // rows stay paired
    }
  }
  std::sort(firsts.begin(), firsts.end());
  for (int i = 0; i < 10; ++i) EXPECT_EQ(firsts[i], 2.f * i);
  Batches in_order(ds, 4, false);
  EXPECT_TRUE(in_order.get(1).first.equal(ds.x.slice(0, 4, 8)));
}

TEST(Normalizer, StatisticsComeFromTheTrainingSplit) {
  auto train = ramp(50), other = ramp(50);
  auto std_norm = Normalizer::fit(train, Normalization::Standardize);
  std_norm.apply(train);
  EXPECT_NEAR(train.x.mean(0).abs().max().item<float>(), 0.f, 1e-5);
  EXPECT_NEAR(train.x.std(0, false).sub(1).abs().max().item<float>(), 0.f, 1e-5);
  auto mm = Normalizer::fit(other, Normalization::MinMax);
  mm.apply(other);
  EXPECT_FLOAT_EQ(other.x.min().item<float>(), 0.f);
  EXPECT_FLOAT_EQ(other.x.max().item<float>(), 1.f);
  auto bytes = make_dataset(torch::full({2, 3}, 255.f), torch::tensor({0, 1}), Task::Classification, 0, "b");
  Normalizer::fit(bytes, Normalization::Unit).apply(bytes);
  EXPECT_FLOAT_EQ(bytes.x.max().item<float>(), 1.f);
}

TEST(LoadData, RandomDataIsSeeded) {
  DataConfig c;
  c.dataset = "random";
  c.random_shape = {16};
  c.random_samples = 64;
  c.num_classes = 5;
  c.seed = 11;
  auto a = load_data(c), b = load_data(c);
  EXPECT_TRUE(a.train.x.equal(b.train.x));
  EXPECT_EQ(a.train.x.sizes().vec(), (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(a.test.size(), 16);
  EXPECT_LT(a.train.y.max().item<int64_t>(), 5);
}

TEST(LoadData, NpzKeysAndLimits) {
  DataConfig c;
  c.train = SourceFiles{"npz", sparq::test::fixture("xy.npz"), "", "", "", ""};
  c.train_limit = 3;
  auto s = load_data(c);
  EXPECT_EQ(s.train.size(), 3);
  c.y_key = "labels";
  try {
    load_data(c);
    FAIL() << "missing key accepted";
  } catch (const sparq::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("xy.npz: no array 'labels' (arrays: x, y)"), std::string::npos);
  }
}
