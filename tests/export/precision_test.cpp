// precision.json reads every quantizer's describe(): formats per element, types and zero widths.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/export/precision.h"
#include "test_util.h"

using namespace sparq;

TEST(Precision, EveryTargetFromTheQuantizersDescription) {
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec("jet_tagger", {16}, 5));
  compress(g, test::pquant_plan("quantization_parameters: {use_hgq: true, granularity: per_weight}"));
  {
    torch::NoGradGuard no_grad;  // fc1's weights learned zero width: 1 + (-4) + 3 = 0 bits
    auto w = quant::as_fixed_point(pq_layer(g, "fc1")->quantizers()[1].second);
    w->i.fill_(-4), w->f.fill_(3);
  }
  auto json = exporting::precision_json(g);
  ASSERT_FALSE(json["layers"].empty());
  const auto& fc1 = json["layers"][0];
  EXPECT_EQ(fc1["name"], "fc1");
  EXPECT_EQ(fc1["op"], "PQDense");  // the class name
  const auto& w = fc1["targets"]["weight"];
  EXPECT_EQ(w["kind"], "hgq");
  EXPECT_EQ(w["shape"], (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(w["k"].size(), 64u * 16u);
  EXPECT_EQ(w["zero_width"], 64 * 16);
  EXPECT_TRUE(w["types"].empty());
  const auto& bias = fc1["targets"]["bias"];
  EXPECT_EQ(bias["types"]["ap_fixed<8,1,AP_RND,AP_SAT>"], 64);
  EXPECT_DOUBLE_EQ(bias["mean_bits"].get<double>(), 8.0);
  // The describe() record itself.
  auto fc2 = pq_layer(g, "fc2");
  auto d = fc2->quantizers()[1].second->describe();
  EXPECT_EQ(d.kind, "hgq");
  EXPECT_EQ(d.max_bits(), 8);
  EXPECT_TRUE(d.is_signed());
  EXPECT_EQ(d.element(5).type_name(), "ap_fixed<8,1,AP_RND,AP_SAT>");
}
