// The fused HGQ loss (beta·EBOPs + gamma·bits and its gradient in one pass, CPU) against the
// composed LibTorch formulas of every PQ layer, evaluated in double: the loss within 1e-6
// relative, each trained width's gradient within 1e-6 relative (spec pquantml §3.6).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>

#include "sparq/layers/pq_layers.h"
#include "sparq/quant/quantizer.h"

using namespace sparq;
using namespace sparq::quant;

namespace {

using S = std::vector<int64_t>;

HgqSpec hgq(int k, int i, int f, Granularity g = Granularity::PerWeight, OverflowMode o = OverflowMode::SAT,
            double gamma = 2e-3) {
  HgqSpec s;
  static_cast<FixedSpec&>(s) = FixedSpec{k, i, f, RoundMode::RND, o, g};
  s.gamma = gamma;
  return s;
}

/// Widths spread over [-3, 7) with halves in between (rounding ties, relu's kink at 0 and ties
/// of the maxima all occur).
void scatter_widths(layers::PQLayer& layer, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, q] : layer.quantizers()) {
    auto fp = as_fixed_point(q);
    if (!fp || !fp->trains_widths()) continue;
    fp->f.copy_(torch::randint(-6, 14, fp->f.sizes()).to(torch::kFloat32) / 2);
    if (fp->i.requires_grad()) fp->i.copy_(torch::randint(-4, 8, fp->i.sizes()).to(torch::kFloat32) / 2);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> widths(layers::PQLayer& layer) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& [name, q] : layer.quantizers())
    if (auto fp = as_fixed_point(q); fp && fp->trains_widths()) {
      out.emplace_back(name + ".f", fp->f);
      if (fp->i.requires_grad()) out.emplace_back(name + ".i", fp->i);
    }
  return out;
}

/// Loss and width gradients of `loss` on `layer` (its current dtype), in double.
std::pair<double, std::vector<torch::Tensor>> evaluate(layers::PQLayer& layer,
                                                       const std::function<torch::Tensor()>& loss) {
  for (auto& [name, w] : widths(layer)) w.mutable_grad() = torch::Tensor();
  auto value = loss();
  value.backward();
  std::vector<torch::Tensor> grads;
  for (auto& [name, w] : widths(layer))
    grads.push_back(w.grad().defined() ? w.grad().cpu().to(torch::kFloat64) : torch::zeros(w.sizes(), torch::kFloat64));
  return {value.item<double>(), grads};
}

/// The fused loss of `layer` (float32, on `device`) against the composed one of the same layer in
/// double on the CPU.
void expect_fused_equals_composed(layers::PQLayer& layer, double beta, torch::Device device = torch::kCPU) {
  const auto names = widths(layer);
  ASSERT_FALSE(names.empty());
  layer.to(device);
  auto beta_t = torch::tensor(beta, torch::kFloat32).to(device);
  ASSERT_TRUE(layer.fused_hgq_loss(beta_t).defined()) << "the fused path applies";
  auto [fused, fused_grads] = evaluate(layer, [&] { return layer.fused_hgq_loss(beta_t); });
  layer.to(torch::kCPU);
  layer.to(torch::kFloat64);
  beta_t = beta_t.cpu();
  EXPECT_FALSE(layer.fused_hgq_loss(beta_t).defined()) << "double widths take the composed path";
  auto [composed, composed_grads] = evaluate(layer, [&] { return layer.composed_hgq_loss(beta_t.to(torch::kFloat64)); });
  EXPECT_NEAR(fused, composed, 1e-6 * std::abs(composed));
  EXPECT_GT(std::abs(composed), 0.0);
  for (size_t n = 0; n < names.size(); ++n) {
    const auto& a = fused_grads[n];
    const auto& b = composed_grads[n];
    const double scale = std::max(1e-12, b.abs().max().item<double>());
    EXPECT_LE((a - b).abs().max().item<double>(), 1e-6 * scale) << names[n].first;
    EXPECT_GT(b.abs().max().item<double>(), 0.0) << names[n].first << " receives a gradient";
  }
}

/// A Dense layer over positions ([3, 6] per sample): per-weight widths, a trained bias and an
/// output lane (whose widths enter only the bits term).
void expect_dense_with_positions(torch::Device device, uint64_t seed) {
  layers::QuantTargets t;
  t.input = hgq(1, 2, 3), t.weight = hgq(1, 1, 4), t.bias = hgq(1, 2, 2), t.output = hgq(0, 2, 3);
  t.input_shape = {3, 6}, t.output_shape = {3, 5};
  layers::PQDense dense(6, 5, true, t);
  dense->forward(torch::randn({4, 3, 6}));
  scatter_widths(*dense, seed);
  expect_fused_equals_composed(*dense, 3e-4, device);
}

}  // namespace

TEST(HgqFusedLoss, DenseWithPositionsBiasAndOutputLane) { expect_dense_with_positions(torch::kCPU, 1); }

TEST(HgqFusedLoss, DensePerChannelWeightsWrapInputAndAFixedBias) {
  layers::QuantTargets t;
  t.input = hgq(1, 3, 2, Granularity::PerTensor, OverflowMode::WRAP);
  t.weight = hgq(1, 1, 4, Granularity::PerChannel);
  t.bias = FixedSpec{1, 3, 4};  // not trained: its 8 bits enter the EBOPs, no gradient
  t.input_shape = {7};
  layers::PQDense dense(7, 4, true, t);
  dense->forward(torch::randn({5, 7}));
  scatter_widths(*dense, 2);
  expect_fused_equals_composed(*dense, 1e-3);
}

