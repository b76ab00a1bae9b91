// The fixed-point quantizer against the hardware type (golden ap_fixed table), the worked examples
// of the spec (§2.5) and the training-mode gradients (§2.4).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>

#include "sparq/error.h"
#include "sparq/quant/fixed_point.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::quant;

namespace {

struct GoldenRow {
  double x, expected;
  int k, i, f;
  std::string round, overflow;
};

std::vector<GoldenRow> golden_rows() {
  std::ifstream in(sparq::test::golden_table());
  std::vector<GoldenRow> rows;
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::stringstream ss(line);
    std::string cell[7];
    for (auto& c : cell) std::getline(ss, c, ',');
    rows.push_back({std::strtod(cell[0].c_str(), nullptr), std::strtod(cell[6].c_str(), nullptr), std::stoi(cell[1]), std::stoi(cell[2]),
                    std::stoi(cell[3]), cell[4], cell[5]});
  }
  return rows;
}

TEST(FixedPoint, GoldenCopyEqualsTheWorkplaceTable) {
  // The suite reads its own copy; where the workplace's original is beside the checkout, they agree.
  std::ifstream original(sparq::test::golden_source_table());
  if (!original) GTEST_SKIP() << "no ../shared/golden here; the copy in tests/fixtures/golden is used";
  std::ifstream copy(sparq::test::golden_table());
  std::string a((std::istreambuf_iterator<char>(original)), std::istreambuf_iterator<char>());
  std::string b((std::istreambuf_iterator<char>(copy)), std::istreambuf_iterator<char>());
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b);
}

bool identical(double a, double b) { return a == b && std::signbit(a) == std::signbit(b); }

torch::Tensor scalar(double v) { return torch::tensor(v, torch::kFloat64); }

}  // namespace

