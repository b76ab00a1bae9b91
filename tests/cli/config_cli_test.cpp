// sparq inspect and sparq config default; a job whose compression config carries a schedule.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "sparq/config/pquant.h"
#include "sparq/yaml/reader.h"
#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

TEST(ConfigCli, DefaultConfigsPrintAndReadBack) {
  TempDir dir("cfgdefault");
  auto r = run_sparq("config default cs");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  write_file(dir.file("cs.yaml"), r.output);
  EXPECT_EQ(sparq::config::load_pquant(dir.file("cs.yaml")), sparq::config::packaged_config("cs"));
  auto bad = run_sparq("config default magnitude");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.output,
            "sparq: error: no packaged config for 'magnitude', expected one of activation_pruning, autosparse, cs, dst, "
            "fitcompress, mdmm, pdp, wanda (or ap)\n");
}

TEST(ConfigCli, InspectShowsEveryLayer) {
  TempDir dir("inspect");
  write_file(dir.file("c.yaml"), R"(training_parameters: {epochs: 3, rounds: 2, pretraining_epochs: 1}
quantization_parameters:
  layer_specific:
    fc2: {output: {quantize: true, keep_negatives: 1, integer_bits: 3, fractional_bits: 4}, weight: {integer_bits: 2}}
pruning_parameters: {pruning_method: pdp, sparsity: 0.75, disable_pruning_for_layers: [fc3]}
)");
  auto r = run_sparq("inspect " + dir.file("c.yaml") + " --model jet_tagger");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fc2    Linear       ap_ufixed<7,0>  ap_fixed<10,3>  ap_fixed<8,1>  ap_fixed<8,4>  pdp"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("fc3    Linear       ap_ufixed<7,0>  ap_fixed<8,1>   ap_fixed<8,1>  -              off "
                          "(disabled)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("sparsity 0.75"), std::string::npos);
  EXPECT_NE(r.output.find("1 pretraining epoch(s), 2 round(s) x 3 training epoch(s)"), std::string::npos);
  auto yaml = run_sparq("inspect " + dir.file("c.yaml") + " --model jet_tagger --yaml");
  ASSERT_EQ(yaml.exit_code, 0);
  write_file(dir.file("resolved.yaml"), yaml.output);
  EXPECT_EQ(sparq::config::load_pquant(dir.file("resolved.yaml")), sparq::config::load_pquant(dir.file("c.yaml")));
}

