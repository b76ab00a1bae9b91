// The integer quantizer's NNI methods on the spec's formulas (nni-config §3.1-3.4): dtype ranges,
// scale and zero point (symmetric, affine, narrow, uint, the range widened to contain 0, the eps
// floor), per-channel shapes, QAT's EMA after 3 forwards and its bypass, PTQ calibration, LSQ's
// and LSQ+'s gradients on hand examples, DoReFa and BNN.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cfloat>
#include <cmath>

#include "sparq/error.h"
#include "sparq/quant/integer.h"

namespace sparq::quant {
namespace {

/// NNI's int<b> / uint<b>.
IntegerSpec nni_dtype(const std::string& dtype, bool symmetric, IntegerMethod method = IntegerMethod::Qat) {
  IntegerSpec s;
  s.is_signed = dtype[0] == 'i';
  s.bits = std::stoi(dtype.substr(s.is_signed ? 3 : 4));
  s.narrow = s.is_signed;
  s.symmetric = symmetric;
  s.method = method;
  return s;
}

IntegerQuantizer observed(const IntegerSpec& spec, const torch::Tensor& x, std::vector<int64_t> shape = {}, bool data = true) {
  IntegerQuantizer q(spec, shape, data);
  q->train();
  q->start();
  q->forward(x);
  return q;
}

TEST(IntegerNni, RangesScalesAndZeroPoints) {
  EXPECT_EQ(nni_dtype("int8", true).qmin(), -127);
  EXPECT_EQ(nni_dtype("int8", true).qmax(), 127);
  EXPECT_EQ(nni_dtype("int4", true).qmin(), -7);
  EXPECT_EQ(nni_dtype("int2", true).qmax(), 1);
  EXPECT_EQ(nni_dtype("uint8", true).qmax(), 255);
  auto x = torch::tensor({-1.f, 3.f});
  auto [s, z] = observed(nni_dtype("int8", true), x)->qparams();  // a = 3, scale = 3 / 127, zp 0
  EXPECT_FLOAT_EQ(s.item<float>(), 3.f / 127);
  EXPECT_EQ(z.item<float>(), 0);
  auto [su, zu] = observed(nni_dtype("uint8", true), x)->qparams();
  EXPECT_FLOAT_EQ(su.item<float>(), 3.f / 127.5f);
  EXPECT_EQ(zu.item<float>(), 128);
  EXPECT_EQ(observed(nni_dtype("uint2", true), x)->qparams().second.item<float>(), 2);  // floor((3 + 0 + 1) / 2)
  auto [sa, za] = observed(nni_dtype("int8", false), x)->qparams();  // affine: 4 / 254, zp -127 - round(-63.5) = -63
  EXPECT_FLOAT_EQ(sa.item<float>(), 4.f / 254);
  EXPECT_EQ(za.item<float>(), -63);
  auto [sw, zw] = observed(nni_dtype("int8", false), torch::tensor({0.5f, 2.f}))->qparams();  // widened to [0, 2]
  EXPECT_FLOAT_EQ(sw.item<float>(), 2.f / 254);
  EXPECT_EQ(zw.item<float>(), -127);
  EXPECT_FLOAT_EQ(observed(nni_dtype("int8", true), torch::zeros({3}))->qparams().first.item<float>(), FLT_EPSILON);
  // the fake-quant of the affine case: (round(clamp(zp + x / s)) - zp) * s
  auto q = observed(nni_dtype("int8", false), x);
  q->eval();
  auto y = q->forward(torch::tensor({0.5f, 5.f, -2.f}));
  const float s4 = 4.f / 254;
  EXPECT_NEAR(y[0].item<float>(), (std::nearbyint(-63 + 0.5f / s4) + 63) * s4, 1e-6);
  EXPECT_NEAR(y[1].item<float>(), (127 + 63) * s4, 1e-6);   // clamped at qmax
  EXPECT_NEAR(y[2].item<float>(), (-127 + 63) * s4, 1e-6);  // clamped at qmin
}

TEST(IntegerNni, PerChannelShapes) {
  auto w = torch::tensor({{1.f, -2.f, 0.5f}, {0.1f, 0.2f, -0.4f}});
  auto spec = nni_dtype("int8", true);
  spec.channel_dim = 0;  // out_channel: [O, 1]
  auto q = observed(spec, w, {2, 3}, false);
  auto [s, z] = q->qparams();
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_FLOAT_EQ(s[0][0].item<float>(), 2.f / 127);
  EXPECT_FLOAT_EQ(s[1][0].item<float>(), 0.4f / 127);
  spec.channel_dim = 1;  // in_channel: [1, I]
  EXPECT_EQ(observed(spec, w, {2, 3}, false)->qparams().first.sizes(), (std::vector<int64_t>{1, 3}));
  auto act = torch::randn({4, 3, 5, 5});
  EXPECT_EQ(observed(spec, act, {3, 5, 5}, true)->qparams().first.sizes(), (std::vector<int64_t>{1, 3, 1, 1}));  // per_channel
  spec.channel_dim = 0;
  EXPECT_THROW(IntegerQuantizer(spec, std::vector<int64_t>{3, 5, 5}, true), Error);  // dim 0 of data is the batch
  auto bnn = nni_dtype("int8", true, IntegerMethod::Bnn);
  bnn.channel_dim = 0;
  EXPECT_THROW(IntegerQuantizer(bnn, std::vector<int64_t>{2, 3}, false), Error);  // BNN, DoReFa: no granularity
}

TEST(IntegerNni, QatEmaBypassAndGradient) {
  IntegerQuantizer q(nni_dtype("int8", true), std::vector<int64_t>{}, true);
  q->train();
  auto x1 = torch::tensor({-1.f, 1.f});
  EXPECT_TRUE(q->forward(x1).equal(x1));  // bypass before the start step, but observing
  q->forward(torch::tensor({-2.f, 2.f}));
  q->forward(torch::tensor({0.f, 4.f}));
  EXPECT_NEAR(q->min_val.item<float>(), -0.9999, 1e-6);  // -1 -> -1.01 -> -1.01 + 0.01 * 1.01
  EXPECT_NEAR(q->max_val.item<float>(), 1.0399, 1e-6);   // 1 -> 1.01 -> 1.01 + 0.01 * 2.99
  q->eval();
  q->forward(torch::tensor({-100.f, 100.f}));  // evaluation does not move the range
  EXPECT_NEAR(q->max_val.item<float>(), 1.0399, 1e-6);
  q->start();
  auto x = torch::tensor({0.5f, 3.f}, torch::requires_grad());
  auto y = q->forward(x);
  const float s = 1.0399f / 127;
  EXPECT_NEAR(y[0].item<float>(), std::nearbyint(0.5f / s) * s, 1e-6);
  EXPECT_NEAR(y[1].item<float>(), 127 * s, 1e-6);
  y.sum().backward();
  EXPECT_EQ(x.grad()[0].item<float>(), 1);  // inside
  EXPECT_EQ(x.grad()[1].item<float>(), 0);  // clamped
}

TEST(IntegerNni, PtqCalibratesThenQuantizes) {
  IntegerQuantizer q(nni_dtype("int8", false, IntegerMethod::Ptq), std::vector<int64_t>{}, true);
  q->eval();  // calibration counts in any mode
  auto a = torch::tensor({-1.f, 0.5f}), b = torch::tensor({0.f, 3.f});
  EXPECT_TRUE(q->forward(a).equal(a));
  EXPECT_TRUE(q->forward(b).equal(b));
  EXPECT_EQ(q->min_val.item<float>(), -1);  // running min / max, not an average
  EXPECT_EQ(q->max_val.item<float>(), 3);
  q->start();
  auto x = torch::tensor({5.f}, torch::requires_grad());
  auto y = q->forward(x);
  EXPECT_NEAR(y.item<float>(), (127 + 63) * (4.f / 254), 1e-6);
  y.sum().backward();
  EXPECT_EQ(x.grad().item<float>(), 1);  // clamp_round's identity gradient, outside the range too
}

TEST(IntegerNni, LsqAndLsqPlusGradients) {
  IntegerQuantizer q(nni_dtype("int8", true, IntegerMethod::Lsq), std::vector<int64_t>{}, true);
  ASSERT_TRUE(q->scale.defined());
  EXPECT_FLOAT_EQ(q->scale.item<float>(), 0.01f);
  auto x = torch::tensor({0.003f, 0.5f, -2.f}, torch::requires_grad());
  auto y = q->forward(x);  // q = x / s = 0.3, 50, -200 (below qmin -127)
  EXPECT_NEAR(y[0].item<float>(), 0, 1e-7);
  EXPECT_NEAR(y[1].item<float>(), 0.5, 1e-6);
  EXPECT_NEAR(y[2].item<float>(), -1.27, 1e-6);
  y.sum().backward();
  const double g = 1 / std::sqrt(127.0 * 3);
  EXPECT_NEAR(q->scale.grad().item<float>(), (-0.3 + 0.0 - 127) * g, 1e-4);  // round(q) - q inside, qmin below
  EXPECT_EQ(x.grad()[0].item<float>(), 1);
  EXPECT_EQ(x.grad()[2].item<float>(), 0);

  IntegerQuantizer p(nni_dtype("int8", false, IntegerMethod::LsqPlus), std::vector<int64_t>{}, true);
  EXPECT_FLOAT_EQ(p->zero_point.item<float>(), 127);  // NNI's (qmax - qmin) / 2
  {
    torch::NoGradGuard no_grad;
    p->zero_point.fill_(0);
  }
  auto xp = torch::tensor({0.004f, 2.f}, torch::requires_grad());  // q + z = 0.4 inside, 200 above
  p->forward(xp).sum().backward();
  EXPECT_NEAR(p->zero_point.grad().item<float>(), -0.01, 1e-7);  // -s outside, 0 inside
  const double gp = 1 / std::sqrt(127.0 * 2);
  EXPECT_NEAR(p->scale.grad().item<float>(), ((0 - 0.4) + (127 - 0)) * gp, 1e-4);
}

TEST(IntegerNni, DorefaAndBnn) {
  auto spec = nni_dtype("uint8", false, IntegerMethod::Dorefa);
  IntegerQuantizer w(spec, std::vector<int64_t>{3}, false);
  auto y = w->forward(torch::tensor({0.f, 1.f, -1.f}));  // u = 0.5, 1, 0 on the grid of [0, 1] with s = 1/255
  const float s = 1.f / 255;  // float32, slightly above 1/255: 0.5 / s = 127.49999 rounds to 127 (as in torch)
  EXPECT_NEAR(y[0].item<float>(), 2 * std::nearbyint(0.5f / s) * s - 1, 1e-6);
  EXPECT_NEAR(y[0].item<float>(), 2 * 127.f / 255 - 1, 1e-6);
  EXPECT_NEAR(y[1].item<float>(), 1, 1e-6);
  EXPECT_NEAR(y[2].item<float>(), -1, 1e-6);
  spec.output_lane = true;
  IntegerQuantizer out(spec, std::vector<int64_t>{2}, true);
  auto yo = out->forward(torch::tensor({{-0.5f, 2.f}}));
  EXPECT_EQ(yo[0][0].item<float>(), 0);
  EXPECT_EQ(yo[0][1].item<float>(), 1);

  auto bspec = nni_dtype("int8", true, IntegerMethod::Bnn);
  bspec.output_lane = true;
  IntegerQuantizer b(bspec, std::vector<int64_t>{3}, true);
  auto xb = torch::tensor({{0.f, -0.3f, 2.f}}, torch::requires_grad());
  auto yb = b->forward(xb);
  EXPECT_EQ(yb[0][0].item<float>(), 1);  // sign(0) = +1
  EXPECT_EQ(yb[0][1].item<float>(), -1);
  yb.sum().backward();
  EXPECT_EQ(xb.grad()[0][1].item<float>(), 1);
  EXPECT_EQ(xb.grad()[0][2].item<float>(), 0);  // output lanes: no gradient where |x| > 1
}

}  // namespace
}  // namespace sparq::quant

