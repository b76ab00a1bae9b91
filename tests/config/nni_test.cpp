// NNI config lists: v3 selection/targets/shorthand (spec nni-config §1), the seeds' own examples,
// the corrected v2 converter (§6.3), and bad lists (one error with file:line:col and the key).
#include <gtest/gtest.h>

#include "../prune/nni_test_util.h"
#include "sparq/config/nni.h"

namespace sparq {
namespace {

using V = std::vector<float>;

Plan list_plan(const std::string& text) {
  auto doc = yaml::YamlDoc::load_string(text, "list.yaml");
  return config::load_plan(doc.file, doc.root);
}

std::string list_error(const std::string& text) {
  return test::error_of<ConfigError>([&] { list_plan(text); });
}

models::GraphSpec selection_model() {
  return models::parse_model_yaml(R"(
input_shape: [1, 6, 6]
layers:
  - {name: conv1, op: Conv2d, out_channels: 2, kernel_size: 3}
  - {name: conv2, op: Conv2d, out_channels: 2, kernel_size: 3}
  - {name: flatten, op: flatten}
  - {name: fc1, op: Linear, out_features: 4}
  - {name: fc2, op: Linear, out_features: 4}
  - {name: block.0, op: Linear, out_features: 4}
  - {name: block.1, op: ReLU}
)", "sel.yaml");
}

std::vector<std::string> selected(const std::string& entry) {
  auto plan = list_plan("- " + entry);
  models::Graph g(selection_model());
  std::vector<std::string> out;
  for (const auto& n : g->nodes())
    if (plan.rules[0].select.matches(n.name, n.source_op)) out.push_back(n.name);
  return out;
}

using S = std::vector<std::string>;

TEST(NniConfig, SelectionMatchesNni) {
  EXPECT_EQ(selected("{op_types: [Linear]}"), (S{"fc1", "fc2", "block.0"}));
  EXPECT_EQ(selected("{op_names: [fc1, conv1], op_types: [Linear]}"), (S{"fc1"}));
  EXPECT_EQ(selected("{op_names_re: [fc], op_types: [Linear]}"), (S{"fc1", "fc2"}));  // match at the start
  EXPECT_EQ(selected("{op_names_re: ['1']}"), S{});
  EXPECT_EQ(selected("{op_names_re: ['.*1']}"), (S{"conv1", "fc1", "block.1"}));
  EXPECT_EQ(selected("{op_names: [fc1], op_names_re: ['conv.*']}"), (S{"conv1", "conv2", "fc1"}));
  EXPECT_EQ(selected("{op_types: [Linear, Conv2d], exclude_op_names: [fc2], exclude_op_names_re: ['block.*'], "
                     "exclude_op_types: [Conv2d]}"),
            (S{"fc1"}));
  EXPECT_EQ(selected("{op_types: [Dense]}"), (S{"fc1", "fc2", "block.0"}));  // PQuantML/Keras alias
}

TEST(NniConfig, SeedShorthandEqualsTheStandardForm) {
  const std::string shorthand = "- {op_types: [Linear], sparse_ratio: 0.8}";
  const std::string standard = R"(
- op_names: [fc1, fc2, block.0]
  target_names: [weight, bias]
  target_settings:
    weight:
      sparse_ratio: 0.8
      max_sparse_ratio: null
      min_sparse_ratio: null
      sparse_threshold: null
      global_group_id: null
      dependency_group_id: null
      granularity: default
      internal_metric_block: null
      apply_method: mul
    bias:
      align: {target_name: weight, dims: [0]}
      apply_method: mul
)";
  models::Graph g(selection_model());
  auto a = resolve(list_plan(shorthand), g), b = resolve(list_plan(standard), g);
  for (const char* name : {"fc1", "fc2", "block.0"}) {
    const auto& ta = a.find(name)->targets, &tb = b.find(name)->targets;
    ASSERT_TRUE(ta.at("weight").mask && ta.at("bias").mask) << name;
    EXPECT_EQ(*ta.at("weight").mask, *tb.at("weight").mask) << name;
    EXPECT_EQ(*ta.at("bias").mask, *tb.at("bias").mask) << name;
    EXPECT_EQ(ta.at("weight").mask->sparse_ratio, 0.8);
    EXPECT_EQ(ta.at("bias").mask->align->target, "weight");
    EXPECT_FALSE(ta.at("bias").mask->sparse_ratio);  // shorthand never reaches the bias
  }
  EXPECT_FALSE(a.find("conv1")->targets.at("weight").mask);
}

TEST(NniConfig, TargetSettingsBeatShorthandAndCanAddBiasPruning) {
  auto plan = list_plan("- {op_names: [fc1], target_names: [weight], target_settings: {weight: {sparse_ratio: 0.3}}, "
                        "sparse_ratio: 0.9}\n"
                        "- {op_names: [fc2], sparse_ratio: 0.5, target_settings: {bias: {sparse_ratio: 0.2}}}");
  models::Graph g(selection_model());
  auto r = resolve(plan, g);
  EXPECT_EQ(r.find("fc1")->targets.at("weight").mask->sparse_ratio, 0.3);
  EXPECT_FALSE(r.find("fc1")->targets.at("bias").mask);
  EXPECT_EQ(r.find("fc2")->targets.at("bias").mask->sparse_ratio, 0.2);
  EXPECT_TRUE(r.find("fc2")->targets.at("bias").mask->align);  // the align stays next to the ratio
}

TEST(NniConfig, SeedGlobalGroupExampleSharesOneBudget) {
  auto model = models::parse_model_yaml(R"(
input_shape: [4]
layers:
  - {name: fc1, op: Linear, out_features: 4}
  - {name: fc2, op: Linear, out_features: 4}
  - {name: fc3, op: Linear, out_features: 4}
)", "m.yaml");
  std::map<std::string, std::vector<torch::Tensor>> w;
  for (int i = 0; i < 3; ++i)  // fc1 smallest, fc3 largest
    w["fc" + std::to_string(i + 1)] = {torch::arange(1, 17, torch::kFloat32).view({4, 4}) * std::pow(10.0, i), torch::zeros({4})};
  auto s = test::nni_setup(model, w, R"(
pruner: {type: LevelPruner}
config_list:
  - {op_names: [fc1, fc2], sparse_ratio: 0.5, global_group_id: linear_group_1}
  - {op_names: [fc3], sparse_ratio: 0.5, global_group_id: linear_group_1}
)");
  auto zeros = [&](const char* m) { auto v = s.mask(m, "weight"); return std::count(v.begin(), v.end(), 0.f); };
  EXPECT_EQ(zeros("fc1") + zeros("fc2") + zeros("fc3"), 24);  // half of 48 over the group
  EXPECT_EQ(zeros("fc1"), 16);
  EXPECT_EQ(zeros("fc2"), 8);
  EXPECT_EQ(zeros("fc3"), 0);
}

models::GraphSpec pair_500_1000() {
  return models::parse_model_yaml(R"(
input_shape: [10]
layers:
  - {name: layer_1, op: Linear, out_features: 50, bias: false}
  - {name: layer_2, op: Linear, out_features: 20, bias: false}
)", "pair.yaml");
}

TEST(NniConfig, V2TotalSparsityWithMaxPerLayerKeepsTheSeedsPromise) {
  // Seed 003: total_sparsity 0.8 over a 500- and a 1000-parameter layer masks 1200; with
  // max_sparsity_per_layer 0.9 layer_1 loses at most 450, even when all its weights are smallest.
  std::map<std::string, std::vector<torch::Tensor>> w = {
      {"layer_1", {torch::arange(1, 501, torch::kFloat32).view({50, 10}) * 1e-4}},
      {"layer_2", {torch::arange(1, 1001, torch::kFloat32).view({20, 50})}}};
  auto zeros = [](const test::NniSetup& s, const char* m) {
    auto v = s.mask(m, "weight");
    return std::count(v.begin(), v.end(), 0.f);
  };
  auto capped = test::nni_setup(pair_500_1000(), w, R"(
pruner: {type: LevelPruner}
config_list:
  - {op_names: [layer_1, layer_2], total_sparsity: 0.8, max_sparsity_per_layer: 0.9}
)");
  EXPECT_EQ(capped.pruner->targets()[0].setting.global_group, "'total_sparsity_1'");
  EXPECT_EQ(zeros(capped, "layer_1"), 450);
  EXPECT_EQ(zeros(capped, "layer_2"), 750);
  // Without a cap v2 capped every layer at 0.99 in global mode; the converter keeps that.
  auto implicit = test::nni_setup(pair_500_1000(), w, R"(
pruner: {type: LevelPruner}
config_list:
  - {op_names: [layer_1, layer_2], total_sparsity: 0.8}
)");
  EXPECT_EQ(zeros(implicit, "layer_1"), 495);
  EXPECT_EQ(zeros(implicit, "layer_2"), 705);
}

TEST(NniConfig, V2ConverterIsExactAboutPrecedenceAndExclusion) {
  auto doc = yaml::YamlDoc::load_string(R"(
- {op_types: [Conv2d], sparsity_per_layer: 0.5, op_partial_names: [layer1]}
- {exclude: true, op_names: [conv1]}
)", "v2.yaml");
  auto v3 = config::nni_v2_to_v3(doc.file, doc.root);
  ASSERT_EQ(v3.size(), 1u);
  EXPECT_EQ(v3[0]["op_names_re"][0].as<std::string>(), ".*layer1.*");
  EXPECT_EQ(v3[0]["exclude_op_names"][0].as<std::string>(), "conv1");
  EXPECT_EQ(v3[0]["sparse_ratio"].as<std::string>(), "0.5");
  // v2: the last matching entry wins, and an exclude entry only overrides the entries before it.
  models::Graph g(selection_model());
  auto r = resolve(list_plan("- {op_types: [Linear], sparsity: 0.5}\n- {op_names: [fc2], sparsity: 0.8}\n"
                             "- {exclude: true, op_names: [block.0]}"),
                   g);
  EXPECT_EQ(r.find("fc1")->targets.at("weight").mask->sparse_ratio, 0.5);
  EXPECT_EQ(r.find("fc2")->targets.at("weight").mask->sparse_ratio, 0.8);
  EXPECT_FALSE(r.find("block.0")->targets.at("weight").mask);
  auto before = resolve(list_plan("- {exclude: true, op_names: [fc1]}\n- {op_types: [Linear], sparsity: 0.5}"), g);
  EXPECT_EQ(before.find("fc1")->targets.at("weight").mask->sparse_ratio, 0.5);
  EXPECT_EQ(list_plan("- {op_types: [Linear], sparsity: 0.5}").dialect, "nni-v2");
  // Quantization entries translate too (the quantizer itself comes with the quantization issue).
  auto q = yaml::YamlDoc::load_string("- {op_types: [Linear], quant_types: [input, weight], quant_bits: {input: 8, "
                                      "weight: 4}, quant_scheme: per_channel_symmetric, quant_start_step: 100}",
                                      "q.yaml");
  std::vector<std::string> notes;
  auto qv3 = config::nni_v2_to_v3(q.file, q.root, &notes);
  EXPECT_EQ(qv3[0]["target_settings"]["weight"]["quant_dtype"].as<std::string>(), "uint4");
  EXPECT_EQ(qv3[0]["target_settings"]["weight"]["granularity"].as<std::string>(), "out_channel");
  EXPECT_EQ(qv3[0]["target_settings"]["_input_"]["quant_scheme"].as<std::string>(), "symmetric");
  EXPECT_EQ(qv3[0]["quant_dtype"].as<std::string>(), "uint8");
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("QATQuantizer, quant_start_step: 100"), std::string::npos);
}

