// HGQ quantizers (trainable bit widths), EBOPs of HGQ layers, and the beta schedule, against the
// formulas and worked examples of spec pquantml §3 and anchors §1.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/plan.h"
#include "sparq/quant/quantizer.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::quant;

namespace {

HgqSpec hgq(int k, int i, int f, Granularity g = Granularity::PerWeight, OverflowMode o = OverflowMode::SAT,
            double gamma = 0) {
  HgqSpec s;
  static_cast<FixedSpec&>(s) = FixedSpec{k, i, f, RoundMode::RND, o, g};
  s.gamma = gamma;
  return s;
}

const double kLn2 = std::log(2.0);
using S = std::vector<int64_t>;  // shapes for the module holders' constructors

}  // namespace

TEST(HGQQuantizer, BitShapesKnownAtConstruction) {
  FixedPointQuantizer w(hgq(1, 2, 3), S{32, 16, 3, 3});
  EXPECT_EQ(w->f.sizes().vec(), (std::vector<int64_t>{32, 16, 3, 3}));
  EXPECT_TRUE(w->f.requires_grad() && w->i.requires_grad());
  EXPECT_EQ(w->parameters().size(), 2u);  // f and i: an optimizer built now sees them
  EXPECT_EQ(FixedPointQuantizer(hgq(1, 2, 3, Granularity::PerTensor), S{32, 16, 3, 3})->f.numel(), 1);
  EXPECT_EQ(FixedPointQuantizer(hgq(1, 2, 3, Granularity::PerChannel), S{32, 16, 3, 3})->f.sizes().vec(),
            (std::vector<int64_t>{32, 1, 1, 1}));
  // Data lanes share widths over the batch axis.
  FixedPointQuantizer d(hgq(0, 2, 3), S{32, 6, 6}, /*is_data=*/true);
  EXPECT_EQ(d->f.sizes().vec(), (std::vector<int64_t>{1, 32, 6, 6}));
  EXPECT_EQ(FixedPointQuantizer(hgq(0, 2, 3, Granularity::PerChannel), S{32, 6, 6}, true)->i.sizes().vec(),
            (std::vector<int64_t>{1, 32, 1, 1}));
  // Per-channel widths broadcast over the other axes in the forward pass.
  FixedPointQuantizer pc(hgq(1, 2, 3, Granularity::PerChannel), S{4, 2, 3, 3});
  EXPECT_EQ(pc->forward(torch::full({4, 2, 3, 3}, 0.3f)).sum().item<float>(), 72 * 0.25f);
  FixedPointQuantizer pcd(hgq(0, 2, 3, Granularity::PerChannel), S{2, 5, 5}, true);
  EXPECT_EQ(pcd->forward(torch::full({3, 2, 5, 5}, 0.3f)).sizes().vec(), (std::vector<int64_t>{3, 2, 5, 5}));
  // WRAP: the integer bits follow the data, only f is trained.
  FixedPointQuantizer wrap(hgq(1, 2, 3, Granularity::PerWeight, OverflowMode::WRAP), S{4});
  EXPECT_EQ(wrap->parameters().size(), 1u);
  EXPECT_FALSE(wrap->i.requires_grad());
  // A per-weight data lane needs its shape; an input of another shape is refused by name.
  EXPECT_NE(test::error_of<Error>([] { FixedPointQuantizer(hgq(0, 2, 3), S{}, true); }).find("needs the sample shape"),
            std::string::npos);
  EXPECT_NE(test::error_of<Error>([&] { d->forward(torch::zeros({2, 32, 5, 5})); }).find("[1, 32, 6, 6]"),
            std::string::npos);
}