TEST(ConfigCli, BadConfigsExitWith2AndOneLine) {
  TempDir dir("inspectbad");
  const std::pair<const char*, const char*> cases[] = {
      {"pruning_parameters:\n  pruning_method: pdp\n  sparsty: 0.5\n", "c.yaml:3:3: pruning_parameters (method pdp): "
                                                                      "unknown key 'sparsty', did you mean 'sparsity'?"},
      {"training_parameters:\n  rounds: two\n", "c.yaml:2:11: training_parameters.rounds: expected an integer, got 'two'"},
      {"quantization_parameters:\n  layer_specific:\n    fc9: {weight: {integer_bits: 1}}\n",
       "c.yaml:3:10: fc9: layer_specific names no layer of model 'jet_tagger', did you mean 'fc1'?"},
      {"", "c.yaml: the config is empty"},
      {"quantization_parameters: {round_mode: [RND}\n", "c.yaml:1:"},
  };
  for (const auto& [text, expected] : cases) {
    write_file(dir.file("c.yaml"), text);
    auto r = run_sparq("inspect " + dir.file("c.yaml") + " --model jet_tagger");
    EXPECT_EQ(r.exit_code, 2) << text;
    std::string prefix = "sparq: error: " + dir.file("c.yaml").substr(0, dir.file("c.yaml").size() - 6);
    EXPECT_EQ(r.output.rfind(prefix, 0), 0u) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  EXPECT_EQ(run_sparq("inspect " + dir.file("none.yaml") + " --model lenet").exit_code, 2);
  // A job file: the plan of its compression section.
  auto job = run_sparq("inspect " + std::string(SPARQ_SOURCE_DIR) + "/examples/mlp_wanda.yaml --model mlp");
  EXPECT_EQ(job.exit_code, 0) << job.output;
  EXPECT_NE(job.output.find("fc1    Linear       ap_ufixed<8,0>  ap_fixed<8,2>  ap_fixed<8,2>  -       wanda"),
            std::string::npos)
      << job.output;
  EXPECT_EQ(run_sparq("inspect " + dir.file("c.yaml") + " --model lenett").exit_code, 2);
}

TEST(ConfigCli, RunFollowsTheConfigSchedule) {
  TempDir dir("runsched");
  write_file(dir.file("job.yaml"), R"(name: staged
model: {zoo: mlp, widths: [16]}
data: {dataset: random, shape: [16], samples: 256, num_classes: 5}
training: {batch_size: 64, lr: 0.01, threads: 1, progress: lines}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: 1, rounds: 2, fine_tuning_epochs: 1, rewind: never}
  quantization_parameters: {default_data_keep_negatives: 1, default_data_integer_bits: 3}
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("schedule: 1 pretraining, 2 x 1 training (rewind never), 1 fine-tuning epoch(s)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("epoch 3/4 [training round 2/2 epoch 1/1]"), std::string::npos) << r.output;
  std::ifstream in(dir.file("run/metrics.jsonl"));
  std::vector<std::string> stages;
  for (std::string line; std::getline(in, line);) stages.push_back(nlohmann::json::parse(line)["stage"]);
  EXPECT_EQ(stages, (std::vector<std::string>{"pretraining", "training", "training", "fine-tuning"}));

  // Epochs in two places, FITCompress and methods not implemented: exit 2 with the reason.
  write_file(dir.file("both.yaml"), R"(model: mlp
data: {dataset: random, shape: [16], samples: 64, num_classes: 5}
training: {epochs: 3}
compression: {training_parameters: {epochs: 2}}
)");
  r = run_sparq("run " + dir.file("both.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("both.yaml:3:20: training.epochs: the compression config's training_parameters give the "
                          "schedule"),
            std::string::npos)
      << r.output;
  write_file(dir.file("fit.yaml"), R"(model: mlp
data: {dataset: random, shape: [16], samples: 64, num_classes: 5}
compression: {fitcompress_parameters: {enable_fitcompress: true}}
)");
  r = run_sparq("run " + dir.file("fit.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("FITCompress is not implemented"), std::string::npos) << r.output;
}

TEST(ConfigCli, InspectJsonListsEveryModuleAndTarget) {
  TempDir dir("inspectjson");
  write_file(dir.file("c.yaml"), R"(quantization_parameters:
  default_weight_integer_bits: 1
  default_weight_fractional_bits: 6
  layer_specific:
    conv2: {weight: {integer_bits: 3, fractional_bits: 2}}
pruning_parameters: {pruning_method: wanda, sparsity: 0.5}
)");
  auto r = run_sparq("inspect " + dir.file("c.yaml") + " --model lenet --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto json = nlohmann::json::parse(r.output);
  EXPECT_EQ(json["dialect"], "pquantml");
  const auto& modules = json["modules"];
  for (const char* name : {"conv1", "bn1", "relu1", "pool1", "conv2", "flatten", "fc1", "fc2"})
    EXPECT_TRUE(modules.contains(name)) << name;
  for (const auto& [name, m] : modules.items()) {
    if (m["op"] != "Conv2d" && m["op"] != "Linear") continue;
    int bits = name == "conv2" ? 6 : 8;  // the override shows on exactly its layer
    EXPECT_EQ(m["targets"]["weight"]["quantizer"]["bits"], bits) << name;
    EXPECT_EQ(m["targets"]["weight"]["pruning"]["method"], "wanda") << name;
    EXPECT_EQ(m["targets"]["weight"]["pruning"]["sparse_ratio"], 0.5) << name;
    EXPECT_TRUE(m["targets"]["_output_0"]["quantizer"].is_null()) << name;
  }
  EXPECT_TRUE(json["schedule"]["stages"].empty());
  // A job without compression says so in one line.
  write_file(dir.file("float.yaml"), "model: mlp\ndata: {dataset: random}\n");
  auto plain = run_sparq("inspect " + dir.file("float.yaml") + " --model mlp");
  EXPECT_EQ(plain.exit_code, 2);
  EXPECT_NE(plain.output.find("has no compression section: it trains a float model"), std::string::npos) << plain.output;
  // An NNI config list is recognised and named.
  write_file(dir.file("nni.yaml"), "- op_types: [Linear]\n  sparse_ratio: 0.5\n");
  auto nni = run_sparq("inspect " + dir.file("nni.yaml") + " --model mlp");
  EXPECT_EQ(nni.exit_code, 2);
  EXPECT_NE(nni.output.find("NNI config list: not supported yet"), std::string::npos) << nni.output;
}
