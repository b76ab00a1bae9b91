// Speedup and the channel dependencies it relies on (spec nni-config §2.9, §5): residual adds
// found in the Graph, and the shrunk model computing what the masked one computes.
#include <gtest/gtest.h>

#include "../prune/nni_test_util.h"
#include "sparq/compress/speedup.h"
#include "sparq/models/dependency.h"

namespace sparq {
namespace {

/// The zoo ResNet with stages of 8 and 16 channels on 1x12x12 (weights seeded).
models::GraphSpec tiny_resnet() {
  torch::manual_seed(0);
  models::ZooOptions o;
  o.widths = {8, 16};
  return models::zoo_spec("resnet", {1, 12, 12}, 10, o);
}

/// Config-list entries that align every BatchNorm that reads a Conv2d to that conv's filters.
std::string batchnorms_follow_their_convs(const models::GraphSpec& spec) {
  std::string out;
  for (size_t i = 1; i < spec.nodes.size(); ++i) {
    const auto& bn = spec.nodes[i];
    const auto& conv = bn.inputs.empty() ? spec.nodes[i - 1].name : bn.inputs[0];
    auto source = std::find_if(spec.nodes.begin(), spec.nodes.end(), [&](const auto& n) { return n.name == conv; });
    if (bn.op != "BatchNorm2d" || source->op != "Conv2d") continue;
    out += "  - {op_names: [" + bn.name + "], target_settings: {weight: {align: {module_name: " + conv +
           ", target_name: weight, dims: [0]}, granularity: out_channel}}}\n";
  }
  return out;
}


TEST(NniDependency, ResidualAddsShareChannelsInTinyResnet) {
  auto spec = tiny_resnet();
  models::Graph g(spec);
  auto sets = models::channel_dependency_sets(g);
  ASSERT_EQ(sets.size(), 2u);
  EXPECT_EQ(sets[0], (std::vector<std::string>{"conv1", "layer1.0.conv2"}));  // stem + the block's last conv
  EXPECT_EQ(sets[1], (std::vector<std::string>{"layer2.0.conv2", "layer2.0.downsample.0"}));
  auto s = test::nni_setup(spec, {}, R"(
pruner: {type: L1NormPruner}
dependency_groups: auto
config_list:
  - {op_types: [Conv2d], sparse_ratio: 0.5}
)");
  for (const auto& set : sets) {
    auto first = s.rows(set[0]);
    EXPECT_EQ(std::count(first.begin(), first.end(), 0.f), static_cast<long>(first.size() / 2));
    for (const auto& name : set) EXPECT_EQ(s.rows(name), first) << name;  // the same channels on both sides
  }
  // Without the detection each conv keeps its own largest filters.
  auto own = test::nni_setup(spec, {}, "pruner: {type: L1NormPruner}\nconfig_list:\n  - {op_types: [Conv2d], sparse_ratio: 0.5}");
  EXPECT_NE(own.rows("layer2.0.conv2"), own.rows("layer2.0.downsample.0"));
}


TEST(NniSpeedup, TheShrunkResnetComputesWhatTheMaskedOneComputes) {
  auto spec = tiny_resnet();
  // Filters pruned with shared channels across the residual adds; each BN follows its conv.
  const std::string list = "  - {op_types: [Conv2d], sparse_ratio: 0.5}\n" + batchnorms_follow_their_convs(spec);
  auto s = test::nni_setup(spec, {}, "pruner: {type: L1NormPruner}\ndependency_groups: auto\nconfig_list:\n" + list);
  s.graph->eval();
  SpeedupReport report;
  auto small = speedup(s.graph, &report);
  small->eval();
  auto x = torch::randn({16, 1, 12, 12});
  torch::NoGradGuard no_grad;
  auto want = s.graph->forward(x), got = small->forward(x);
  EXPECT_LT((want - got).abs().max().item<float>(), 1e-5);
  EXPECT_EQ(small->node("conv1").out_shape[0], 4);
  EXPECT_EQ(small->node("layer1.0.conv1").out_shape[0], 4);
  EXPECT_EQ(small->node("layer2.0.downsample.0").out_shape[0], 8);
  EXPECT_EQ(small->node("fc").out_shape[0], 10);  // the outputs stay
  EXPECT_LT(report.parameters_after, report.parameters_before / 2);
  EXPECT_EQ(report.changes.size(), 12u);  // six convs and their six BatchNorms halved
  // Without a mask on a BN whose shift is not zero, the pruned channels leave it as constants
  // that the next layers see: those channels stay.
  auto unaligned = test::nni_setup(spec, {{"bn1", {torch::ones({8}), torch::full({8}, 0.1)}}},
                                   "pruner: {type: L1NormPruner}\ndependency_groups: auto\nconfig_list:\n"
                                             "  - {op_types: [Conv2d], sparse_ratio: 0.5}\n");
  unaligned.graph->eval();
  auto same = speedup(unaligned.graph);
  EXPECT_EQ(same->node("conv1").out_shape[0], 8);
  same->eval();
  EXPECT_LT((unaligned.graph->forward(x) - same->forward(x)).abs().max().item<float>(), 1e-5);
}


TEST(NniSpeedup, SpecExampleShrinksBothBranchesOfTheAdd) {
  // Spec §7.2 "Speedup": conv1 -> bn1 -> relu -> (conv2 + conv3) -> flatten -> fc, both convs in
  // one dependency group. NNI: conv1 1->2, bn1 2, conv2/conv3 2->4, fc 64->5; sparq keeps the
  // model's outputs (fc stays 10 wide) and removes the rest the same way.
  torch::manual_seed(0);
  auto spec = models::parse_model_yaml(R"(
input_shape: [1, 8, 8]
layers:
  - {name: conv1, op: Conv2d, out_channels: 4, kernel_size: 3}
  - {name: bn1, op: BatchNorm2d}
  - {name: relu, op: ReLU}
  - {name: conv2, op: Conv2d, out_channels: 8, kernel_size: 3}
  - {name: conv3, op: Conv2d, out_channels: 8, kernel_size: 3, inputs: [relu]}
  - {name: add, op: add, inputs: [conv2, conv3]}
  - {name: flatten, op: flatten}
  - {name: fc, op: Linear, out_features: 10}
)", "speedup.yaml");
  auto s = test::nni_setup(spec, {}, "pruner: {type: L1NormPruner}\ndependency_groups: auto\nconfig_list:\n"
                                     "  - {op_types: [Conv2d], sparse_ratio: 0.5}\n  - {op_names: [fc], sparse_ratio: 0.5}\n");
  EXPECT_EQ(s.rows("conv2"), s.rows("conv3"));
  s.graph->eval();
  auto small = speedup(s.graph);
  small->eval();
  EXPECT_EQ(small->node("conv1").out_shape[0], 2);
  EXPECT_EQ(small->node("bn1").out_shape[0], 2);  // an untrained BN maps zero to zero
  EXPECT_EQ(small->node("conv2").out_shape[0], 4);
  EXPECT_EQ(small->node("conv3").out_shape[0], 4);
  EXPECT_EQ(small->node("flatten").out_shape[0], 64);
  EXPECT_EQ(small->node("fc").out_shape[0], 10);
  torch::NoGradGuard no_grad;
  auto x = torch::randn({2, 1, 8, 8});
  EXPECT_LT((s.graph->forward(x) - small->forward(x)).abs().max().item<float>(), 1e-5);
}

}  // namespace
}  // namespace sparq
