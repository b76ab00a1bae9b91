// Spec nni-config §7.2: every verified example of fixtures P and C, from the config list (as a
// job section) through resolution and the pruner to the masks on the layers. Where sparq fixes
// an upstream quirk (P12, C5, C6 with bias, C9) the test asserts the corrected result.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "nni_test_util.h"

namespace sparq {
namespace {

using test::fixture_c_model;
using test::fixture_c_weights;
using test::fixture_p_model;
using test::fixture_p_weights;
using V = std::vector<float>;

test::NniSetup p(const std::string& pruner, const std::string& list) {
  return test::nni_setup(fixture_p_model(), fixture_p_weights(), "pruner: {type: " + pruner + "}\nconfig_list:\n" + list);
}
test::NniSetup c(const std::string& pruner, const std::string& list) {
  return test::nni_setup(fixture_c_model(), fixture_c_weights(), "pruner: {type: " + pruner + "}\nconfig_list:\n" + list);
}

TEST(NniMasks, P1ToP4NormPrunersKeepRowsByTheirMetric) {
  auto p1 = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5}");
  EXPECT_EQ(p1.rows("fc1"), (V{1, 1, 0, 0}));  // row L1 4, 8, 2, 3.3
  EXPECT_EQ(p1.mask("fc1", "bias"), (V{1, 1, 0, 0}));
  EXPECT_EQ(p1.mask("fc2", "weight"), V{});  // not selected: no mask at all
  auto p2 = p("L2NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5}");
  EXPECT_EQ(p2.rows("fc1"), (V{0, 1, 0, 1}));  // row L2 2, 4, 1, 3.005
  EXPECT_EQ(p2.mask("fc1", "bias"), (V{0, 1, 0, 1}));
  EXPECT_EQ(p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.6}").rows("fc1"), (V{1, 1, 0, 0}));  // floor(2.4)
  EXPECT_EQ(p("FPGMPruner", "  - {op_names: [fc1], sparse_ratio: 0.5}").rows("fc1"), (V{1, 1, 0, 0}));
}

TEST(NniMasks, P5ToP9LevelAndThresholds) {
  auto p5 = p("LevelPruner", "  - {op_names: [fc2], sparse_ratio: 0.5}");
  EXPECT_EQ(p5.mask("fc2", "weight"), (V{0, 1, 0, 0, 1, 0, 1, 1}));
  EXPECT_EQ(p5.mask("fc2", "bias"), (V{1, 1}));
  const V p6_mask{1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0};
  auto p6 = p("LevelPruner", "  - {op_names: [fc1], sparse_threshold: 0.9}");
  EXPECT_EQ(p6.mask("fc1", "weight"), p6_mask);
  EXPECT_EQ(p6.mask("fc1", "bias"), (V{1, 1, 0, 1}));
  EXPECT_EQ(p("LevelPruner", "  - {op_names: [fc1], sparse_threshold: 0.9, max_sparse_ratio: 0.5}").mask("fc1", "weight"),
            p6_mask);  // 7/16 masked <= 0.5
  auto p8 = p("L1NormPruner", "  - {op_names: [fc1], sparse_threshold: 5.0}");
  EXPECT_EQ(p8.rows("fc1"), (V{0, 1, 0, 0}));
  EXPECT_EQ(p8.mask("fc1", "bias"), (V{0, 1, 0, 0}));
  EXPECT_EQ(p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.75, max_sparse_ratio: 0.5}").rows("fc1"), (V{1, 1, 0, 0}));
  EXPECT_EQ(p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.25, min_sparse_ratio: 0.5}").rows("fc1"), (V{1, 1, 0, 0}));
}

TEST(NniMasks, P10ToP12GlobalGroups) {
  auto p10 = p("L1NormPruner", "  - {op_names: [fc1, fc2], sparse_ratio: 0.5, global_group_id: g}");
  EXPECT_EQ(p10.rows("fc1"), (V{1, 1, 0, 1}));
  EXPECT_EQ(p10.rows("fc2"), (V{0, 0}));  // a member can be pruned entirely
  EXPECT_EQ(p10.mask("fc2", "bias"), (V{0, 0}));
  auto p11 = p("LevelPruner",
               "  - {op_names: [fc1], sparse_ratio: 0.5, global_group_id: 1}\n"
               "  - {op_names: [fc2], sparse_ratio: 0.5, global_group_id: 1}");
  EXPECT_EQ(p11.mask("fc1", "weight"), (V{1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0}));
  EXPECT_EQ(p11.mask("fc2", "weight"), (V{0, 1, 0, 0, 1, 0, 0, 1}));  // 12 of 24 masked
  // P12: the group budget (12) reaches the members' caps (4 + 8): each member goes to its own
  // cap. NNI gives the uncapped fc2 ratio 0 (quirk 6, 4 of 12 pruned); sparq gives it 1.0.
  auto p12 = p("LevelPruner",
               "  - {op_names: [fc1], sparse_ratio: 0.5, global_group_id: 1, max_sparse_ratio: 0.3}\n"
               "  - {op_names: [fc2], sparse_ratio: 0.5, global_group_id: 1}");
  auto zeros = [](const V& v) { return std::count(v.begin(), v.end(), 0.f); };
  EXPECT_EQ(zeros(p12.mask("fc1", "weight")), 4);
  EXPECT_EQ(zeros(p12.mask("fc2", "weight")), 8);
  // A string id and an integer id are different groups: 1 and '1' prune separately.
  auto two = p("LevelPruner",
               "  - {op_names: [fc1], sparse_ratio: 0.5, global_group_id: 1}\n"
               "  - {op_names: [fc2], sparse_ratio: 0.5, global_group_id: '1'}");
  EXPECT_EQ(zeros(two.mask("fc1", "weight")), 8);
  EXPECT_EQ(zeros(two.mask("fc2", "weight")), 4);
}

TEST(NniMasks, P13P14P20DependencyGroups) {
  auto p13 = p("L1NormPruner",
               "  - {op_names: [fc1], sparse_ratio: 0.5, granularity: in_channel, dependency_group_id: d}\n"
               "  - {op_names: [fc2], sparse_ratio: 0.5, granularity: in_channel, dependency_group_id: d}");
  EXPECT_EQ(p13.mask("fc1", "weight"), (V{1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0}));  // mean column L1 4.1 2.4 2.3 2.175
  EXPECT_EQ(p13.mask("fc2", "weight"), (V{1, 1, 0, 0, 1, 1, 0, 0}));
  EXPECT_EQ(p13.mask("fc1", "bias"), (V{1, 1, 1, 1}));
  auto p14 = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5, dependency_group_id: d, internal_metric_block: 2}");
  EXPECT_EQ(p14.rows("fc1"), (V{0, 1, 0, 1}));  // one pruned in each half
  auto p20 = p("LevelPruner", "  - {op_names: [fc2], sparse_ratio: 0.5, dependency_group_id: x, internal_metric_block: 2}");
  EXPECT_EQ(p20.mask("fc2", "weight"), (V{0, 1, 1, 0, 1, 0, 0, 1}));  // two smallest |w| of each row
}