TEST(FixedPoint, EveryGoldenRowBitExactInFloat64) {
  auto rows = golden_rows();
  ASSERT_EQ(rows.size(), 49728u) << sparq::test::golden_table() << " is missing or cut short";
  ASSERT_EQ(rows.size(), 49728u);
  // One tensor per format, per-tensor bits: the fused kernel and the composed-ops version.
  std::map<std::tuple<int, int, int, std::string, std::string>, std::vector<size_t>> groups;
  for (size_t r = 0; r < rows.size(); ++r)
    groups[{rows[r].k, rows[r].i, rows[r].f, rows[r].round, rows[r].overflow}].push_back(r);
  size_t checked = 0, mismatches = 0;
  for (const auto& [key, idx] : groups) {
    const auto& [k, i, f, round, overflow] = key;
    std::vector<double> xs;
    for (size_t r : idx) xs.push_back(rows[r].x);
    auto x = torch::tensor(xs, torch::kFloat64);
    auto rm = parse_round_mode(round);
    auto om = parse_overflow_mode(overflow);
    auto fused = fixed_quantize(x, scalar(k), scalar(i), scalar(f), rm, om, false);
    auto composed = fixed_quantize_composed(x, scalar(k), scalar(i), scalar(f), rm, om, false);
    for (size_t j = 0; j < idx.size(); ++j) {
      const auto& row = rows[idx[j]];
      double a = fused[j].item<double>(), b = composed[j].item<double>();
      double c = quantize_code<double>(row.x, k, i, f, rm, om) * std::ldexp(1.0, -f) + 0.0;
      if (!identical(a, row.expected) || !identical(b, row.expected) || !identical(c, row.expected)) {
        if (++mismatches < 10)
          ADD_FAILURE() << "x=" << row.x << " k=" << k << " i=" << i << " f=" << f << " " << round << " " << overflow
                        << ": expected " << row.expected << ", fused " << a << ", composed " << b << ", scalar " << c;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 49728u);
  EXPECT_EQ(mismatches, 0u);
}

TEST(FixedPoint, PerElementFormatsInOneTensor) {
  // All golden rows of one mode pair in one tensor, with per-element k, i, f.
  auto rows = golden_rows();
  ASSERT_FALSE(rows.empty()) << sparq::test::golden_table() << " is missing";
  std::vector<double> xs, ks, is, fs, expected;
  for (const auto& r : rows)
    if (r.round == "RND_CONV" && r.overflow == "WRAP")
      xs.push_back(r.x), ks.push_back(r.k), is.push_back(r.i), fs.push_back(r.f), expected.push_back(r.expected);
  ASSERT_GT(xs.size(), 1000u);
  auto q = fixed_quantize(torch::tensor(xs, torch::kFloat64), torch::tensor(ks, torch::kFloat64),
                          torch::tensor(is, torch::kFloat64), torch::tensor(fs, torch::kFloat64),
                          RoundMode::RND_CONV, OverflowMode::WRAP, false);
  EXPECT_TRUE(q.equal(torch::tensor(expected, torch::kFloat64)));
}

TEST(FixedPoint, WorkedExamplesOfTheSpecInFloat32) {
  // spec §2.5: k=1, i=2, f=3; columns 1.37 -2.6 5.0 -5.0 0.0625 -0.0625 0.1875 -0.1875 3.95 -4.2
  auto x = torch::tensor({1.37f, -2.6f, 5.0f, -5.0f, 0.0625f, -0.0625f, 0.1875f, -0.1875f, 3.95f, -4.2f});
  auto k = torch::tensor(1.f), i = torch::tensor(2.f), f = torch::tensor(3.f);
  auto check = [&](RoundMode r, OverflowMode o, bool training, std::vector<float> want) {
    auto q = fixed_quantize(x, k, i, f, r, o, training);
    EXPECT_TRUE(q.equal(torch::tensor(want))) << to_string(r) << " " << to_string(o) << " training=" << training
                                              << "\n" << q;
    auto c = fixed_quantize_composed(x, k, i, f, r, o, training);
    EXPECT_TRUE(c.equal(q)) << to_string(r) << to_string(o) << " training=" << training << "\n" << c;
  };
  using R = RoundMode;
  using O = OverflowMode;
  check(R::TRN, O::SAT, false, {1.25f, -2.625f, 3.875f, -4.f, 0.f, -0.125f, 0.125f, -0.25f, 3.875f, -4.f});
  check(R::RND, O::SAT, false, {1.375f, -2.625f, 3.875f, -4.f, 0.125f, 0.f, 0.25f, -0.125f, 3.875f, -4.f});
  check(R::RND_CONV, O::SAT, false, {1.375f, -2.625f, 3.875f, -4.f, 0.f, 0.f, 0.25f, -0.25f, 3.875f, -4.f});
  check(R::TRN_ZERO, O::SAT, false, {1.25f, -2.5f, 3.875f, -4.f, 0.f, 0.f, 0.125f, -0.125f, 3.875f, -4.f});
  check(R::RND_ZERO, O::SAT, false, {1.375f, -2.625f, 3.875f, -4.f, 0.f, 0.f, 0.125f, -0.125f, 3.875f, -4.f});
  check(R::RND_MIN_INF, O::SAT, false, {1.375f, -2.625f, 3.875f, -4.f, 0.f, -0.125f, 0.125f, -0.25f, 3.875f, -4.f});
  check(R::RND_INF, O::SAT, false, {1.375f, -2.625f, 3.875f, -4.f, 0.125f, -0.125f, 0.25f, -0.25f, 3.875f, -4.f});
  check(R::RND, O::SAT_SYM, false, {1.375f, -2.625f, 3.875f, -3.875f, 0.125f, 0.f, 0.25f, -0.125f, 3.875f, -3.875f});
  check(R::TRN, O::WRAP, false, {1.25f, -2.625f, -3.f, 3.f, 0.f, -0.125f, 0.125f, -0.25f, 3.875f, 3.75f});
  check(R::RND, O::WRAP, false, {1.375f, -2.625f, -3.f, 3.f, 0.125f, 0.f, 0.25f, -0.125f, -4.f, 3.75f});
  check(R::TRN_ZERO, O::WRAP, false, {1.25f, -2.5f, -3.f, 3.f, 0.f, 0.f, 0.125f, -0.125f, 3.875f, 3.875f});
  // Training: no wrap-around (values beyond the range pass through).
  check(R::RND, O::WRAP, true, {1.375f, -2.625f, 5.f, -5.f, 0.125f, 0.f, 0.25f, -0.125f, 4.f, -4.25f});
  // Unsigned k=0, SAT, RND: negatives to 0.
  auto q = fixed_quantize(x, torch::tensor(0.f), i, f, R::RND, O::SAT, false);
  EXPECT_TRUE(q.equal(torch::tensor({1.375f, 0.f, 3.875f, 0.f, 0.125f, 0.f, 0.25f, 0.f, 3.875f, 0.f})));
  EXPECT_FALSE(std::signbit(q[1].item<float>()));  // no negative zero
}

TEST(FixedPoint, TrainingGradientsOfTheSpec) {
  // spec §2.4, k=1, i=2, f=3, SAT, RND: dq/dx = 1 inside, 0 outside; dq/df = ln2 (c - q) + [x > hi] 2^-f ln2;
  // dq/di = [x > hi] 2^i ln2 - [x < lo] k 2^i ln2.
  const double ln2 = std::log(2.0);
  auto x = torch::tensor({1.37f, 5.0f, -5.0f, 3.875f, -4.0f}, torch::requires_grad());
  auto k = torch::tensor(1.f), i = torch::tensor(2.f, torch::requires_grad()), f = torch::tensor(3.f, torch::requires_grad());
  // Each element separately, to read per-element derivatives of i and f.
  std::vector<double> dx, di, df;
  for (int e = 0; e < 5; ++e) {
    auto xe = x.detach()[e].clone().requires_grad_(true);
    auto q = fixed_quantize(xe, k, i, f, RoundMode::RND, OverflowMode::SAT, true);
    auto g = torch::autograd::grad({q}, {xe, i, f});
    dx.push_back(g[0].item<double>()), di.push_back(g[1].item<double>()), df.push_back(g[2].item<double>());
  }
  EXPECT_EQ(dx, (std::vector<double>{1, 0, 0, 1, 1}));  // boundaries 3.875 and -4 are inside
  EXPECT_NEAR(df[0], ln2 * (1.37 - 1.375), 1e-6);
  EXPECT_NEAR(df[1], 0.125 * ln2, 1e-6);
  EXPECT_NEAR(df[2], 0.0, 1e-6);
  EXPECT_NEAR(di[0], 0.0, 1e-6);
  EXPECT_NEAR(di[1], 4 * ln2, 1e-6);
  EXPECT_NEAR(di[2], -4 * ln2, 1e-6);
  // The fused path (bits without gradient) gives the same input gradient, in one pass.
  auto q = fixed_quantize(x, k, i.detach(), f.detach(), RoundMode::RND, OverflowMode::SAT, true);
  q.sum().backward();
  EXPECT_TRUE(x.grad().equal(torch::tensor({1.f, 0.f, 0.f, 1.f, 1.f})));
  // WRAP in training: straight through everywhere, dq/df = ln2 (x - q).
  auto xw = torch::tensor({5.0f}, torch::requires_grad());
  auto fw = torch::tensor(3.f, torch::requires_grad());
  auto qw = fixed_quantize(xw, k, i, fw, RoundMode::RND, OverflowMode::WRAP, true);
  auto gw = torch::autograd::grad({qw.sum()}, {xw, fw});
  EXPECT_EQ(gw[0].item<float>(), 1.f);
  EXPECT_NEAR(gw[1].item<float>(), 0.0, 1e-6);  // 5.0 is on the grid
}

TEST(FixedPoint, PerChannelBitsBroadcast) {
  // Two output channels with (i, f) = (0, 7) and (2, 5): spec §2.6 worked rows.
  auto w = torch::tensor({{0.3f, -0.7f, 0.05f}, {2.5f, -3.2f, 0.1f}});
  auto i = torch::tensor({{0.f}, {2.f}}), f = torch::tensor({{7.f}, {5.f}});
  auto q = fixed_quantize(w, torch::tensor(1.f), i, f, RoundMode::RND, OverflowMode::SAT, false);
  EXPECT_TRUE(q.equal(torch::tensor({{0.296875f, -0.703125f, 0.046875f}, {2.5f, -3.1875f, 0.09375f}})));
  EXPECT_THROW(fixed_quantize(w, torch::tensor(1.f), torch::zeros({3, 1}), f, RoundMode::RND, OverflowMode::SAT, false),
               Error);
}

TEST(FixedPoint, FormatValidationAndNames) {
  FixedFormat fmt{1, 2, 5, RoundMode::RND, OverflowMode::SAT};
  EXPECT_EQ(fmt.type_name(), "ap_fixed<8,3,AP_RND,AP_SAT>");
  EXPECT_EQ(fmt.min_value(), -4.0);
  EXPECT_EQ(fmt.max_value(), 3.96875);
  FixedFormat u{0, 4, -2, RoundMode::TRN, OverflowMode::WRAP};
  EXPECT_EQ(u.type_name(), "ap_ufixed<2,4,AP_TRN,AP_WRAP>");
  EXPECT_THROW((FixedFormat{2, 1, 1, RoundMode::RND, OverflowMode::SAT}.validate()), Error);
  EXPECT_THROW((FixedFormat{1, -3, 1, RoundMode::RND, OverflowMode::SAT}.validate()), Error);
  EXPECT_THROW((FixedFormat{0, 2, 2, RoundMode::RND, OverflowMode::WRAP_SM}.validate()), Error);
  EXPECT_EQ(parse_round_mode("ap_rnd_conv"), RoundMode::RND_CONV);
  EXPECT_THROW(parse_overflow_mode("CLIP"), Error);
}

TEST(FixedPointCuda, GoldenRowsOnTheGpuEqualTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto rows = golden_rows();
  ASSERT_FALSE(rows.empty()) << sparq::test::golden_table() << " is missing";
  std::map<std::tuple<int, int, int, std::string, std::string>, std::vector<size_t>> groups;
  for (size_t r = 0; r < rows.size(); ++r)
    groups[{rows[r].k, rows[r].i, rows[r].f, rows[r].round, rows[r].overflow}].push_back(r);
  size_t mismatches = 0;
  for (const auto& [key, idx] : groups) {
    const auto& [k, i, f, round, overflow] = key;
    std::vector<double> xs, expected;
    for (size_t r : idx) xs.push_back(rows[r].x), expected.push_back(rows[r].expected);
    auto x = torch::tensor(xs, torch::kFloat64).to(torch::kCUDA);
    auto want = torch::tensor(expected, torch::kFloat64);
    // Bits on the device: LibTorch ops; bits on the host: the fused CUDA kernel (where it applies).
    auto composed = fixed_quantize(x, scalar(k).cuda(), scalar(i).cuda(), scalar(f).cuda(), parse_round_mode(round),
                                   parse_overflow_mode(overflow), false);
    auto fused = fixed_quantize(x, scalar(k), scalar(i), scalar(f), parse_round_mode(round),
                                parse_overflow_mode(overflow), false);
    mismatches += (composed.cpu() != want).sum().item<int64_t>() + (fused.cpu() != want).sum().item<int64_t>();
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(FixedPointCuda, TrainingForwardAndBackwardEqualTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::manual_seed(0);
  auto x = torch::randn({4096}) * 5;
  for (int r = 0; r < 7; ++r)
    for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP, OverflowMode::WRAP_SM}) {
      auto run = [&](torch::Device d, torch::Device bits) {
        auto xd = x.detach().to(d).clone().requires_grad_(true);
        auto q = fixed_quantize(xd, torch::tensor(1.f, bits), torch::tensor(2.f, bits), torch::tensor(3.f, bits),
                                static_cast<RoundMode>(r), o, true);
        (q * q).sum().backward();
        return std::make_pair(q.detach().cpu(), xd.grad().cpu());
      };
      auto [q_cpu, g_cpu] = run(torch::kCPU, torch::kCPU);
      for (auto bits_device : {torch::Device(torch::kCUDA), torch::Device(torch::kCPU)}) {  // composed, fused
        auto [q_gpu, g_gpu] = run(torch::kCUDA, bits_device);
        EXPECT_TRUE(q_cpu.equal(q_gpu)) << to_string(static_cast<RoundMode>(r)) << " " << to_string(o);
        EXPECT_TRUE(g_cpu.equal(g_gpu)) << to_string(static_cast<RoundMode>(r)) << " " << to_string(o);
      }
    }
}
