// Adding an op is one file: this test registers "Square", a built-in tensor op, and a model YAML
// file then uses it like any other op (its node computes in float and is reported as such).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/models/graph.h"
#include "test_util.h"

using namespace sparq;

namespace {
const bool registered = [] {
  models::OpInfo info;
  info.name = "Square";
  info.aliases = {"square"};
  info.apply = [](const models::Node&, const std::vector<torch::Tensor>& in) { return in[0] * in[0]; };
  return models::register_op(info);
}();
}  // namespace

TEST(OpRegistry, AnOpRegisteredInItsOwnFileBuildsAndRuns) {
  ASSERT_TRUE(registered);
  auto spec = models::parse_model_yaml(R"(
input_shape: [4]
layers:
  - {name: fc, op: Linear, out_features: 3}
  - {name: sq, op: square}
)", "m.yaml");
  torch::manual_seed(0);
  models::Graph g(spec);
  EXPECT_EQ(g->node("sq").op, "Square");
  auto x = torch::randn({2, 4});
  auto fc = g->node("fc").module.get<torch::nn::Linear>();
  EXPECT_TRUE(torch::allclose(g->forward(x), fc->forward(x).pow(2)));
  auto report = compress(g, test::pquant_plan("quantization_parameters: {}"));
  EXPECT_EQ(report.replaced, std::vector<std::string>{"fc"});
  ASSERT_EQ(report.left_float.size(), 1u);
  EXPECT_EQ(report.left_float[0], "sq (Square): built-in op, computes in float");
}
