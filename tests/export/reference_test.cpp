// The integer reference (export/reference.cpp) against sparq's float evaluation: equal bit for bit
// on a small conv net in every rounding and overflow mode and with HGQ per-element widths; different
// (and the node named) where float32 sums cannot be exact; errors for what it cannot evaluate.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/export/reference.h"
#include "test_util.h"

using namespace sparq;

namespace {

/// conv -> batch norm -> relu -> avg pool -> conv (groups 2) -> max pool -> flatten -> dense ->
/// relu -> dense, with a residual add: every op the reference evaluates.
models::GraphSpec small_net() {
  return models::parse_model_yaml(R"(
input_shape: [1, 8, 8]
layers:
  - {name: conv1, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: bn1, op: BatchNorm2d}
  - {name: relu1, op: ReLU}
  - {name: pool1, op: AvgPool2d, kernel_size: 2}
  - {name: conv2, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1, groups: 2}
  - {name: res, op: add, inputs: [conv2, pool1]}
  - {name: pool2, op: MaxPool2d, kernel_size: 2}
  - {name: flatten, op: flatten}
  - {name: fc1, op: Linear, out_features: 12}
  - {name: relu2, op: ReLU}
  - {name: fc2, op: Linear, out_features: 3}
)", "small.yaml");
}

models::Graph trained_like(const std::string& quantization) {
  torch::manual_seed(1);
  models::Graph g(small_net());
  compress(g, test::pquant_plan("quantization_parameters: {" + quantization + "}"));
  {  // running statistics away from (0, 1), as after training
    torch::NoGradGuard no_grad;
    auto bn = std::dynamic_pointer_cast<layers::PQBatchNormImpl>(pq_layer(g, "bn1"));
    bn->running_mean.uniform_(-0.3, 0.3);
    bn->running_var.uniform_(0.5, 2.0);
  }
  g->eval();
  return g;
}

int64_t mismatches(models::Graph& g, const torch::Tensor& x) {
  auto ref = exporting::integer_reference(g, x, 64);
  torch::NoGradGuard no_grad;
  auto ours = g->forward(x).to(torch::kFloat64);
  EXPECT_EQ(ref.output.sizes(), ours.sizes());
  return (ours != ref.output).sum().item<int64_t>();
}

}  // namespace

TEST(IntegerReference, EqualsSparqInEveryRoundingAndOverflowMode) {
  auto x = torch::rand({200, 1, 8, 8}) * 1.5 - 0.25;
  for (const char* round : {"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"})
    for (const char* overflow : {"SAT", "SAT_SYM", "WRAP"}) {
      auto g = trained_like(fmt::format(
          "default_weight_integer_bits: 0, default_weight_fractional_bits: 5, default_data_keep_negatives: 1, "
          "default_data_integer_bits: 1, default_data_fractional_bits: 4, round_mode: {}, overflow_mode_data: {}",
          round, overflow));
      auto ref = exporting::integer_reference(g, x, 64);
      EXPECT_EQ(ref.float_nodes, (std::vector<std::string>{"bn1"}));
      EXPECT_EQ(mismatches(g, x), 0) << round << " " << overflow;
      EXPECT_TRUE(exporting::compare_nodes(g, x.slice(0, 0, 8)).empty()) << round << " " << overflow;
      // The logits are exact codes on the output grid: code / den.
      EXPECT_TRUE((ref.output_code.to(torch::kFloat64) / static_cast<double>(ref.output_den)).equal(ref.output));
    }
}

TEST(IntegerReference, EqualsSparqWithHgqWidthsPerElement) {
  auto g = trained_like("use_hgq: true, granularity: per_weight, default_data_keep_negatives: 1");
  {  // widths spread over elements, some of zero width, as HGQ leaves them
    torch::NoGradGuard no_grad;
    for (const char* name : {"conv1", "conv2", "fc1", "fc2"})
      for (const auto& [target, q] : pq_layer(g, name)->quantizers()) {
        auto fp = quant::as_fixed_point(q);
        fp->f.copy_(torch::randint(-1, 7, fp->f.sizes()).to(fp->f.scalar_type()));
        fp->i.copy_(torch::randint(-1, 3, fp->i.sizes()).to(fp->i.scalar_type()));
      }
  }
  EXPECT_EQ(mismatches(g, torch::rand({300, 1, 8, 8}) * 2 - 0.5), 0);
}

TEST(IntegerReference, FindsFloat32SumsThatRoundAndNamesTheNode) {
  // 20-bit weights times 16-bit inputs over 512 terms need ~45 bits: float32 sums round.
  auto spec = models::parse_model_yaml("input_shape: [512]\nlayers:\n  - {name: fc, op: Linear, out_features: 4}\n", "w.yaml");
  torch::manual_seed(2);
  models::Graph g(spec);
  compress(g, test::pquant_plan("quantization_parameters: {default_weight_integer_bits: 0, default_weight_fractional_bits: 19, "
                                "default_data_keep_negatives: 1, default_data_integer_bits: 3, default_data_fractional_bits: 12}"));
  auto x = torch::randn({64, 512}) * 2;
  EXPECT_GT(mismatches(g, x), 0);
  auto nodes = exporting::compare_nodes(g, x);
  ASSERT_FALSE(nodes.empty());
  EXPECT_EQ(nodes[0].node, "fc");
  EXPECT_NE(nodes[0].sparq_value, nodes[0].reference_value);
}

TEST(IntegerReference, RefusesWhatHasNoIntegerForm) {
  models::Graph plain(small_net());
  EXPECT_NE(test::error_of<Error>([&] { exporting::integer_reference(plain, torch::rand({2, 1, 8, 8})); })
                .find("node 'conv1' (Conv2d): this op is not quantized"),
            std::string::npos);
  auto g = trained_like("default_data_keep_negatives: 1");
  for (auto [target, q] : pq_layer(g, "fc2")->quantizers())
    if (target == "weight") q->enabled = false;  // float weights: nothing integer to multiply
  EXPECT_NE(test::error_of<Error>([&] { exporting::integer_reference(g, torch::rand({2, 1, 8, 8})); })
                .find("node 'fc2' (PQDense): its weight is not fixed-point quantized"),
            std::string::npos);
}
