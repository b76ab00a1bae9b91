// Activation pruning (spec §2.6): the worked example window.
#include "prune/method_test_util.h"

using namespace sparq;
using namespace sparq::test;

TEST(ActivationPruning, WorkedExampleWindow) {
  auto ap = prune::make_method(spec("activation_pruning", {{"t_delta", int64_t{2}}, {"threshold", 0.3},
                                                           {"t_start_collecting_batch", int64_t{0}}}),
                               {3, 4}, LayerKind::Linear);
  auto w = torch::ones({3, 4});
  ap->train();
  ap->post_pretrain();
  // Outputs positive in 50%, 10%, 100% of a batch of 10, then 30%, 20%, 0%.
  auto batch = [](std::vector<int> positives) {
    auto y = -torch::ones({10, 3});
    for (int c = 0; c < 3; ++c) y.narrow(1, c, 1).narrow(0, 0, positives[c]).fill_(1.0);
    return y;
  };
  ap->collect_output(batch({5, 1, 10}));
  ap->collect_output(batch({3, 2, 0}));
  expect_near(values(ap->apply(w)), std::vector<float>(12, 1.0f), 0);  // live only after the epoch
  ap->post_epoch(0, 1);
  expect_near(values(buffer(*ap, "mask")), {1, 0, 1}, 0);  // means 0.4, 0.15, 0.5 against 0.3
  expect_near(values(ap->apply(w).sum(1)), {4, 0, 4}, 0);
  EXPECT_EQ(buffer(*ap, "mask").sizes(), (std::vector<int64_t>{3, 1}));
}
