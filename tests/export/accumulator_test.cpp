// Accumulator widths (precision.json "accumulator"): the derived range and format against a brute
// force over every input a small layer can receive.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/compress/compress.h"
#include "sparq/export/precision.h"
#include "sparq/layers/pq_layers.h"
#include "test_util.h"

using namespace sparq;

namespace {

models::Graph quantized(const std::string& model_yaml, const std::string& quantization) {
  models::Graph g(models::parse_model_yaml(model_yaml, "m.yaml"));
  compress(g, test::pquant_plan("quantization_parameters: {" + quantization + "}"));
  g->eval();
  return g;
}

void set_parameters(models::Graph& g, const std::string& node, const torch::Tensor& w, const torch::Tensor& b) {
  torch::NoGradGuard no_grad;
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(g, node));
  layer->weight.copy_(w.view_as(layer->weight));
  layer->bias.copy_(b);
}

/// Every combination of `grid` values over `n` inputs, as rows.
torch::Tensor all_inputs(const std::vector<double>& grid, int64_t n) {
  int64_t count = 1;
  for (int64_t j = 0; j < n; ++j) count *= static_cast<int64_t>(grid.size());
  auto x = torch::empty({count, n}, torch::kFloat32);
  for (int64_t r = 0; r < count; ++r)
    for (int64_t j = 0, rest = r; j < n; ++j, rest /= static_cast<int64_t>(grid.size()))
      x[r][j] = grid[static_cast<size_t>(rest % static_cast<int64_t>(grid.size()))];
  return x;
}

std::vector<double> grid_of(int k, int i, int f) {
  std::vector<double> v;
  for (double x = k ? -std::ldexp(1.0, i) : 0.0; x <= std::ldexp(1.0, i) - std::ldexp(1.0, -f); x += std::ldexp(1.0, -f))
    v.push_back(x);
  return v;
}

}  // namespace

TEST(Accumulator, DenseRangeAndWidthEqualTheBruteForceWorstCase) {
  // Inputs ap_fixed<3,2> (-2 .. 1.5, step 0.5), weights ap_fixed<5,1> (step 1/16); one weight
  // pruned to 0, biases on the grid. Every 8^4 input vector through the layer's own arithmetic.
  auto g = quantized("input_shape: [4]\nlayers:\n  - {name: fc, op: Linear, out_features: 3}\n",
                     "default_weight_integer_bits: 0, default_weight_fractional_bits: 4, default_data_keep_negatives: 1, "
                     "default_data_integer_bits: 1, default_data_fractional_bits: 1");
  set_parameters(g, "fc", torch::tensor({0.9375f, -0.5f, 0.0f, 0.25f, -1.0f, 0.0625f, 0.75f, -0.875f, 0.125f, 0.125f, 0.5f, 0.3125f}),
                 torch::tensor({0.5f, -0.25f, 0.0625f}));
  auto acc = exporting::accumulator_of(g, "fc");
  ASSERT_TRUE(acc.has_value());
  torch::NoGradGuard no_grad;
  auto y = g->forward(all_inputs(grid_of(1, 1, 1), 4)).to(torch::kFloat64);
  EXPECT_EQ(acc->min, y.min().item<double>());
  EXPECT_EQ(acc->max, y.max().item<double>());
  // Fractional bits: weight f 4 + input f 1; integer bits: the fewest that hold [min, max].
  EXPECT_EQ(acc->fractional, 5);
  EXPECT_TRUE(acc->is_signed);
  auto holds = [&](int integer) {
    return acc->min >= -std::ldexp(1.0, integer - 1) && acc->max <= std::ldexp(1.0, integer - 1) - std::ldexp(1.0, -5);
  };
  EXPECT_TRUE(holds(acc->integer));
  EXPECT_FALSE(holds(acc->integer - 1));
  EXPECT_EQ(acc->type_name(), fmt::format("ap_fixed<{},{}>", acc->integer + 5, acc->integer));
  // Every sum is on the accumulator's grid.
  EXPECT_TRUE((y * 32).equal(torch::round(y * 32)));
  // precision.json carries it.
  auto json = exporting::precision_json(g);
  EXPECT_EQ(json["layers"][0]["accumulator"]["type"], acc->type_name());
}

