// Graph construction, PyTorch-style naming, forward of every zoo model, model-YAML errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/models/graph.h"
#include "test_util.h"

using namespace sparq;
using namespace sparq::models;

using sparq::test::error_of;

TEST(Graph, LenetForwardShapesAndNames) {
  Graph g(zoo_spec("lenet", {1, 28, 28}, 10));
  auto out = g->forward(torch::zeros({4, 1, 28, 28}));
  EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{4, 10}));
  EXPECT_EQ(g->node("fc1").out_shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(g->node("pool2").out_shape, (std::vector<int64_t>{16, 7, 7}));
  auto params = g->named_parameters();
  EXPECT_TRUE(params.find("conv1.weight") != nullptr);
  EXPECT_EQ(params["fc1.weight"].sizes().vec(), (std::vector<int64_t>{64, 784}));
  EXPECT_TRUE(g->named_buffers().find("bn1.running_mean") != nullptr);
  int64_t total = 0;
  for (const auto& n : g->nodes()) total += parameter_count(n);
  EXPECT_EQ(total, 52186);  // 80 + 16 + 1168 + 32 + 50240 + 650
}

TEST(Graph, EveryZooModelRuns) {
  struct Case { std::string name; std::vector<int64_t> shape; int64_t classes, params; };
  // Parameter counts by hand: jet_tagger 16*64+64 + 64*32+32 + 32*32+32 + 32*5+5 = 4389;
  // mlp 784-256-128-10: 200960 + 32896 + 1290 = 235146.
  for (const auto& c : {Case{"jet_tagger", {16}, 5, 4389}, Case{"mlp", {1, 28, 28}, 10, 235146},
                        Case{"lenet", {1, 28, 28}, 10, 52186}, Case{"resnet", {3, 32, 32}, 10, -1},
                        Case{"resnet", {1, 28, 28}, 10, -1}}) {
    Graph g(zoo_spec(c.name, c.shape, c.classes));
    auto shape = c.shape;
    shape.insert(shape.begin(), 3);
    auto out = g->forward(torch::randn(shape));
    EXPECT_EQ(out.sizes().vec(), (std::vector<int64_t>{3, c.classes})) << c.name;
    int64_t total = 0;
    for (const auto& p : g->parameters()) total += p.numel();
    if (c.params > 0) {
      EXPECT_EQ(total, c.params) << c.name;
    }
  }
}

TEST(Graph, ResnetHasResidualAddsAndTorchvisionNames) {
  Graph g(zoo_spec("resnet", {1, 28, 28}, 10));
  const Node& add = g->node("layer2.0.add");
  EXPECT_EQ(add.op, "add");
  ASSERT_EQ(add.inputs.size(), 2u);
  EXPECT_EQ(g->nodes()[add.inputs[0]].name, "layer2.0.bn2");
  EXPECT_EQ(g->nodes()[add.inputs[1]].name, "layer2.0.downsample.1");
  EXPECT_EQ(g->nodes()[g->node("layer1.0.add").inputs[1]].name, "relu");  // identity shortcut
  EXPECT_EQ(g->node("layer3.0.relu2").out_shape, (std::vector<int64_t>{64, 7, 7}));
  EXPECT_TRUE(g->named_parameters().find("layer2.0.downsample.0.weight") != nullptr);
}

TEST(Graph, ForwardUsesAReplacedNode) {
  Graph g(zoo_spec("jet_tagger", {16}, 5));
  auto x = torch::randn({2, 16});
  auto before = g->forward(x);
  // A Linear with zero weights and bias in place of the output layer makes the output zero.
  torch::nn::Linear zero(32, 5);
  torch::NoGradGuard no_grad;
  zero->weight.zero_();
  zero->bias.zero_();
  g->replace("fc4", torch::nn::AnyModule(zero), "Linear");
  EXPECT_TRUE(g->forward(x).eq(0).all().item<bool>());
  EXPECT_FALSE(before.eq(0).all().item<bool>());
  EXPECT_TRUE(g->named_parameters()["fc4.weight"].eq(0).all().item<bool>());
}

