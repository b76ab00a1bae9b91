#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/models/graph.h"

using namespace sparq;
using namespace sparq::models;

TEST(Graph, LenetForwardShapesAndNames) {
  Graph g(zoo_spec("lenet", {1, 28, 28}, 10));
  auto out = g->forward(torch::zeros({4, 1, 28, 28}));
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{4, 10}));
  EXPECT_EQ(g->node("fc1").out_shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(g->node("pool2").out_shape, (std::vector<int64_t>{16, 7, 7}));
  auto params = g->named_parameters();
  EXPECT_TRUE(params.find("conv1.weight") != nullptr);
  EXPECT_EQ(params["fc1.weight"].sizes().vec(), (std::vector<int64_t>{64, 784}));
}