TEST(NniMasks, P15ToP19PrecedenceTargetsAndEdgeRatios) {
  auto p15 = p("L1NormPruner",
               "  - {op_names: [fc1], sparse_ratio: 0.25}\n"
               "  - {op_names: [fc1, fc2], sparse_ratio: 0.5}");
  EXPECT_EQ(p15.rows("fc1"), (V{1, 1, 0, 1}));  // the first entry wins for fc1
  EXPECT_EQ(p15.rows("fc2"), (V{0, 1}));
  ASSERT_EQ(p15.resolution.warnings.size(), 2u);  // fc1.weight and fc1.bias of entry 2 ignored
  const auto warnings = fmt::format("{}", fmt::join(p15.resolution.warnings, "\n"));
  EXPECT_NE(warnings.find("c.yaml:4:5: config list entry 2 sets fc1.weight again: an earlier rule configured it, "
                          "and in this dialect the first one wins"),
            std::string::npos)
      << warnings;
  auto p16 = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5, target_names: [weight]}");
  EXPECT_EQ(p16.rows("fc1"), (V{1, 1, 0, 0}));
  EXPECT_EQ(p16.mask("fc1", "bias"), V{});
  auto none = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.0}");
  EXPECT_EQ(none.mask("fc1", "weight"), V(16, 1));
  EXPECT_EQ(none.mask("fc1", "bias"), V(4, 1));
  auto all = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 1.0}");
  EXPECT_EQ(all.mask("fc1", "weight"), V(16, 0));
  EXPECT_EQ(all.mask("fc1", "bias"), V(4, 0));
  auto p18 = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5, granularity: [2, 2]}");
  EXPECT_EQ(p18.rows("fc1"), (V{1, 1, 0, 0}));  // 2x2 block L1 6, 6, 4.1, 1.2
  EXPECT_EQ(p18.mask("fc1", "bias"), (V{1, 1, 0, 0}));
  // P19: no ratio: upstream crashes in the bias align; sparq makes no masks.
  auto p19 = p("L1NormPruner", "  - {op_names: [fc1]}");
  EXPECT_EQ(p19.mask("fc1", "weight"), V(16, 1));
  EXPECT_EQ(p19.mask("fc1", "bias"), V(4, 1));
}

