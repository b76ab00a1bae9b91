// FITCompress's search (spec pquantml-pruning-fitcompress-hpo §3): curve, quantization, rate, the
// mini-trace's first expansions, optimality against brute force, and config errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>

#include "sparq/compress/compress.h"
#include "sparq/config/pquant.h"
#include "sparq/error.h"
#include "sparq/fit/fitcompress.h"
#include "sparq/yaml/reader.h"
#include "test_util.h"

using namespace sparq;

namespace {
std::vector<fit::SearchLayer> uniform_layers(std::vector<int64_t> sizes, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<fit::SearchLayer> layers;
  for (size_t l = 0; l < sizes.size(); ++l)
    layers.push_back({"l" + std::to_string(l), torch::rand({sizes[l]}) * 1.8 - 0.9});
  return layers;
}
std::vector<torch::Tensor> ones_like_all(const std::vector<torch::Tensor>& theta) {
  std::vector<torch::Tensor> out;
  for (const auto& t : theta) out.push_back(torch::ones_like(t));
  return out;
}
}  // namespace

TEST(FitCompress, PruningCurveIsOneMinusLogspace) {
  auto c = fit::pruning_curve(0, -3, 40);
  ASSERT_EQ(c.size(), 40u);
  EXPECT_DOUBLE_EQ(c[0], 0.0);
  EXPECT_NEAR(c[1], 0.1623, 1e-4);
  EXPECT_NEAR(c[2], 0.2983, 1e-4);
  EXPECT_NEAR(c[4], 0.5076, 1e-4);
  EXPECT_NEAR(c[39], 0.999, 1e-12);
  EXPECT_NEAR(fit::pruning_curve(0, -2, 40)[1], 0.1114, 1e-4);
}

TEST(FitCompress, SearchQuantizationIsSignedRndSat) {
  auto w = torch::tensor({0.3, -0.9, 2.5, 0.26}, torch::kFloat32);
  auto q = fit::quantize_for_search(w, 3);  // max 2.5: i = 2, f = max(1, 3 - 2) = 1
  EXPECT_EQ(q.int_bits, 2);
  EXPECT_EQ(q.frac_bits, 1);
  auto expected = torch::tensor({0.5, -1.0, 2.5, 0.5}, torch::kFloat32);  // floor(x*2 + 0.5)/2
  EXPECT_TRUE(torch::equal(q.weight, expected)) << q.weight;
  auto sat = fit::quantize_for_search(torch::tensor({0.99f, -0.999f}), 2);  // i = 0, f = 2: [-1, 0.75]
  EXPECT_FLOAT_EQ(sat.weight[0].item<float>(), 0.75f);
  EXPECT_FLOAT_EQ(sat.weight[1].item<float>(), -1.0f);
}

TEST(FitCompress, RateCountsDeployedBitsOfNonZeroWeights) {
  auto a = torch::tensor({0.5f, 0.0f, 0.25f, 0.0f}), b = torch::tensor({1.0f, 2.0f});
  // layer a: 2 non-zero at 1 + 0 + 3 bits; layer b: float (31) counts 32 per non-zero weight.
  double rate = fit::compression_rate({a, b}, {0, 0}, {3, 31}, {3, 31});
  EXPECT_DOUBLE_EQ(rate, (2 * 4.0 + 2 * 32.0) / (6 * 32.0));
}

TEST(FitCompress, FitQuantitiesAreFisherWeightedSquares) {
  auto a = torch::tensor({1.0f, 2.0f}), b = torch::tensor({0.5f, 2.0f}), F = torch::tensor({4.0f, 3.0f});
  EXPECT_DOUBLE_EQ(fit::fit_between({a}, {b}, {F}), 4 * 0.25);
  EXPECT_DOUBLE_EQ(fit::self_fit({a}, {F}), 4 * 1 + 3 * 4);
}