TEST(Accumulator, ZeroWidthInputsAndPrunedWeightsDoNotCount) {
  // HGQ input widths per feature: feature 1 at zero width (always 0) and feature 0 finest; the
  // weight on feature 0 of every output pruned: f then comes from feature 2 only.
  auto g = quantized("input_shape: [3]\nlayers:\n  - {name: fc, op: Linear, out_features: 2}\n",
                     "use_hgq: true, granularity: per_weight, default_weight_integer_bits: 0, default_weight_fractional_bits: 3, "
                     "default_data_keep_negatives: 1, default_data_integer_bits: 1, default_data_fractional_bits: 2");
  {
    torch::NoGradGuard no_grad;
    for (const auto& [target, q] : pq_layer(g, "fc")->quantizers())
      if (target == "input") {
        auto fp = quant::as_fixed_point(q);
        fp->f.copy_(torch::tensor({6.0f, -1.0f, 2.0f}).view_as(fp->f));
        fp->i.copy_(torch::tensor({1.0f, -1.0f, 1.0f}).view_as(fp->i));
      }
  }
  set_parameters(g, "fc", torch::tensor({0.0f, 0.5f, 0.375f, 0.0f, -0.75f, 0.125f}), torch::tensor({0.0f, 0.0f}));
  auto acc = exporting::accumulator_of(g, "fc");
  ASSERT_TRUE(acc.has_value());
  EXPECT_EQ(acc->fractional, 3 + 2);  // not 3 + 6 (pruned) and nothing from the zero-width feature
  // Brute force over feature 2's grid (features 0 and 1 do not reach the sums).
  torch::NoGradGuard no_grad;
  auto grid = grid_of(1, 1, 2);
  auto x = torch::zeros({static_cast<int64_t>(grid.size()), 3});
  for (size_t r = 0; r < grid.size(); ++r) x[static_cast<int64_t>(r)][2] = grid[r];
  auto y = g->forward(x).to(torch::kFloat64);
  EXPECT_EQ(acc->min, y.min().item<double>());
  EXPECT_EQ(acc->max, y.max().item<double>());
}

TEST(Accumulator, PaddedConvolutionHoldsEveryOutputOfEveryInput) {
  // Conv1d over 4 positions with zero padding and two output channels, every one of the 4^4 inputs
  // of the ap_ufixed<2,1> lane: every output inside the derived range and on its grid.
  auto g = quantized(
      "input_shape: [1, 4]\nlayers:\n  - {name: conv, op: Conv1d, out_channels: 2, kernel_size: 3, padding: 1}\n",
      "default_weight_integer_bits: 0, default_weight_fractional_bits: 3, default_data_keep_negatives: 0, "
      "default_data_integer_bits: 1, default_data_fractional_bits: 1");
  set_parameters(g, "conv", torch::tensor({0.5f, 0.75f, 0.25f, -0.5f, 0.875f, -0.125f}), torch::tensor({-1.0f, 0.5f}));
  auto acc = exporting::accumulator_of(g, "conv");
  ASSERT_TRUE(acc.has_value());
  torch::NoGradGuard no_grad;
  auto x = all_inputs(grid_of(0, 1, 1), 4).view({-1, 1, 4});
  auto y = g->forward(x).to(torch::kFloat64);
  EXPECT_GE(y.min().item<double>(), acc->min);
  EXPECT_LE(y.max().item<double>(), acc->max);
  const double scale = std::ldexp(1.0, acc->fractional);
  EXPECT_TRUE((y * scale).equal(torch::round(y * scale)));
  EXPECT_GE(y.min().item<double>(), acc->is_signed ? -std::ldexp(1.0, acc->integer - 1) : 0.0);
  EXPECT_LE(y.max().item<double>(), std::ldexp(1.0, acc->integer - (acc->is_signed ? 1 : 0)) - 1 / scale);
}