TEST(NniMasks, C1ToC4ConvFiltersAndInputChannels) {
  auto c1 = c("L1NormPruner", "  - {op_names: [conv], sparse_ratio: 0.5}");
  EXPECT_EQ(c1.rows("conv"), (V{0, 1, 0, 1}));  // filter L1 3.6, 100, 1.64, 228
  EXPECT_EQ(c1.mask("conv", "bias"), (V{0, 1, 0, 1}));
  auto c2 = c("L1NormPruner", "  - {op_names: [conv], sparse_ratio: 0.5, granularity: in_channel}");
  auto m = pq_layer(c2.graph, "conv")->mask("weight")->mask;  // [4, 2, 2, 2]
  EXPECT_EQ(m.select(1, 0).sum().item<float>(), 0.f);  // input channel 0 (L1 149.74 < 183.5) everywhere
  EXPECT_EQ(m.select(1, 1).sum().item<float>(), 16.f);
  EXPECT_EQ(c2.mask("conv", "bias"), V(4, 1));
  for (const char* list : {"  - {op_names: [conv], sparse_ratio: 0.5}", "  - {op_names: [conv], sparse_ratio: 0.5, granularity: [2, 2]}"}) {
    auto c3 = c("LevelPruner", list);
    EXPECT_EQ(c3.rows("conv"), (V{0, 1, 0, 1})) << list;  // exactly the 16 smallest: filters 0 and 2
    EXPECT_EQ(c3.mask("conv", "bias"), (V{0, 1, 0, 1})) << list;
  }
}

TEST(NniMasks, C5C6BatchNormAndAlignChains) {
  auto c5 = c("L1NormPruner", "  - {op_names: [bn], sparse_ratio: 0.5}");
  EXPECT_EQ(c5.mask("bn", "weight"), (V{0, 1, 0, 1}));
  // NNI's align reduces a 1-D source over all dims (quirk 8) and never masks the BN bias; sparq
  // aligns it with the weight.
  EXPECT_EQ(c5.mask("bn", "bias"), (V{0, 1, 0, 1}));
  const std::string c6 =
      "  - {op_names: [conv], sparse_ratio: 0.5}\n"
      "  - op_names: [bn]\n"
      "    target_names: [TARGETS]\n"
      "    target_settings:\n"
      "      weight: {align: {module_name: conv, target_name: weight, dims: [0]}, granularity: out_channel}\n";
  auto weight_only = c("L1NormPruner", std::regex_replace(c6, std::regex("TARGETS"), "weight"));
  EXPECT_EQ(weight_only.mask("bn", "weight"), (V{0, 1, 0, 1}));
  EXPECT_EQ(weight_only.mask("bn", "bias"), V{});
  // With the bias too, its align chains through the aligned BN weight (upstream: crash).
  auto chained = c("L1NormPruner", std::regex_replace(c6, std::regex("TARGETS"), "weight, bias"));
  EXPECT_EQ(chained.mask("bn", "bias"), (V{0, 1, 0, 1}));
}

TEST(NniMasks, C7C9C10LinearColumnsMixedGrainsAndMinRatios) {
  auto c7 = c("L1NormPruner", "  - {op_names: [fc], sparse_ratio: 0.34, granularity: in_channel}");
  EXPECT_EQ(c7.mask("fc", "weight"), (V{1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0, 1}));  // column L1 15.7, 7.8, 9.9
  EXPECT_EQ(c7.mask("fc", "bias"), V(4, 1));
  // C9: mixed grains (rows of 3, filters of 8), budget 22 of 44: the sorted algorithm prunes 22
  // (NNI's heap, quirk 7, pruned 25).
  auto c9 = c("L1NormPruner", "  - {op_names: [fc, conv], sparse_ratio: 0.5, global_group_id: 0}");
  EXPECT_EQ(c9.rows("fc"), (V{0, 1, 0, 1}));
  EXPECT_EQ(c9.rows("conv"), (V{0, 1, 0, 1}));
  auto c10 = c("LevelPruner",
               "  - {op_names: [fc], sparse_ratio: 0.1, global_group_id: 0, min_sparse_ratio: 0.5}\n"
               "  - {op_names: [adapter], sparse_ratio: 0.1, global_group_id: 0}");
  EXPECT_EQ(c10.mask("fc", "weight"), (V{0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0}));  // n = 2 <= low = 6
  EXPECT_EQ(c10.mask("adapter", "weight"), V(12, 1));
}