TEST(HGQQuantizer, FixedInitialBitsEqualTheFixedQuantizer) {
  // beta = gamma = 0 and untrained widths: the HGQ output is the fixed-point quantizer's, in
  // evaluation and in training, for every overflow mode.
  torch::manual_seed(3);
  auto x = torch::randn({64, 12}) * 3;
  for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
    for (auto g : {Granularity::PerTensor, Granularity::PerWeight}) {
      FixedPointQuantizer learned(hgq(1, 1, 3, g, o), S{12}, /*is_data=*/true);
      FixedSpec fixed_spec{1, 1, 3, RoundMode::RND, o};
      FixedPointQuantizer fixed(fixed_spec, S{}, true);
      learned->eval(), fixed->eval();
      EXPECT_TRUE(learned->forward(x).equal(fixed->forward(x))) << to_string(o);
      if (o != OverflowMode::WRAP) {  // WRAP's i follows the batch in training
        learned->train(), fixed->train();
        EXPECT_TRUE(learned->forward(x).equal(fixed->forward(x))) << to_string(o);
      }
    }
  }
}

TEST(HGQQuantizer, SaturatingGradientsMatchTheSurrogate) {
  // k=1, i=1, f=2 per element: range [-2, 1.75], step 0.25.
  auto x = torch::tensor({0.3f, -0.7f, 2.5f, -3.0f, 1.1f}, torch::requires_grad());
  FixedPointQuantizer q(hgq(1, 1, 2), S{5});
  auto y = q->forward(x);
  EXPECT_TRUE(y.equal(torch::tensor({0.25f, -0.75f, 1.75f, -2.0f, 1.0f}))) << y;
  y.sum().backward();
  // dy/dx = [lo <= x <= hi]
  EXPECT_TRUE(x.grad().equal(torch::tensor({1.f, 1.f, 0.f, 0.f, 1.f})));
  // dy/df = ln2·(c - y) + [x > hi]·2^-f·ln2, c the clipped input
  auto c = torch::tensor({0.3f, -0.7f, 1.75f, -2.0f, 1.1f});
  auto df = kLn2 * (c - y.detach()) + torch::tensor({0.f, 0.f, 1.f, 0.f, 0.f}) * 0.25 * kLn2;
  EXPECT_TRUE(torch::allclose(q->f.grad(), df, 1e-6, 1e-7)) << q->f.grad();
  // dy/di = ln2·2^i·([x > hi] - k·[x < lo])
  auto di = torch::tensor({0.f, 0.f, 1.f, -1.f, 0.f}) * 2 * kLn2;
  EXPECT_TRUE(torch::allclose(q->i.grad(), di, 1e-6, 1e-7)) << q->i.grad();
  // The anchors' worked example: x = 0.3, f = 2, RND: q = 0.25, dq/df = ln2·0.05 = 0.0347.
  EXPECT_NEAR(q->f.grad()[0].item<double>(), 0.0347, 5e-5);
}