TEST(FitCompress, MiniTraceFirstExpansions) {
  // Spec §3.11: two layers, goal 0.10, greedy, approximate, Qs = [7, 4, 3, 2], pruning on.
  auto layers = uniform_layers({1000, 1000}, 1);
  FitCompressPlan plan;
  plan.compression_goal = 0.10, plan.optimize_pruning = true;
  int64_t fisher_calls = 0;
  fit::FisherFn fisher = [&](const std::vector<torch::Tensor>& theta) { ++fisher_calls; return ones_like_all(theta); };
  auto root = fit::initial_node(layers, ones_like_all({layers[0].weight, layers[1].weight}));
  EXPECT_EQ(root.rate, 1.0);
  EXPECT_EQ(root.state, (std::vector<int64_t>{-1, -1, 0}));
  auto curve = fit::pruning_curve(plan.pruning_start, plan.pruning_end, plan.pruning_steps);
  int64_t evals = 0;
  auto children = fit::expand(root, layers, fisher, plan, curve, evals);
  ASSERT_EQ(children.size(), 3u);  // A (layer 0 at 7), B (layer 1 at 7), C (16.2% pruning)
  EXPECT_EQ(children[0].q, (std::vector<int64_t>{7, 31}));
  EXPECT_EQ(children[1].q, (std::vector<int64_t>{31, 7}));
  EXPECT_EQ(children[2].q, (std::vector<int64_t>{31, 31}));
  EXPECT_NEAR(children[2].pruning, 0.1623, 1e-4);
  EXPECT_EQ(children[2].theta[0].eq(0).sum().item<int64_t>() + children[2].theta[1].eq(0).sum().item<int64_t>(),
            static_cast<int64_t>(0.16227766 * 2000));
  EXPECT_EQ(evals, 2);  // the expanded node's Fisher (approximate) and the pruning neighbour's
  for (const auto& c : children) {
    EXPECT_GE(c.rate, plan.compression_goal);
    EXPECT_GT(c.g, 0);  // the initial weights are a copy: no aliasing, so the first steps cost FIT
    EXPECT_DOUBLE_EQ(c.d, c.g + c.f);
  }
  // A at (7, 31): one layer of 8-bit codes beside a float layer.
  EXPECT_NEAR(children[0].rate, (children[0].theta[0].count_nonzero().item<int64_t>() * 8.0 + 1000 * 32.0) / 64000, 1e-12);
  auto result = fit::search(layers, ones_like_all({layers[0].weight, layers[1].weight}), fisher, {plan});
  EXPECT_LT(result.rate, 0.10);
  EXPECT_GT(result.iterations, 1);
}

namespace {
/// Minimal path cost g over every path of the (quantization-only) state graph to a goal state,
/// with the same increments the search uses.
double brute_force(fit::SearchNode u, const std::vector<fit::SearchLayer>& layers, const fit::FisherFn& fisher,
                   const FitCompressPlan& plan) {
  if (u.rate < plan.compression_goal) return u.g;
  int64_t evals = 0;
  double best = std::numeric_limits<double>::infinity();
  for (auto& v : fit::expand(u, layers, fisher, plan, {}, evals)) best = std::min(best, brute_force(v, layers, fisher, plan));
  return best;
}
}  // namespace

TEST(FitCompress, AStarFindsTheCheapestStateUnderTheGoal) {
  auto layers = uniform_layers({40, 30, 20}, 3);
  FitCompressPlan plan;
  plan.quantization_schedule = {6, 4, 3, 2};
  plan.compression_goal = 0.12, plan.greedy_astar = false, plan.approximate = false, plan.f_lambda = 0;
  // A Fisher that depends on the weights, so costs differ by layer and state.
  fit::FisherFn fisher = [](const std::vector<torch::Tensor>& theta) {
    std::vector<torch::Tensor> out;
    for (size_t l = 0; l < theta.size(); ++l) out.push_back(theta[l].abs() * static_cast<double>(l + 1) + 0.1);
    return out;
  };
  std::vector<torch::Tensor> w;
  for (const auto& l : layers) w.push_back(l.weight);
  auto result = fit::search(layers, fisher(w), fisher, {plan});
  double best = brute_force(fit::initial_node(layers, fisher(w)), layers, fisher, plan);
  EXPECT_LT(result.rate, plan.compression_goal);
  EXPECT_NEAR(result.g, best, 1e-9);
  // Greedy search reaches the goal too, at a cost no lower than the optimum.
  plan.greedy_astar = true;
  auto greedy = fit::search(layers, fisher(w), fisher, {plan});
  EXPECT_LT(greedy.rate, plan.compression_goal);
  EXPECT_GE(greedy.g, best - 1e-9);
}