TEST(NniConfig, BadListsNameFileLineAndKey) {
  struct Case {
    std::string list, expected;
  };
  const std::vector<Case> cases = {
      {"- {op_names: [fc1], sparse_ratoi: 0.5}", "list.yaml:1:21: config list entry 1: unknown key 'sparse_ratoi', did you mean 'sparse_ratio'?"},
      {"- {op_names: [fc1], sparse_ratio: abc}", "list.yaml:1:35: config list entry 1.sparse_ratio: expected a number"},
      {"- {op_names: [fc1], sparse_ratio: 1}", "write the ratio as a float (1.0)"},
      {"- {op_names: [fc1], sparse_ratio: 1.5}", "config list entry 1.sparse_ratio: 1.5 is outside [0, 1]"},
      {"- {op_names: fc1, sparse_ratio: 0.5}", "config list entry 1.op_names: expected a list of strings (write [fc1] for one)"},
      {"- {sparse_ratio: 0.5}", "needs at least one of op_types, op_names, op_names_re"},
      {"- {op_names: [fc1], sparse_ratio: 0.5, sparse_threshold: 1.0}", "sparse_ratio and sparse_threshold exclude each other"},
      {"- {op_names: [fc1], target_names: [foo]}", "unknown target 'foo' (pruning targets: weight, bias, _input_, _output_)"},
      {"- {op_names: [fc1], target_names: [_output_]}", "'_output_' has no settings in this entry"},
      {"- {op_names: [fc1], target_names: [_input_x]}", "inputs by argument name are not supported"},
      {"- {op_names_re: ['fc('], sparse_ratio: 0.5}", "list.yaml:1:18: config list entry 1.op_names_re: regex 'fc(' does not compile"},
      {"- {op_names: [fc1], sparse_ratio: 0.5, target_settings: {bias: {align: {module_name: fc1, dims: [0]}}}}",
       "needs target_name and dims"},
      {"- {op_names: [fc1], sparse_ratio: 0.5}\n- {op_names: [fc2], sparsity: 0.5}", "list.yaml:1:21: config list entry 1 (NNI v2): 'sparse_ratio' is an NNI v3 key in a list with v2 keys"},
      {"- {op_names: [fc1], sparsity: 0.5, exclude: true}", "exclude and a sparsity/quantization setting exclude each other"},
      {"- {op_names: [fc1], sparsity: 1.0}", "config list entry 1 (NNI v2).sparsity: 1 is outside [0, 1)"},
      {"- {op_names: [fc1], sparsity: 0.5, sparsity_per_layer: 0.5}", "sparsity and sparsity_per_layer mean the same"},
      {"- {op_names: [fc1], quant_scheme: affine}", "'quant_scheme' is an NNI quantization key: a quantization entry needs quant_dtype"},
      {"- {op_types: [Linaer], sparse_ratio: 0.5}", "unknown op type 'Linaer', did you mean 'Linear'?"},
      {"- {op_names: [fc1], granularity: per_row, sparse_ratio: 0.5}", "'per_row' is not one of default, in_channel"},
      {"- {op_names: [fc1], sparse_ratio: 0.5, target_settings: {weight: {group_id: 1}}}",
       "config list entry 1.target_settings.weight: unknown key 'group_id'"},
  };
  for (const auto& c : cases) {
    auto e = list_error(c.list);
    EXPECT_NE(e.find(c.expected), std::string::npos) << c.list << "\n  -> " << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(NniConfig, ResolutionErrorsAndWarnings) {
  models::Graph g(selection_model());
  auto e = test::error_of<ConfigError>([&] { resolve(list_plan("- {op_names_re: ['block.*'], sparse_ratio: 0.5}"), g); });
  EXPECT_NE(e.find("list.yaml:1:3: config list entry 1 selects 'block.1', a ReLU, which has no parameters to prune"),
            std::string::npos)
      << e;
  auto r = resolve(list_plan("- {op_names: [fc9], sparse_ratio: 0.5}\n- {op_types: [Conv1d], sparse_ratio: 0.5}"), g);
  ASSERT_EQ(r.warnings.size(), 3u);
  EXPECT_NE(r.warnings[0].find("selects 'fc9' by name, which model 'model' does not have (ignored; did you mean 'fc1'?)"),
            std::string::npos)
      << r.warnings[0];
  EXPECT_NE(r.warnings[1].find("config list entry 1 selects no module"), std::string::npos);
  EXPECT_NE(r.warnings[2].find("config list entry 2 selects no module"), std::string::npos);
}

TEST(NniConfig, JobSectionChoosesAndChecksThePruner) {
  auto plan = test::nni_plan("pruner: {type: AGPPruner, interval_steps: 5, total_times: 4, pruner: {type: TaylorPruner, "
                             "training_steps: 7}}\nconfig_list:\n  - {op_types: [Linear], sparse_ratio: 0.5}");
  ASSERT_TRUE(plan.pruner);
  EXPECT_EQ(plan.pruner->method, "AGPPruner");
  EXPECT_EQ(plan.pruner->integer("interval_steps"), 5);
  EXPECT_EQ(plan.pruner->text("pruner"), "TaylorPruner");
  EXPECT_EQ(plan.pruner->integer("pruner.training_steps"), 7);
  auto error = [](const std::string& text) { return test::error_of<ConfigError>([&] { test::nni_plan(text); }); };
  EXPECT_NE(error("pruner: {type: L1NormPrunr}\nconfig_list: []").find("unknown pruner 'L1NormPrunr', did you mean "
                                                                       "'L1NormPruner'?"),
            std::string::npos);
  EXPECT_NE(error("pruner: {type: TaylorPruner, training_step: 3}\nconfig_list: [{op_names: [a]}]")
                .find("unknown key 'training_step', did you mean 'training_steps'?"),
            std::string::npos);
  EXPECT_NE(error("pruner: {type: AGPPruner, pruner: {type: MovementPruner}}\nconfig_list: [{op_names: [a]}]")
                .find("MovementPruner cannot be scheduled"),
            std::string::npos);
  EXPECT_NE(error("pruner: {type: L1NormPruner}").find("config_list: is required"), std::string::npos);
  EXPECT_NE(error("quantizer: {type: QATQuantizer}\nconfig_list: [{op_names: [a]}]").find("has no quantization entry"),
            std::string::npos);
  EXPECT_NE(error("distiller: {type: DynamicLayerwiseDistiller}\nconfig_list: [{op_names: [a]}]")
                .find("compression.distiller.teacher: is required"),
            std::string::npos);
  EXPECT_NE(error("distiller: {type: Distiller}").find("compression.distiller.type"), std::string::npos);
}

}  // namespace
}  // namespace sparq
