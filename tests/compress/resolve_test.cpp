// Resolution: a Plan's rules on a Graph give one module x target table, with the dialect's
// precedence; the JSON `sparq inspect --json` prints lists every module and target.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "sparq/compress/resolve.h"
#include "sparq/error.h"
#include "test_util.h"

using namespace sparq;

namespace {
models::Graph lenet() { return models::Graph(models::zoo_spec("lenet", {1, 28, 28}, 10, {})); }

// Seed 000's shape: one `overflow`, a layer_specific override, pruning off for one layer.
const char* kSeed000Style = R"(training_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 1}
quantization_parameters:
  default_weight_keep_negatives: 1
  default_weight_integer_bits: 1
  default_weight_fractional_bits: 6
  default_data_keep_negatives: 1
  default_data_integer_bits: 3
  default_data_fractional_bits: 4
  overflow: SAT
  layer_specific:
    fc1: {weight: {integer_bits: 2, fractional_bits: 3}}
pruning_parameters: {pruning_method: pdp, sparsity: 0.7, disable_pruning_for_layers: [fc2]}
)";
}  // namespace

TEST(Resolve, EveryModuleAndTargetWithTheOverrideOnExactlyItsLayer) {
  auto g = lenet();
  auto plan = test::pquant_plan(kSeed000Style);
  auto json = resolution_json(resolve(plan, g), plan);
  EXPECT_EQ(json["dialect"], "pquantml");
  ASSERT_EQ(json["modules"].size(), g->nodes().size());
  for (const auto& node : g->nodes()) {
    SCOPED_TRACE(node.name);
    const auto& m = json["modules"][node.name];
    EXPECT_EQ(m["op"], node.source_op);
    ASSERT_EQ(m["targets"].size(), node.info->targets.size());  // what the op has, configured or null
    for (const auto& target : node.info->targets) {
      const auto& t = m["targets"][target];
      EXPECT_TRUE(t.contains("quantizer") && t.contains("pruning"));
      bool weights = node.info->prunable;
      if (target == "weight" && weights) {
        bool overridden = node.name == "fc1";
        EXPECT_EQ(t["quantizer"]["i"], overridden ? 2 : 1);
        EXPECT_EQ(t["quantizer"]["f"], overridden ? 3 : 6);
        EXPECT_EQ(t["quantizer"]["bits"], overridden ? 6 : 8);
        EXPECT_EQ(t["pruning"]["method"], "pdp");
        EXPECT_EQ(t["pruning"]["sparse_ratio"], 0.7);
        EXPECT_EQ(t["pruning"]["active"], node.name != "fc2");
      } else {
        EXPECT_TRUE(t["pruning"].is_null());
      }
      if (target == "bias" && weights) {
        EXPECT_EQ(t["quantizer"]["type"], "ap_fixed<8,2,AP_RND,AP_SAT>");
      }
      if (target == kOutput) {
        EXPECT_TRUE(t["quantizer"].is_null());  // quantize_output defaults to false
      }
    }
  }
  EXPECT_EQ(json["modules"]["relu1"]["targets"][kInput]["quantizer"]["type"], "ap_ufixed<8,3,AP_RND,AP_SAT>");
  EXPECT_EQ(json["modules"]["flatten"]["targets"].size(), 0u);
  EXPECT_EQ(json["schedule"]["stages"].size(), 3u);
  EXPECT_EQ(json["schedule"]["stages"][1]["epochs"], 2);
}

TEST(Resolve, PrecedenceSelectorsAndNames) {
  auto g = lenet();
  auto spec = [](int bits) {
    QuantSetting q;
    q.spec = quant::FixedSpec{1, 0, bits - 1};
    return q;
  };
  Rule convs, conv1, all_but_fc;
  convs.select.name_regexes = {"conv[0-9]"};
  convs.targets["weight"].quant = spec(4);
  conv1.select.names = {"conv1"};
  conv1.targets["weight"].quant = spec(6);
  all_but_fc.select.exclude_op_types = {"Linear"};
  Plan plan;
  plan.rules = {convs, conv1, all_but_fc};
  auto bits = [&](const Resolution& r, const std::string& name) {
    const auto& q = r.find(name)->targets.at("weight").quantizer;
    return q ? quant::fixed_part(*q)->k + quant::fixed_part(*q)->i + quant::fixed_part(*q)->f : 0;
  };
  auto later = resolve(plan, g);  // PQuantML and NNI v2: a later rule overrides
  EXPECT_EQ(bits(later, "conv1"), 6);
  EXPECT_EQ(bits(later, "conv2"), 4);
  EXPECT_EQ(bits(later, "fc1"), 0);
  EXPECT_FALSE(later.find("fc1")->selected);
  EXPECT_TRUE(later.find("pool1")->selected);
  plan.precedence = Precedence::FirstWins;  // NNI v3: the first rule that sets a target decides
  EXPECT_EQ(bits(resolve(plan, g), "conv1"), 4);
  // A rule that must find its names says which one is missing and the nearest.
  Rule missing;
  missing.select.names = {"conv9"};
  missing.names_must_exist = true;
  missing.origin = "op_names";
  missing.where = "c.yaml:2:3";
  plan.rules.push_back(missing);
  EXPECT_EQ(test::error_of<ConfigError>([&] { resolve(plan, g); }),
            "c.yaml:2:3: conv9: op_names names no layer of model 'lenet', did you mean 'conv1'?");
}