TEST(HgqFusedLoss, GroupedConvWithTiedMaxima) {
  layers::QuantTargets t;
  t.input = hgq(0, 1, 3), t.weight = hgq(1, 1, 2), t.bias = hgq(1, 0, 5);
  t.input_shape = {4, 5, 5};
  layers::PQConv conv(layers::PQConvOptions(2, 4, 6, S{3, 3}).groups(2).targets(t));
  conv->forward(torch::rand({2, 4, 5, 5}));
  scatter_widths(*conv, 3);
  {  // input widths of 2, 3 or 4 bits over 25 positions: each channel's maximum is tied
    torch::NoGradGuard no_grad;
    auto input_q = as_fixed_point(conv->quantizers()[0].second);
    input_q->i.fill_(1);
    input_q->f.copy_(torch::randint(1, 4, input_q->f.sizes()).to(torch::kFloat32));
  }
  expect_fused_equals_composed(*conv, 1e-4);
}

TEST(HgqFusedLoss, Conv1dPerChannelInput) {
  layers::QuantTargets t;
  t.input = hgq(1, 2, 2, Granularity::PerChannel), t.weight = hgq(1, 0, 3);
  t.input_shape = {3, 8};
  layers::PQConv conv(layers::PQConvOptions(1, 3, 2, S{3}).bias(false).targets(t));
  conv->forward(torch::rand({2, 3, 8}));
  scatter_widths(*conv, 4);
  expect_fused_equals_composed(*conv, 1e-4);
}

TEST(HgqFusedLoss, BatchNormAvgPoolAndActivations) {
  {
    layers::QuantTargets t;
    t.input = hgq(1, 2, 3, Granularity::PerChannel), t.weight = hgq(1, 1, 3), t.bias = hgq(1, 1, 2);
    t.input_shape = {3, 4, 4};
    layers::PQBatchNorm bn(layers::PQBatchNormOptions(3).targets(t));
    bn->forward(torch::randn({2, 3, 4, 4}));
    scatter_widths(*bn, 5);
    expect_fused_equals_composed(*bn, 1e-3);
  }
  {
    layers::QuantTargets t;
    t.input = hgq(0, 2, 3), t.output = hgq(0, 2, 2);
    t.input_shape = {2, 4, 4}, t.output_shape = {2, 2, 2};
    layers::PQAvgPool pool(layers::PQAvgPoolOptions(2, S{2, 2}).targets(t));
    pool->forward(torch::rand({3, 2, 4, 4}));
    scatter_widths(*pool, 6);
    expect_fused_equals_composed(*pool, 1e-3);
  }
  for (bool with_output : {true, false}) {
    layers::QuantTargets t;
    t.input = hgq(1, 2, 3);
    if (with_output) t.output = hgq(0, 1, 4);
    t.input_shape = t.output_shape = {9};
    layers::PQActivation act(with_output ? "relu" : "tanh", t);
    act->forward(torch::randn({4, 9}));
    scatter_widths(*act, 7);
    expect_fused_equals_composed(*act, 1e-2);
  }
}

TEST(HgqFusedLoss, BeforeTheFirstForwardOnlyTheBitsTermRemains) {
  layers::QuantTargets t;
  t.weight = hgq(1, 1, 3, Granularity::PerWeight, OverflowMode::SAT, 0.5);
  layers::PQDense dense(3, 2, false, t);
  auto loss = dense->hgq_loss(1.0);
  EXPECT_DOUBLE_EQ(loss.item<double>(), 0.5 * 6 * (1 + 3));  // no input seen: EBOPs 0
  loss.backward();
  auto q = as_fixed_point(dense->quantizers()[0].second);
  EXPECT_TRUE(torch::equal(q->f.grad(), torch::full({2, 3}, 0.5f)));
}

// The CUDA pass (src/layers/hgq_loss_cuda.cu) of the layers it takes: Dense and activations.
TEST(HgqFusedLossCuda, DenseAndActivationsEqualTheComposedLoss) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  expect_dense_with_positions(torch::kCUDA, 11);
  {  // one WRAP width for the whole input, a fixed 8-bit bias (no gradient)
    layers::QuantTargets t;
    t.input = hgq(1, 3, 2, Granularity::PerTensor, OverflowMode::WRAP);
    t.weight = hgq(1, 1, 4);
    t.bias = FixedSpec{1, 3, 4};
    t.input_shape = {7};
    layers::PQDense dense(7, 4, true, t);
    dense->forward(torch::randn({5, 7}));
    scatter_widths(*dense, 12);
    expect_fused_equals_composed(*dense, 1e-3, torch::kCUDA);
  }
  for (bool with_output : {true, false}) {
    layers::QuantTargets t;
    t.input = hgq(1, 2, 3);
    if (with_output) t.output = hgq(0, 1, 4, Granularity::PerTensor);
    t.input_shape = t.output_shape = {9};
    layers::PQActivation act(with_output ? "relu" : "tanh", t);
    act->forward(torch::randn({4, 9}));
    scatter_widths(*act, 13);
    expect_fused_equals_composed(*act, 1e-2, torch::kCUDA);
  }
  {  // per-channel weights do not fit the kernel's lanes: the composed ops, same loss
    layers::QuantTargets t;
    t.weight = hgq(1, 1, 4, Granularity::PerChannel);
    t.input_shape = {7};
    layers::PQDense dense(7, 4, false, t);
    dense->forward(torch::randn({5, 7}));
    dense->to(torch::kCUDA);
    auto beta = torch::tensor(1e-3f).cuda();
    EXPECT_FALSE(dense->fused_hgq_loss(beta).defined());
    EXPECT_NEAR(dense->hgq_loss(beta).item<double>(), dense->composed_hgq_loss(beta).item<double>(), 1e-9);
  }
}
