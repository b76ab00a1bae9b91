// The global budget (spec §2.3.7) that PDP and Wanda share.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(Budget, WorkedExampleSplitsTheGlobalTarget) {
  auto a = torch::cat({torch::full({256}, 0.001f), torch::ones({256})}).view({32, 16});
  auto b = torch::linspace(0.01, 0.99, 1024).view({32, 32});
  auto budgets = prune::layer_budgets({a, b}, 0.75);
  EXPECT_DOUBLE_EQ(budgets[0], 0.5);
  EXPECT_DOUBLE_EQ(budgets[1], static_cast<double>(895.0f / 1024.0f));
  // Kept weights over both layers: 256 + 129 = 385 of 1536, a keep ratio of about 1 - 0.75.
  double kept = (1 - budgets[0]) * 512 + (1 - budgets[1]) * 1024;
  EXPECT_NEAR(kept / 1536, 0.2507, 1e-4);
  auto zero = prune::layer_budgets({a, b}, 0.0);
  EXPECT_EQ(zero, (std::vector<double>{0.0, 0.0}));
}