namespace sparq::quant {
namespace {

/// The fused path (CPU loops) against the composed ops of reference_forward on the same states:
/// outputs, gradients, ranges and scales equal bit for bit over several training steps.
void expect_fused_equals_reference(IntegerSpec spec, std::vector<int64_t> shape, bool data, torch::Dtype dtype) {
  SCOPED_TRACE(to_string(QuantizerSpec(spec)) + " method " + to_string(spec.method) + (data ? " data" : " weight") +
               (dtype == torch::kDouble ? " double" : " float"));
  IntegerQuantizer fused(spec, shape, data), reference(spec, shape, data);
  torch::manual_seed(3);
  std::vector<int64_t> full = shape;
  if (data) full.insert(full.begin(), 6);
  for (int step = 0; step < 5; ++step) {
    const bool training = step < 3;
    fused->train(training), reference->train(training);
    if (step == 1) fused->start(), reference->start();
    auto base = torch::randn(full, torch::TensorOptions().dtype(dtype)) * (step + 1);
    base.view({-1})[0] = 1e30;  // far outside the grid
    base.view({-1})[1] = -1e30;
    if (step >= 2) {  // exact ties of the current grid: x / s = n + 0.5
      auto s = fused->qparams().first.reshape({-1})[0].item<double>();
      base.view({-1})[2] = 2.5 * s, base.view({-1})[3] = -3.5 * s;
    }
    auto xa = base.clone().requires_grad_(true), xb = base.clone().requires_grad_(true);
    auto ya = fused->forward(xa), yb = reference->reference_forward(xb);
    ASSERT_TRUE(ya.equal(yb)) << "step " << step << ": max difference " << (ya - yb).abs().max().item<double>();
    auto g = torch::randn_like(ya);
    (ya * g).sum().backward(), (yb * g).sum().backward();
    ASSERT_TRUE(xa.grad().equal(xb.grad())) << "step " << step;
    ASSERT_TRUE(fused->min_val.equal(reference->min_val)) << "step " << step;
    ASSERT_TRUE(fused->max_val.equal(reference->max_val)) << "step " << step;
    if (spec.method == IntegerMethod::Ptq && step == 2) fused->start(), reference->start();  // calibration ends
  }
}

TEST(IntegerFused, EqualsComposedOpsBitForBit) {
  IntegerSpec torch_int8;  // SparseML / torch FakeQuantize: int8 symmetric weights, uint8 affine inputs
  torch_int8.symmetric = true;
  IntegerSpec torch_uint8;
  torch_uint8.is_signed = false;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    expect_fused_equals_reference(torch_int8, {4, 3, 3, 3}, false, dtype);
    expect_fused_equals_reference(torch_uint8, {3, 5, 5}, true, dtype);
    auto per_channel = torch_int8;
    per_channel.channel_dim = 0;
    expect_fused_equals_reference(per_channel, {4, 3, 3, 3}, false, dtype);
    for (auto method : {IntegerMethod::Qat, IntegerMethod::Ptq}) {
      auto weights = nni_dtype("int8", true, method);
      weights.channel_dim = 0;
      expect_fused_equals_reference(weights, {5, 7}, false, dtype);
      auto inputs = nni_dtype("uint4", false, method);
      expect_fused_equals_reference(inputs, {7}, true, dtype);
      auto channels = nni_dtype("int8", false, method);
      channels.channel_dim = 1;  // per channel of a [B, C, H, W] lane
      expect_fused_equals_reference(channels, {3, 4, 4}, true, dtype);
      // wide grids: the codes no longer fit the two-addition rounding
      expect_fused_equals_reference(nni_dtype("int32", false, method), {9}, true, dtype);
      expect_fused_equals_reference(nni_dtype("uint24", true, method), {9}, true, dtype);
    }
  }
}

TEST(IntegerFused, CudaKernelsEqualTheCpuLoops) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA);
  for (auto method : {IntegerMethod::FakeQuant, IntegerMethod::Qat, IntegerMethod::Ptq}) {
    for (int channel_dim : {-1, 0, 1}) {
      SCOPED_TRACE(std::string("method ") + to_string(method) + " channel dim " + std::to_string(channel_dim));
      auto spec = nni_dtype(channel_dim == 1 ? "uint8" : "int8", channel_dim == 0, method);
      spec.channel_dim = channel_dim;
      const bool data = channel_dim != 0;
      std::vector<int64_t> shape = {4, 5, 5};
      IntegerQuantizer cpu(spec, shape, data), cuda(spec, shape, data);
      cuda->to(gpu);
      torch::manual_seed(5);
      for (int step = 0; step < 4; ++step) {
        cpu->train(step < 3), cuda->train(step < 3);
        if (step == 1) cpu->start(), cuda->start();
        auto base = torch::randn(data ? std::vector<int64_t>{8, 4, 5, 5} : shape) * (step + 1);
        auto xc = base.clone().requires_grad_(true), xg = base.to(gpu).requires_grad_(true);
        auto yc = cpu->forward(xc), yg = cuda->forward(xg);
        ASSERT_TRUE(yc.equal(yg.cpu())) << "step " << step;
        auto g = torch::randn_like(yc);
        (yc * g).sum().backward(), (yg * g.to(gpu)).sum().backward();
        ASSERT_TRUE(xc.grad().equal(xg.grad().cpu())) << "step " << step;
        ASSERT_TRUE(cpu->min_val.equal(cuda->min_val.cpu())) << "step " << step;
        ASSERT_TRUE(cpu->max_val.equal(cuda->max_val.cpu())) << "step " << step;
      }
    }
  }
}

TEST(IntegerFused, CheckpointedRangeIsReadAgain) {
  // A range written from outside (a checkpoint, a calibration table) reaches the fused path.
  IntegerQuantizer q(nni_dtype("int8", true), std::vector<int64_t>{}, true);
  q->train();
  q->start();
  q->forward(torch::tensor({-1.f, 1.f}));
  q->eval();
  {
    torch::NoGradGuard no_grad;
    q->max_val.fill_(127.f), q->min_val.fill_(-127.f);  // scale 1
  }
  EXPECT_FLOAT_EQ(q->forward(torch::tensor({3.4f})).item<float>(), 3.f);
  q->freeze();
  q->train();
  q->forward(torch::tensor({-500.f, 500.f}));  // frozen: the observer stays
  EXPECT_EQ(q->max_val.item<float>(), 127.f);
}

}  // namespace
}  // namespace sparq::quant