TEST(HGQQuantizer, FusedPassEqualsTheComposedOps) {
  // The CPU's one-pass HGQ kernel against autograd through the composed LibTorch ops: same values,
  // same gradients to x, i and f, for per-element, per-feature (broadcast) and per-tensor widths;
  // 6,001 rows: short periods tiled over several chunks, the last tile partial. With `relu`, the
  // ReLU inside the kernel's pass (its mask q > 0) against relu of the composed ops (SAT, SAT_SYM).
  torch::manual_seed(7);
  for (int r = 0; r < 7; ++r)
  for (bool relu : {false, true})
  for (int64_t rows : {32, 6001})
  for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
    if (relu && o == OverflowMode::WRAP) continue;
    auto x0 = torch::randn({rows, 6}) * 4;
    for (S shape : {S{rows, 6}, S{1, 6}, S{}}) {
      for (bool training : {true, false}) {
        const auto round = static_cast<RoundMode>(r);
        SCOPED_TRACE(std::string(to_string(round)) + " " + to_string(o) + " rows " + std::to_string(rows) + " bits [" +
                     std::to_string(shape.size()) + "] " + (training ? "train" : "eval") + (relu ? " relu" : ""));
        auto k = torch::randint(0, 2, shape).to(torch::kFloat32);
        auto i0 = torch::randint(-3, 4, shape).to(torch::kFloat32), f0 = torch::randint(-1, 6, shape).to(torch::kFloat32);
        // The composed ops in double (their float sums over 6,001 rows round off more than the
        // kernel's double sums); every input is a float converted exactly.
        auto run = [&](bool composed, torch::ScalarType dtype) {
          auto x = x0.to(dtype).clone().requires_grad_(true);
          auto i = i0.to(dtype).clone().requires_grad_(true), f = f0.to(dtype).clone().requires_grad_(true);
          auto kk = k.to(dtype);
          torch::Tensor y;
          if (composed) {
            y = fixed_quantize_composed(x, kk, i, f, round, o, training);
            if (relu) y = torch::relu(y);
          } else {
            y = relu ? fixed_quantize_relu(x, kk, i, f, round, o, training)
                     : fixed_quantize(x, kk, i, f, round, o, training);
          }
          (y * torch::linspace(-1, 2, y.numel()).view(y.sizes()).to(dtype)).sum().backward();
          std::vector<torch::Tensor> out{y.detach(), x.grad(), f.grad(), i.grad().defined() ? i.grad() : torch::zeros_like(i)};
          for (auto& t : out) t = t.to(torch::kFloat32);
          return out;
        };
        auto composed = run(true, torch::kFloat64);
        for (auto dtype : {torch::kFloat32, torch::kFloat64}) {  // the kernel in float and in double
          SCOPED_TRACE(dtype == torch::kFloat32 ? "float kernel" : "double kernel");
          auto fused = run(false, dtype);
          EXPECT_TRUE(fused[0].equal(composed[0]));
          EXPECT_TRUE(fused[1].equal(composed[1]));
          EXPECT_TRUE(torch::allclose(fused[2], composed[2], 1e-5, 1e-5)) << fused[2] - composed[2];
          EXPECT_TRUE(torch::allclose(fused[3], composed[3], 1e-5, 1e-5)) << fused[3] - composed[3];
          if (relu) {
            EXPECT_GE(fused[0].min().item<float>(), 0.0f);
          }
        }
      }
    }
  }
}

TEST(HGQQuantizer, ForwardReluHasNoGradientWhereQIsNotPositive) {
  // The HGQ quantizer's forward_relu goes through it; no gradient reaches x where q <= 0.
  FixedPointQuantizer q(hgq(1, 2, 3), S{4}, /*is_data=*/true);
  auto x = torch::tensor({{-1.0f, 0.01f, 0.5f, 9.0f}}).requires_grad_(true);
  auto y = q->forward_relu(x);
  EXPECT_TRUE(y.equal(torch::tensor({{0.0f, 0.0f, 0.5f, 3.875f}})));
  y.sum().backward();
  EXPECT_TRUE(x.grad().equal(torch::tensor({{0.0f, 0.0f, 1.0f, 0.0f}})));
}

TEST(HGQQuantizerCuda, FusedCudaPassEqualsTheCpuAndTheComposedOps) {
  // The one-pass CUDA kernel (forward, and backward recomputed from x) against the CPU's fused
  // pass and against autograd through the composed ops on the GPU: values bit-exact, the input
  // gradient exact, the width gradients within 1e-6 relative in double (float32: 1e-5; the sums'
  // order differs).
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(11);
  for (auto dtype : {torch::kFloat64, torch::kFloat32})
  for (int r = 0; r < 7; ++r) {
    auto x0 = (torch::randn({64, 6}) * 4).to(dtype);
    const double tol = dtype == torch::kFloat64 ? 1e-6 : 1e-5;
    auto close = [tol](const torch::Tensor& a, const torch::Tensor& b) { return torch::allclose(a, b, tol, tol); };
    for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
      for (S shape : {S{64, 6}, S{1, 6}, S{}}) {
        SCOPED_TRACE(std::string(to_string(static_cast<RoundMode>(r))) + " " + to_string(o) + " bits [" +
                     std::to_string(shape.size()) + "]");
        auto k = torch::randint(0, 2, shape).to(dtype);
        auto i0 = torch::randint(-3, 4, shape).to(dtype), f0 = torch::randint(-1, 6, shape).to(dtype);
        auto weights = torch::linspace(-1, 2, x0.numel()).view(x0.sizes()).to(dtype);
        auto run = [&](torch::Device d, bool composed) {
          auto x = x0.to(d).clone().requires_grad_(true);  // clones: x0, i0, f0 stay leaves without gradient
          auto i = i0.to(d).clone().requires_grad_(true), f = f0.to(d).clone().requires_grad_(true);
          auto kd = k.to(d);
          auto y = composed ? fixed_quantize_composed(x, kd, i, f, static_cast<RoundMode>(r), o, true)
                            : fixed_quantize(x, kd, i, f, static_cast<RoundMode>(r), o, true);
          (y * weights.to(d)).sum().backward();
          return std::vector<torch::Tensor>{y.detach().cpu(), x.grad().cpu(), f.grad().cpu(),
                                            i.grad().defined() ? i.grad().cpu() : torch::zeros_like(i0)};
        };
        auto gpu = run(torch::kCUDA, false), cpu = run(torch::kCPU, false), composed = run(torch::kCUDA, true);
        EXPECT_TRUE(gpu[0].equal(cpu[0]));
        EXPECT_TRUE(gpu[0].equal(composed[0]));
        EXPECT_TRUE(gpu[1].equal(cpu[1]));
        EXPECT_TRUE(gpu[1].equal(composed[1]));
        EXPECT_TRUE(close(gpu[2], cpu[2]) && close(gpu[2], composed[2])) << gpu[2] - cpu[2];
        EXPECT_TRUE(close(gpu[3], cpu[3]) && close(gpu[3], composed[3])) << gpu[3] - cpu[3];
      }
    }
  }
}

