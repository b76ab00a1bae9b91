// The integer quantizer's NNI methods on the spec's formulas (nni-config §3.1-3.4): dtype ranges,
// scale and zero point (symmetric, affine, narrow, uint, the range widened to contain 0, the eps
// floor), per-channel shapes, QAT's EMA after 3 forwards and its bypass, PTQ calibration, LSQ's
// and LSQ+'s gradients on hand examples, DoReFa and BNN.
#include <gtest/gtest.h>
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