TEST(FitCompress, UnreachableGoalIsAClearError) {
  auto layers = uniform_layers({100}, 5);
  FitCompressPlan plan;
  plan.quantization_schedule = {7};
  plan.compression_goal = 0.01;
  fit::FisherFn fisher = [](const std::vector<torch::Tensor>& t) { return ones_like_all(t); };
  try {
    fit::search(layers, ones_like_all({layers[0].weight}), fisher, {plan});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("schedules are exhausted before compression_goal 0.01"), std::string::npos) << e.what();
  }
}

TEST(FitCompress, ConfigErrorsNameTheLine) {
  auto parse = [](const std::string& fc, const std::string& extra = "") {
    auto root = YAML::Load("pruning_parameters: {pruning_method: fitcompress}\n" + extra + "fitcompress_parameters:\n" + fc);
    return config::read_pquant("fc.yaml", root);
  };
  EXPECT_TRUE(parse("  enable_fitcompress: true\n  optimize_pruning: true\n").fitcompress.enabled);
  auto fails = [&](const std::string& fc, const std::string& needle, const std::string& extra = "") {
    try {
      parse(fc, extra);
      ADD_FAILURE() << "no error for " << fc;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  fails("  compression_goal: 0\n", "fc.yaml:3:");
  fails("  compression_goal: 1.0\n", "strictly between 0 and 1");
  fails("  quantization_schedule: []\n", "non-empty list");
  fails("  quantization_schedule: [4, 0]\n", "out of range");
  fails("  pruning_schedule: {start: 0, end: -2, steps: 0}\n", "steps");
  fails("  pruning_schedule: {start: -3, end: 0}\n", "must be below start");
  fails("  enable_fitcompress: true\n  optimize_pruning: false\n  optimize_quantization: false\n",
        "optimize_quantization or optimize_pruning");
  fails("  enable_fitcompress: true\n", "HGQ", "quantization_parameters: {use_hgq: true}\n");
}

TEST(FitCompress, EmpiricalFisherOfALinearModelIsTheClosedForm) {
  // y = W x with MSE: dloss/dW = (2/B) sum_b (W x_b - t_b) x_b; every batch is the same B rows (a
  // ragged tail of 3 is skipped), so F = B * g^2.
  auto spec = models::parse_model_yaml(R"(
input_shape: [2]
layers:
  - {name: fc, op: Linear, out_features: 1, bias: false}
)", "toy.yaml");
  models::Graph model(spec);
  compress(model, test::pquant_plan("quantization_parameters: {enable_quantization: false}"));
  const int64_t B = 4;
  auto x = torch::tensor({1.0f, 2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 0.0f, 1.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f}).view({7, 2});
  auto t = torch::tensor({1.0f, -1.0f, 0.5f, 2.0f, 7.0f, 7.0f, 7.0f}).view({7, 1});
  auto data = data::make_dataset(x, t, data::Task::Regression, 0, "toy");
  train::TrainOptions options;
  options.loss = "mse";
  train::Trainer trainer(model, options);
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc"));
  {
    torch::NoGradGuard no_grad;
    layer->weight.copy_(torch::tensor({{0.5f, -0.25f}}));
  }
  auto W = torch::tensor({{0.5, -0.25}}, torch::kFloat64);
  auto xb = x.slice(0, 0, B).to(torch::kFloat64), tb = t.slice(0, 0, B).to(torch::kFloat64);
  auto g = (2.0 / B) * ((xb.matmul(W.t()) - tb).t().matmul(xb));
  auto F = fit::empirical_fisher(trainer, {"fc"}, data, B, 10);
  ASSERT_EQ(F.size(), 1u);
  EXPECT_TRUE(torch::allclose(F[0].to(torch::kFloat64), B * g.square(), 1e-5, 1e-6)) << F[0] << B * g.square();
  EXPECT_THROW(fit::empirical_fisher(trainer, {"fc"}, data, 8), Error);  // 7 rows: no batch of 8
}
