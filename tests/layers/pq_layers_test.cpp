// PQ layers against hand-computed small cases, and compress() on zoo graphs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/config/pquant.h"
#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/yaml/reader.h"

using namespace sparq;
using namespace sparq::layers;
using quant::FixedSpec;

namespace {
FixedSpec spec(int k, int i, int f) { return FixedSpec{k, i, f}; }
Plan pquant(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "c.yaml");
  return config::parse_pquant(doc.file, doc.root);
}
std::string type_of(const quant::Quantizer& q) { return quant::as_fixed_point(q)->format().type_name(); }
}  // namespace

TEST(PQDense, ForwardByHand) {
  // Input (k=0,i=1,f=2): 0.3 -> 0.25, 1.1 -> 1.0; weights (k=1,i=0,f=3): 0.3 -> 0.25, -0.7 -> -0.75,
  // 0.55 -> 0.5, 0.05 -> 0; bias (1,0,3): 0.1 -> 0.125. Output unquantized.
  QuantTargets t;
  t.input = spec(0, 1, 2), t.weight = spec(1, 0, 3), t.bias = spec(1, 0, 3);
  PQDense dense(2, 2, true, t);
  torch::NoGradGuard no_grad;
  dense->weight.copy_(torch::tensor({{0.3f, -0.7f}, {0.55f, 0.05f}}));
  dense->bias.copy_(torch::tensor({0.1f, 0.1f}));
  dense->eval();
  auto y = dense->forward(torch::tensor({{0.3f, 1.1f}}));
  // row 0: 0.25*0.25 + 1.0*-0.75 + 0.125 = -0.5625; row 1: 0.25*0.5 + 0 + 0.125 = 0.25
  EXPECT_TRUE(y.equal(torch::tensor({{-0.5625f, 0.25f}}))) << y;
  auto c = dense->cost();
  EXPECT_EQ(c.weights, 4);
  EXPECT_EQ(c.nonzero, 3);        // 0.05 quantizes to 0
  EXPECT_EQ(c.weight_bits, 12.0);  // 3 weights x 4 bits
  // EBOPs: B_in (3 bits) x sum of live weight bits (12) + mean(B_b) (4) x out_features (2) = 44
  EXPECT_EQ(c.ebops, 44.0);
}

TEST(PQConv, ForwardByHandAndEbops) {
  QuantTargets t;
  t.input = spec(1, 2, 1), t.weight = spec(1, 1, 2);  // bias left float
  PQConv conv(PQConvOptions(1, 1, 1, {2}).bias(false).targets(t));
  EXPECT_EQ(conv->options().stride(), std::vector<int64_t>{1});  // what an exporter reads
  torch::NoGradGuard no_grad;
  conv->weight.copy_(torch::tensor({{{0.6f, -1.3f}}}));  // -> 0.5, -1.25
  conv->eval();
  auto y = conv->forward(torch::tensor({{{1.2f, 0.7f, -2.0f}}}));  // input -> 1.0, 0.5, -2.0
  // out[0] = 1.0*0.5 + 0.5*-1.25 = -0.125; out[1] = 0.5*0.5 + -2.0*-1.25 = 2.75
  EXPECT_TRUE(y.equal(torch::tensor({{{-0.125f, 2.75f}}}))) << y;
  EXPECT_EQ(conv->cost().ebops, 4.0 * 8.0);  // B_in 4 bits x (4 + 4) weight bits
}

TEST(PQAvgPool, ForwardByHandAndEbops) {
  QuantTargets t;
  t.input = spec(1, 1, 1), t.output = spec(1, 1, 2);
  PQAvgPool pool(PQAvgPoolOptions(1, {2}).targets(t));
  EXPECT_EQ(pool->options().stride(), std::vector<int64_t>{2});  // the kernel by default
  // input (1,1,1): 0.3 -> 0.5, 0.9 -> 1.0, -0.6 -> -0.5, 1.7 -> 1.5; means 0.75, 0.5 (on the f=2 grid)
  auto y = pool->forward(torch::tensor({{{0.3f, 0.9f, -0.6f, 1.7f}}}));
  EXPECT_TRUE(y.equal(torch::tensor({{{0.75f, 0.5f}}}))) << y;
  EXPECT_EQ(pool->cost().ebops, 3.0 * 4);  // B_in x input elements
}

TEST(PQBatchNorm, QuantizedScaleShiftAndFloatStatistics) {
  QuantTargets t;
  t.weight = spec(1, 1, 2), t.bias = spec(1, 1, 2);
  PQBatchNorm bn(PQBatchNormOptions(2).eps(0.0).targets(t));
  torch::NoGradGuard no_grad;
  bn->weight.copy_(torch::tensor({1.3f, 0.6f}));  // -> 1.25, 0.5
  bn->bias.copy_(torch::tensor({0.1f, -0.2f}));   // -> 0.0, -0.25
  bn->running_mean.copy_(torch::tensor({1.f, 2.f}));
  bn->running_var.copy_(torch::tensor({4.f, 1.f}));
  bn->eval();
  auto y = bn->forward(torch::tensor({{3.f, 2.f}}));
  // (3-1)/2*1.25 + 0 = 1.25; (2-2)/1*0.5 - 0.25 = -0.25
  EXPECT_TRUE(y.equal(torch::tensor({{1.25f, -0.25f}}))) << y;
}