TEST(HGQQuantizer, SharedWidthsSumTheirGradients) {
  auto x = torch::tensor({{0.3f, 0.6f}, {0.1f, 0.9f}});
  FixedPointQuantizer per_tensor(hgq(0, 0, 2, Granularity::PerTensor), S{2}, /*is_data=*/true);
  FixedPointQuantizer per_feature(hgq(0, 0, 2), S{2}, /*is_data=*/true);
  per_tensor->forward(x).sum().backward();
  per_feature->forward(x).sum().backward();
  EXPECT_EQ(per_feature->f.sizes().vec(), (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(per_tensor->f.grad().item<double>(), per_feature->f.grad().sum().item<double>(), 1e-7);
  // feature 0: y = 0.25, 0.0 -> ln2·(0.05 + 0.1)
  EXPECT_NEAR(per_feature->f.grad()[0][0].item<double>(), kLn2 * 0.15, 1e-6);
}

TEST(HGQQuantizer, WrapTracksIntegerBitsFromTheData) {
  // anchors §1.4: max|x| = 3.0 with f = 2 needs ceil(log2(3.25)) = 2 integer bits; 3.9 rounds to
  // 4.0 and needs 3. Only f learns: dy/df = ln2·(x - y).
  FixedPointQuantizer q(hgq(1, 0, 2, Granularity::PerTensor, OverflowMode::WRAP), S{2}, /*is_data=*/true);
  auto x = torch::tensor({{3.0f, -1.0f}}, torch::requires_grad());
  auto y = q->forward(x);
  EXPECT_EQ(q->i.item<float>(), 2.0f);
  q->forward(torch::tensor({{3.9f, 0.f}}));
  EXPECT_EQ(q->i.item<float>(), 3.0f);
  y.sum().backward();
  EXPECT_NEAR(q->f.grad().item<double>(), 0.0, 1e-7);  // 3.0 and -1.0 lie on the grid
  EXPECT_FALSE(q->i.grad().defined());
  // In evaluation WRAP wraps with the tracked bits (k=1, i=3, f=2: [-8, 7.75]): 9.0 becomes -7.0.
  q->eval();
  EXPECT_EQ(q->forward(torch::tensor({{5.0f, 9.0f}}))[0][1].item<float>(), -7.0f);
}

TEST(HGQQuantizer, ZeroWidthElementsOutputZeroInEvaluation) {
  FixedPointQuantizer q(hgq(1, 0, 2), S{3});
  {
    torch::NoGradGuard no_grad;
    q->i.copy_(torch::tensor({0.f, -3.f, 0.4f}));  // widths 1+0+2, 1-3+2 = 0, 1+0+2 (i rounds to 0)
  }
  auto x = torch::tensor({0.3f, -0.2f, 0.6f});
  q->eval();
  EXPECT_TRUE(q->forward(x).equal(torch::tensor({0.25f, 0.f, 0.5f})));
  auto [k, i, f] = q->integer_bits();
  EXPECT_TRUE(i.equal(torch::tensor({0.f, -3.f, 0.f})));
  // total bits k + relu(i + f): the zero-width element still has its sign bit.
  EXPECT_TRUE(q->total_bits().equal(torch::tensor({3.f, 1.f, 3.f})));
}

TEST(HGQQuantizer, BitLossFreezeAndClamp) {
  FixedPointQuantizer q(hgq(1, 2, 3, Granularity::PerWeight, OverflowMode::SAT, /*gamma=*/0.5), S{4});
  auto loss = q->bits_loss();
  EXPECT_NEAR(loss.item<double>(), 0.5 * (4 * 3 + 4 * 2), 1e-6);
  loss.backward();
  EXPECT_TRUE(q->f.grad().equal(torch::full({4}, 0.5f)));  // gamma per bit-width element
  EXPECT_TRUE(q->i.grad().equal(torch::full({4}, 0.5f)));
  FixedPointQuantizer wrap(hgq(1, 2, 3, Granularity::PerWeight, OverflowMode::WRAP, 0.5), S{4});
  EXPECT_NEAR(wrap->bits_loss().item<double>(), 0.5 * 12, 1e-6);  // i is not a trained width
  EXPECT_FALSE(FixedPointQuantizer(hgq(1, 2, 3), S{4})->bits_loss().defined());  // gamma 0: no term
  {
    torch::NoGradGuard no_grad;
    q->f.copy_(torch::tensor({2.4f, 2.6f, 30.f, -30.f}));
    q->i.copy_(torch::tensor({1.5f, 2.5f, 40.f, 0.f}));
  }
  q->freeze();
  EXPECT_TRUE(q->f.equal(torch::tensor({2.f, 3.f, 24.f, -24.f}))) << q->f;
  EXPECT_TRUE(q->i.equal(torch::tensor({2.f, 2.f, 23.f, 0.f}))) << q->i;  // half to even
}

// ---- EBOPs of HGQ layers ----

TEST(HGQEbops, DenseWorkedExampleAndGradients) {
  // anchors §1.6: 16 -> 64, every input 6 bits, every weight 4 bits, every bias 8 bits:
  // 16·64·6·4 + 8·64 = 25,088; half the weights at zero width: the multiply term halves.
  layers::QuantTargets t;
  t.input = hgq(0, 0, 6), t.weight = hgq(1, 0, 3), t.bias = hgq(1, 0, 7);
  t.input_shape = {16};
  layers::PQDense dense(16, 64, true, t);
  {
    torch::NoGradGuard no_grad;
    dense->weight.fill_(0.5);  // on every grid: no weight quantizes to zero
  }
  dense->forward(torch::rand({2, 16}));
  auto ebops = dense->ebops(false);
  EXPECT_DOUBLE_EQ(ebops.item<double>(), 25088.0);
  ebops.backward();
  auto quantizers = dense->quantizers();
  auto weight_q = as_fixed_point(quantizers[1].second), input_q = as_fixed_point(quantizers[0].second);
  // dEBOPs/db_w[o,i] = b_in[i] = 6; dEBOPs/db_in[i] = Σ_o b_w[o,i] = 64·4
  EXPECT_TRUE(weight_q->f.grad().equal(torch::full({64, 16}, 6.f)));
  EXPECT_TRUE(input_q->f.grad().equal(torch::full({1, 16}, 256.f)));
  {
    torch::NoGradGuard no_grad;
    weight_q->i.slice(0, 0, 32).fill_(-4);  // 1 - 4 + 3 = 0: zero width (and sign bit only in total_bits)
    weight_q->f.slice(0, 0, 32).fill_(3);
  }
  // Deployed: the zero-width weights hold 0 and cost nothing.
  EXPECT_DOUBLE_EQ(dense->ebops(true).item<double>(), 16 * 32 * 6 * 4 + 512.0);
  EXPECT_EQ(dense->cost().nonzero, 32 * 16);
}

TEST(HGQEbops, ConvByHandWithPerPixelInputBits) {
  // Σ_{o,c} max_spatial(B_in)[c]·Σ_kernel B_w[o,c] + mean(B_b)·prod(input shape) (spec §3.6).
  layers::QuantTargets t;
  t.input = hgq(0, 1, 3), t.weight = hgq(1, 1, 2), t.bias = hgq(1, 0, 5);
  t.input_shape = {2, 4, 4};
  layers::PQConv conv(layers::PQConvOptions(2, 2, 3, S{3, 3}).targets(t));
  auto qs = conv->quantizers();
  auto input_q = as_fixed_point(qs[0].second), weight_q = as_fixed_point(qs[1].second);
  torch::manual_seed(1);
  {
    torch::NoGradGuard no_grad;
    input_q->f.copy_(torch::randint(0, 6, {1, 2, 4, 4}).to(torch::kFloat32));
    weight_q->f.copy_(torch::randint(0, 5, {3, 2, 3, 3}).to(torch::kFloat32));
  }
  conv->forward(torch::rand({1, 2, 4, 4}));
  double expected = 0;
  auto bin = (input_q->f + 1).clamp_min(0);          // k = 0: relu(i + f)
  auto bw = 1 + (weight_q->f + 1).clamp_min(0);      // k = 1
  for (int o = 0; o < 3; ++o)
    for (int c = 0; c < 2; ++c) expected += bin[0][c].max().item<double>() * bw[o][c].sum().item<double>();
  expected += 6.0 * (2 * 4 * 4);                     // bias: 1 + 0 + 5 bits x input elements
  EXPECT_NEAR(conv->ebops(false).item<double>(), expected, 1e-9 * expected);
}

TEST(HGQEbops, LayerLossIsBetaEbopsPlusGammaBits) {
  layers::QuantTargets t;
  t.input = hgq(0, 0, 6, Granularity::PerWeight, OverflowMode::SAT, 0.01);
  t.weight = hgq(1, 0, 3, Granularity::PerWeight, OverflowMode::SAT, 0.01);
  t.input_shape = {4};
  layers::PQDense dense(4, 2, false, t);
  dense->forward(torch::rand({3, 4}));
  // EBOPs 4·2·6·4 = 192; bits: input 4·(0 + 6), weight 8·(0 + 3)
  EXPECT_NEAR(dense->hgq_loss(1e-3).item<double>(), 1e-3 * 192 + 0.01 * (24 + 24), 1e-6);
  layers::QuantTargets fixed;
  fixed.weight = FixedSpec{1, 0, 3};
  EXPECT_FALSE(layers::PQDense(4, 2, false, fixed)->hgq_loss(1e-3).defined());
}

// ---- beta schedule ----

TEST(BetaSchedule, PiecewiseConstantLinearAndLog) {
  using I = Event::Interp;
  auto point = [](double epoch, double beta, I interp) {
    Event e;
    e.kind = Event::Kind::HgqBeta, e.at_epoch = epoch, e.value = beta, e.interp = interp;
    return e;
  };
  // anchors §1.7: the FPGA'26 schedule; at epoch 102,000 beta = 5e-7·2000^0.5 = 2.24e-5.
  std::vector<Event> s = {point(0, 5e-7, I::Constant), point(4000, 5e-7, I::Log), point(200000, 1e-3, I::Constant)};
  EXPECT_NEAR(curve_at(s, 102000), 5e-7 * std::sqrt(2000.0), 1e-12);
  EXPECT_DOUBLE_EQ(curve_at(s, 0), 5e-7);
  EXPECT_DOUBLE_EQ(curve_at(s, 3999), 5e-7);
  EXPECT_DOUBLE_EQ(curve_at(s, 250000), 1e-3);  // held after the last point
  std::vector<Event> linear = {point(2, 1.0, I::Linear), point(6, 3.0, I::Constant)};
  EXPECT_DOUBLE_EQ(curve_at(linear, 0), 1.0);  // the first value before the first point
  EXPECT_DOUBLE_EQ(curve_at(linear, 3), 1.5);
  EXPECT_DOUBLE_EQ(curve_at(linear, 6), 3.0);
}