TEST(ModelYaml, BuildsAGraphWithResidualEdges) {
  auto spec = parse_model_yaml(R"(
name: tiny
input_shape: [1, 8, 8]
layers:
  - {name: features.0, op: Conv2d, out_channels: 4, kernel_size: 3, padding: 1}
  - {name: features.1, op: ReLU}
  - {name: features.2, op: Conv2D, out_channels: 4, kernel_size: [3, 3], padding: 1}
  - {name: res, op: add, inputs: [features.2, features.1]}
  - {op: flatten}
  - {name: head, op: Dense, out_features: 3}
)", "tiny.yaml");
  Graph g(spec);
  EXPECT_EQ(g->node("features.2").op, "Conv2d");  // Keras alias
  EXPECT_EQ(g->nodes()[4].name, "4");              // unnamed layers get their index
  EXPECT_EQ(g->node("head").out_shape, (std::vector<int64_t>{3}));
  EXPECT_TRUE(g->named_parameters().find("features.0.weight") != nullptr);
  EXPECT_EQ(g->forward(torch::randn({2, 1, 8, 8})).sizes().vec(), (std::vector<int64_t>{2, 3}));
}

TEST(ModelYaml, ErrorsNameFilePositionAndNode) {
  auto build = [](const std::string& layers) {
    Graph g(parse_model_yaml("input_shape: [1, 8, 8]\nlayers:\n" + layers, "m.yaml"));
  };
  // The known ops come from the registry (this test binary also registers one of its own).
  auto unknown = error_of<ConfigError>([&] { build("  - {op: Conv3d, out_channels: 2}\n"); });
  EXPECT_EQ(unknown.rfind("m.yaml:3:10: layers[0].op: unknown op 'Conv3d', did you mean 'Conv1d'? (known ops: AvgPool1d, "
                          "AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, Dropout, GELU, Hardtanh, Identity, "
                          "LeakyReLU, Linear, MaxPool1d, MaxPool2d, ReLU, Sigmoid, Softmax, ",
                          0),
            0u)
      << unknown;
  EXPECT_NE(unknown.find("add, concat, flatten, reshape)"), std::string::npos) << unknown;
  EXPECT_NE(error_of<ConfigError>([&] { build("  - {op: Conv2d, out_chanels: 2, kernel_size: 3}\n"); })
                .find("m.yaml:3:18: layers[0] (Conv2d): unknown key 'out_chanels', did you mean 'out_channels'?"),
            std::string::npos);
  EXPECT_EQ(error_of<ConfigError>([&] { build("  - {op: Conv2d, out_channels: two, kernel_size: 3}\n"); }),
            "m.yaml:3:32: layers[0].out_channels: expected an integer, got 'two'");
  EXPECT_EQ(error_of<ConfigError>([&] { build("  - {op: Conv2d, kernel_size: 3}\n"); }),
            "m.yaml:3:5: layers[0] (Conv2d).out_channels: is required");
  // Shape errors are reported with the node name, not a LibTorch trace.
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {name: fc, op: Linear, in_features: 10, out_features: 2}\n"); }),
            "m.yaml:3:5: node 'fc' (Linear): in_features: is 10 but the input shape [1, 8, 8] gives 8");
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {op: flatten}\n  - {name: c, op: Conv2d, out_channels: 2, kernel_size: 3}\n"); }),
            "m.yaml:4:5: node 'c' (Conv2d): expects input samples shaped [channels, height, width], got [64]");
  EXPECT_EQ(error_of<ModelError>([&] {
              build("  - {name: a, op: Conv2d, out_channels: 2, kernel_size: 3}\n"
                    "  - {name: s, op: add, inputs: [a, input]}\n");
            }),
            "m.yaml:4:5: node 's' (add): input shapes differ: 'a' gives [2, 6, 6], 'input' gives [1, 8, 8]");
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {name: p, op: AvgPool2d, kernel_size: 9}\n"); })
                .substr(0, 46),
            "m.yaml:3:5: node 'p' (AvgPool2d): input [1, 8,");
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {name: r, op: ReLU, inputs: [nowhere]}\n"); }),
            "m.yaml:3:5: node 'r': input 'nowhere' is not an earlier node");
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {name: r, op: ReLU}\n  - {name: r, op: ReLU}\n"); }),
            "m.yaml:4:5: node name 'r' is used twice");
  EXPECT_EQ(error_of<ModelError>([&] { build("  - {name: r, op: reshape, shape: [5, 5]}\n"); }),
            "m.yaml:3:5: node 'r' (reshape): cannot reshape [1, 8, 8] to [5, 5]");
  EXPECT_EQ(error_of<ModelError>([&] { Graph g(parse_model_yaml("layers:\n  - {op: ReLU}\n", "n.yaml")); }),
            "model 'model': the input shape is unknown");
}