TEST(PQActivation, FunctionsAndMultiplier) {
  QuantTargets t;
  t.input = spec(1, 1, 2), t.output = spec(1, 0, 2);
  PQActivation tanh_act("hard_tanh", t);
  auto y = tanh_act->forward(torch::tensor({-1.6f, -0.3f, 0.6f, 1.9f}));
  // input -> -1.5, -0.25, 0.5, 1.75 ; clip to [-1, 1] -> -1, -0.25, 0.5, 1 ; output (1,0,2) max 0.75
  EXPECT_TRUE(y.equal(torch::tensor({-1.f, -0.25f, 0.5f, 0.75f}))) << y;
  QuantTargets r;
  r.input = spec(0, 2, 3);
  PQActivation relu(PQActivationOptions("relu").relu_multiplier(true).targets(r));
  auto x = torch::tensor({3.0f, -1.f});
  auto z = relu->forward(x);  // x * 2^-1 = 1.5 -> relu 1.5
  EXPECT_TRUE(z.equal(torch::tensor({1.5f, 0.f}))) << z;
  z.sum().backward();
  // d/dm of x*2^round(m) = ln2 * x * 2^round(m) = ln2 * 1.5 for the positive element
  EXPECT_NEAR(relu->multiplier.grad().item<float>(), std::log(2.0) * 1.5, 1e-6);
  EXPECT_THROW(PQActivation("swish", t), Error);
}

TEST(PQLayers, PerChannelAndPerWeightWeightFormats) {
  QuantTargets t;
  FixedSpec w{1, 0, 7, quant::RoundMode::RND, quant::OverflowMode::SAT, quant::Granularity::PerChannel};
  t.weight = w;
  PQDense dense(3, 2, false, t);
  torch::NoGradGuard no_grad;
  dense->weight.copy_(torch::tensor({{0.3f, -0.7f, 0.05f}, {2.5f, -3.2f, 0.1f}}));
  dense->train();
  // spec §2.6: budget 8 bits re-split per row: (0,7) and (2,5)
  EXPECT_TRUE(dense->effective_weight().equal(torch::tensor({{0.296875f, -0.703125f, 0.046875f}, {2.5f, -3.1875f, 0.09375f}})));
  w.granularity = quant::Granularity::PerWeight;
  t.weight = w;
  PQDense per_weight(3, 2, false, t);
  per_weight->weight.copy_(torch::tensor({{0.3f, 1.0f, 200.f}, {2.5f, -3.2f, 1e-9f}}));
  per_weight->train();
  EXPECT_TRUE(per_weight->effective_weight().equal(torch::tensor({{0.296875f, 1.f, 127.f}, {2.5f, -3.1875f, 0.f}})));
}

TEST(Compress, KeepsFloatOutputsWhenQuantizationIsOff) {
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec("lenet", {1, 28, 28}, 10));
  // Train-mode steps so BatchNorm running statistics are not the initial ones.
  for (int s = 0; s < 3; ++s) g->forward(torch::rand({8, 1, 28, 28}));
  g->eval();
  auto x = torch::rand({4, 1, 28, 28});
  auto before = g->forward(x);
  auto report = compress(g, pquant("quantization_parameters: {enable_quantization: false}"));
  EXPECT_EQ(report.replaced.size(), 8u);  // conv1 bn1 pool1 conv2 bn2 pool2 fc1 fc2
  auto after = g->forward(x);
  EXPECT_LT((after - before).abs().max().item<float>(), 1e-6);
  auto bn = std::dynamic_pointer_cast<PQBatchNormImpl>(pq_layer(g, "bn1"));
  ASSERT_TRUE(bn);
  EXPECT_GT(bn->num_batches_tracked.item<int64_t>(), 0);  // statistics came along
  EXPECT_TRUE(g->named_parameters().find("fc1.weight") != nullptr);
}

TEST(Compress, QuantizedGraphWithOverridesAndCoverage) {
  torch::manual_seed(0);
  models::Graph g(models::zoo_spec("resnet", {1, 28, 28}, 10));
  auto report = compress(g, pquant(R"(quantization_parameters:
  default_data_keep_negatives: 1
  default_data_integer_bits: 3
  default_data_fractional_bits: 4
  layer_specific: {fc: {weight: {integer_bits: 1, fractional_bits: 4}}}
)"));
  auto fc = std::dynamic_pointer_cast<PQDenseImpl>(pq_layer(g, "fc"));
  ASSERT_TRUE(fc);
  EXPECT_EQ(type_of(fc->quantizers()[1].second), "ap_fixed<6,2,AP_RND,AP_SAT>");
  auto relu = std::dynamic_pointer_cast<PQActivationImpl>(pq_layer(g, "relu"));
  ASSERT_TRUE(relu);
  EXPECT_EQ(type_of(relu->quantizers()[0].second), "ap_ufixed<8,3,AP_RND,AP_SAT>");  // k=0, f+1
  // The residual adds compute in float: the coverage check lists them.
  int adds = 0;
  for (const auto& s : report.left_float) adds += s.find("(add)") != std::string::npos;
  EXPECT_EQ(adds, 3);
  auto y = g->forward(torch::rand({2, 1, 28, 28}));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 10}));
  models::Graph g2(models::zoo_spec("resnet", {1, 28, 28}, 10));
  try {
    compress(g2, pquant("quantization_parameters:\n  layer_specific:\n    fc2: {weight: {integer_bits: 1}}\n"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "c.yaml:3:10: fc2: layer_specific names no layer of model 'resnet', did you mean 'fc'?");
  }
}

TEST(Compress, TanhOutputsStaySigned) {
  auto spec_ = models::parse_model_yaml("input_shape: [4]\nlayers:\n  - {name: t, op: Tanh}\n", "m");
  models::Graph g(spec_);
  compress(g, pquant("quantization_parameters: {quantize_output: true}"));
  auto y = g->forward(torch::tensor({{-2.f, -0.5f, 0.25f, 3.f}}));
  // hard tanh on the (1,0,7) grid: negatives survive (PQuantML clips them to 0)
  EXPECT_TRUE(y.equal(torch::tensor({{-1.f, -0.5f, 0.25f, 0.9921875f}}))) << y;
}
