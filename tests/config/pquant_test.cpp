// The PQuantML dialect's quantization_parameters, as seeds 000 and 001 spell them.
#include <gtest/gtest.h>

#include "sparq/config/pquant.h"
#include "sparq/config/yaml.h"
#include "sparq/error.h"
#include "test_util.h"

using namespace sparq;

namespace {
Plan parse(const std::string& text) {
  auto doc = config::YamlDoc::load_string(text, "c.yaml");
  return config::parse_pquant(doc.file, doc.root);
}
std::string error_of(const std::string& text) {
  return test::error_of<ConfigError>([&] { parse(text); });
}
}  // namespace

TEST(PQuantConfig, Seed001QuantizationParameters) {
  auto plan = parse(R"(
quantization_parameters:
  default_data_keep_negatives: 1
  default_data_integer_bits: 3
  default_data_fractional_bits: 4.0
  default_weight_keep_negatives: 1.0
  default_weight_integer_bits: 0
  default_weight_fractional_bits: 7
  quantize_input: true
  quantize_output: true
  enable_quantization: true
  hgq_gamma: 0.0
  hgq_beta: 1e-5
  layer_specific:
    fc1:
      input: {quantize: false}
      weight: {integer_bits: 1, fractional_bits: 5}
  use_hgq: false
  use_real_tanh: true
  overflow_mode_data: WRAP
  overflow_mode_parameters: SAT_SYM
  round_mode: RND_CONV
  use_relu_multiplier: false
  granularity: per_channel
)");
  ASSERT_TRUE(plan.quantization);
  const auto& q = *plan.quantization;
  EXPECT_EQ(q.data.k, 1);
  EXPECT_EQ(q.data.i, 3);
  EXPECT_EQ(q.data.f, 4);
  EXPECT_EQ(q.data.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.weight.overflow, quant::OverflowMode::SAT_SYM);
  EXPECT_EQ(q.weight.round, quant::RoundMode::RND_CONV);
  EXPECT_EQ(q.weight.granularity, quant::Granularity::PerChannel);
  EXPECT_TRUE(q.quantize_output);
  EXPECT_TRUE(q.use_real_tanh);
  auto t = q.targets("fc1", "Linear");
  EXPECT_FALSE(t.input);            // quantize: false
  ASSERT_TRUE(t.weight);
  EXPECT_EQ(t.weight->i, 1);
  EXPECT_EQ(t.weight->f, 5);
  EXPECT_TRUE(t.output);
  auto relu = q.targets("relu1", "ReLU");
  EXPECT_EQ(relu.input->k, 0);      // unsigned, one more fractional bit
  EXPECT_EQ(relu.input->f, 5);
}

TEST(PQuantConfig, DefaultsAndSeed000Overflow) {
  auto plan = parse("quantization_parameters:\n  overflow: WRAP\n");
  const auto& q = *plan.quantization;
  EXPECT_EQ(q.weight.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.data.overflow, quant::OverflowMode::WRAP);
  EXPECT_EQ(q.weight.k, 1);
  EXPECT_EQ(q.weight.f, 7);
  EXPECT_EQ(q.data.k, 0);
  EXPECT_TRUE(q.quantize_input);
  EXPECT_FALSE(q.quantize_output);
  EXPECT_TRUE(parse("{}").quantization);  // a missing section is built from defaults
}

TEST(PQuantConfig, ErrorsSayWhereAndWhat) {
  EXPECT_EQ(error_of("quantization_parameters:\n  round_mod: RND\n"),
            "c.yaml:2:3: quantization_parameters: unknown key 'round_mod', did you mean 'round_mode'? (valid keys: "
            "default_weight_keep_negatives, default_weight_integer_bits, default_weight_fractional_bits, "
            "default_data_keep_negatives, default_data_integer_bits, default_data_fractional_bits, quantize_input, "
            "quantize_output, granularity, dynamic_data_quantization, enable_quantization, hgq_gamma, hgq_beta, "
            "hgq_heterogeneous, layer_specific, use_high_granularity_quantization, use_hgq, use_real_tanh, "
            "overflow_mode_parameters, overflow_mode_data, overflow, round_mode, use_relu_multiplier, "
            "use_symmetric_quantization)");
  EXPECT_EQ(error_of("quantization_parameters:\n  round_mode: ROUND\n"),
            "c.yaml:2:15: quantization_parameters.round_mode: 'ROUND' is not one of TRN, TRN_ZERO, RND, RND_ZERO, "
            "RND_INF, RND_MIN_INF, RND_CONV");
  EXPECT_EQ(error_of("quantization_parameters:\n  default_weight_keep_negatives: 2\n"),
            "c.yaml:2:34: quantization_parameters.default_weight_keep_negatives: 2 is out of range, expected 0..1");
  EXPECT_EQ(error_of("quantization_parameters:\n  default_weight_fractional_bits: 6.5\n"),
            "c.yaml:2:35: quantization_parameters.default_weight_fractional_bits: expected an integer, got '6.5'");
  EXPECT_NE(error_of("quantization_parameters:\n  use_hgq: true\n").find("HGQ (trainable bit widths) is not available yet"),
            std::string::npos);
  EXPECT_NE(error_of("pruning_parameters: {pruning_method: pdp}\n").find("c.yaml:1:21: PQuantML config.pruning_parameters: this section is not supported yet"),
            std::string::npos);
  EXPECT_EQ(error_of("quantization_parameters:\n  layer_specific:\n    fc1:\n      wieght: {integer_bits: 1}\n"),
            "c.yaml:4:7: layer_specific.fc1: unknown key 'wieght', did you mean 'weight'? (valid keys: input, weight, "
            "bias, output)");
  EXPECT_EQ(error_of("quantization_parameters:\n  default_data_keep_negatives: 0\n  default_data_integer_bits: 0\n"
                     "  default_data_fractional_bits: 0\n"),
            "c.yaml:2:3: quantization_parameters.default_data_*: fixed-point format (k=0, i=0, f=0): width k+i+f = 0 "
            "must be at least 1");
  // Accepted but without effect in PQuantML either: a warning, no error.
  EXPECT_TRUE(parse("quantization_parameters:\n  use_symmetric_quantization: false\n").quantization);
}