TEST(NniMasks, C11GroupsThatCannotWorkAreErrors) {
  auto error = [](const std::string& list) {
    return test::error_of<Error>([&] { c("L1NormPruner", list); });
  };
  EXPECT_NE(error("  - {op_names: [fc], sparse_ratio: 0.5, global_group_id: 0}\n"
                  "  - {op_names: [adapter], sparse_ratio: 0.3, global_group_id: 0}")
                .find("global group 0: fc.weight sets sparse_ratio 0.5 but another member sets 0.3"),
            std::string::npos);
  EXPECT_NE(error("  - {op_names: [fc], sparse_ratio: 0.5, dependency_group_id: d}\n"
                  "  - {op_names: [adapter], sparse_ratio: 0.3, dependency_group_id: d}")
                .find("dependency group 'd'"),
            std::string::npos);
  EXPECT_NE(error("  - {op_names: [fc, conv], sparse_ratio: 0.5, dependency_group_id: d}").find("metric shape"),
            std::string::npos);
  EXPECT_NE(error("  - {op_names: [conv], sparse_ratio: 0.5, granularity: [3, 3]}").find("does not divide"),
            std::string::npos);
  EXPECT_NE(test::error_of<Error>([&] { c("FPGMPruner", "  - {op_names: [fc], sparse_ratio: 0.5, granularity: null}"); })
                .find("FPGM compares blocks"),
            std::string::npos);
}

TEST(NniMasks, AddAndBypassApplyMethods) {
  auto s = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5, target_names: [weight], apply_method: add}");
  auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(s.graph, "fc1"));
  auto w = layer->effective_weight();
  EXPECT_FLOAT_EQ(w[2][0].item<float>(), 0.5f - 1000.f);  // masked: -1000 added
  EXPECT_FLOAT_EQ(w[0][0].item<float>(), 1.f);
  auto b = p("L1NormPruner", "  - {op_names: [fc1], sparse_ratio: 0.5, apply_method: bypass}");
  EXPECT_FLOAT_EQ(std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(b.graph, "fc1"))->effective_weight()[2][0].item<float>(), 0.5f);
}


TEST(NniMasks, PActOutputAndInputMasksFollowTheWeight) {
  // Spec §7.2 P-act: fc's output aligned to its weight rows, the softmax's input aligned to fc
  // with the additive mask, so the masked logits vanish.
  auto spec = models::parse_model_yaml(R"(
input_shape: [3]
layers:
  - {name: fc, op: Linear, out_features: 4}
  - {name: sm, op: Softmax}
)", "act.yaml");
  auto s = test::nni_setup(spec, {{"fc", {fixture_c_weights().at("fc")[0], torch::zeros({4})}}}, R"(
pruner: {type: L1NormPruner}
config_list:
  - op_names: [fc]
    target_names: [weight, bias, _output_]
    sparse_ratio: 0.5
    target_settings:
      _output_: {align: {module_name: null, target_name: weight, dims: [0]}, granularity: per_channel}
  - op_names: [sm]
    target_names: [_input_]
    target_settings:
      _input_: {align: {module_name: fc, target_name: weight, dims: [0]}, granularity: per_channel, apply_method: add}
)");
  EXPECT_EQ(s.rows("fc"), (V{0, 1, 0, 1}));
  EXPECT_EQ(s.mask("fc", "bias"), (V{0, 1, 0, 1}));
  EXPECT_EQ(pq_layer(s.graph, "fc")->mask("_output_0")->mask.sizes(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(s.mask("fc", "_output_0"), (V{0, 1, 0, 1}));
  EXPECT_EQ(s.mask("sm", "_input_0"), (V{0, 1, 0, 1}));
  torch::NoGradGuard no_grad;
  auto y = s.graph->forward(torch::ones({2, 3}));
  for (int r = 0; r < 2; ++r) {
    EXPECT_NEAR(y[r][0].item<float>(), 0.f, 1e-12);
    EXPECT_NEAR(y[r][1].item<float>(), 3.06e-7f, 1e-9);
    EXPECT_NEAR(y[r][2].item<float>(), 0.f, 1e-12);
    EXPECT_NEAR(y[r][3].item<float>(), 1.f, 1e-6);
  }
  // A ratio on an output needs activation statistics: a clear error, not a silent no-op.
  EXPECT_NE(test::error_of<ConfigError>([&] {
              test::nni_setup(spec, {}, "pruner: {type: L1NormPruner}\nconfig_list:\n  - {op_names: [sm], target_names: "
                                        "[_input_], target_settings: {_input_: {sparse_ratio: 0.5}}}\n");
            }).find("sm._input_0: a ratio or threshold on a module input/output needs activation statistics"),
            std::string::npos);
}

}  // namespace
}  // namespace sparq
