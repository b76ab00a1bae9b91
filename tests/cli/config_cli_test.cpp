// sparq inspect and sparq config default; a job whose compression config carries a schedule.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <nlohmann/json.hpp>

#include "sparq/compress/resolve.h"
#include "sparq/config/dialect.h"
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
  r = run_sparq("run " + dir.file("fit.yaml") + " --output " + dir.file("fit_run"));
  EXPECT_EQ(r.exit_code, 2);  // batches of 256 from 64 samples: no Fisher estimate
  EXPECT_NE(r.output.find("FITCompress: the Fisher estimate needs batches of 256 samples; the training data has 64"),
            std::string::npos)
      << r.output;
  // FITCompress end to end: the search at the start (no pretraining), its table, fitcompress.json,
  // the formats in precision.json and `sparq inspect RUN`.
  write_file(dir.file("fit.yaml"), R"(model: mlp
data: {dataset: random, shape: [16], samples: 64, num_classes: 5}
training: {epochs: 1, batch_size: 16}
compression: {fitcompress_parameters: {enable_fitcompress: true, compression_goal: 0.10}}
)");
  r = run_sparq("run " + dir.file("fit.yaml") + " --output " + dir.file("fit_ok"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("FITCompress: per-layer weight formats and pruning (goal 0.1)"), std::string::npos) << r.output;
  auto result = nlohmann::json::parse(sparq::test::read_text(dir.file("fit_ok/fitcompress.json")));
  EXPECT_LT(result["rate"].get<double>(), 0.10);
  auto precision = nlohmann::json::parse(sparq::test::read_text(dir.file("fit_ok/precision.json")));
  EXPECT_NE(precision.dump().find("\"weight\""), std::string::npos);
  r = run_sparq("inspect " + dir.file("fit_ok"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("FITCompress"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("of the float weights' bits"), std::string::npos) << r.output;
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
}

TEST(ConfigCli, InspectJsonShowsNniSelectorsShorthandAndTargetSettings) {
  using namespace sparq;
  TempDir dir("nni_inspect");
  write_file(dir.file("list.yaml"), R"(
- op_names_re: ['conv.*']
  exclude_op_names: [conv2]
  sparse_ratio: 0.5
- op_types: [Linear]
  exclude_op_types: [Conv2d]
  target_names: [weight]
  target_settings: {weight: {sparse_ratio: 0.3, granularity: in_channel, global_group_id: g}}
- op_names: [bn2]
  target_settings:
    weight: {align: {module_name: conv2, target_name: weight, dims: [0]}, granularity: out_channel}
- op_names: [fc1]
  sparse_ratio: 0.9
)");
  auto r = run_sparq("inspect " + dir.file("list.yaml") + " --model lenet --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto begin = r.output.find('{');
  auto json = nlohmann::json::parse(r.output.substr(begin));
  EXPECT_EQ(json["dialect"], "nni-v3");
  const auto& m = json["modules"];
  auto settings = [&](const char* module, const char* target) { return m[module]["targets"][target]["pruning"]["settings"]; };
  EXPECT_EQ(settings("conv1", "weight")["sparse_ratio"], 0.5);
  EXPECT_EQ(settings("conv1", "weight")["granularity"], "default");
  EXPECT_EQ(settings("conv1", "bias")["align"]["target_name"], "weight");
  EXPECT_TRUE(m["conv2"]["targets"]["weight"]["pruning"].is_null());  // excluded
  EXPECT_EQ(settings("fc1", "weight")["sparse_ratio"], 0.3);  // entry 2 came first
  EXPECT_EQ(settings("fc1", "weight")["granularity"], "in_channel");
  EXPECT_EQ(settings("fc1", "weight")["global_group_id"], "'g'");
  EXPECT_EQ(settings("fc1", "bias")["align"]["target_name"], "weight");  // entry 2 has no bias; entry 4 adds it
  EXPECT_EQ(settings("fc2", "weight")["sparse_ratio"], 0.3);
  EXPECT_EQ(settings("bn2", "weight")["align"]["module_name"], "conv2");
  EXPECT_TRUE(settings("bn2", "weight")["sparse_ratio"].is_null());
  ASSERT_EQ(json["warnings"].size(), 1u);  // entry 4 on fc1.weight
  EXPECT_NE(json["warnings"][0].get<std::string>().find("config list entry 4 sets fc1.weight again"), std::string::npos);
  EXPECT_NE(r.output.find("warning: "), std::string::npos);
  // The text form names the pruner column from the same resolution.
  auto text = run_sparq("inspect " + dir.file("list.yaml") + " --model lenet");
  ASSERT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("ratio 0.3 in_channel global group 'g'"), std::string::npos) << text.output;
  // A bad list: one line with file:line:col and the key, exit 2.
  write_file(dir.file("bad.yaml"), "- op_names: [fc1]\n  sparse_ratio: 2.0\n");
  auto bad = run_sparq("inspect " + dir.file("bad.yaml") + " --model lenet");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_EQ(bad.output, "sparq: error: " + dir.file("bad.yaml") +
                            ":2:17: config list entry 1.sparse_ratio: 2 is outside [0, 1]\n");
}

TEST(ConfigCli, ConvertPrintsTheV3ListOrSaysWhyNot) {
  using namespace sparq;
  TempDir dir("nni_convert");
  auto v2 = run_sparq("convert --to nni-v3 " + std::string(SPARQ_SOURCE_DIR) + "/examples/nni/lenet_v2.yaml");
  ASSERT_EQ(v2.exit_code, 0) << v2.output;
  auto list = YAML::Load(v2.output);
  ASSERT_EQ(list.size(), 2u);  // the exclude entry became exclusions of the entries before it
  EXPECT_EQ(list[0]["op_names"][0].as<std::string>(), "fc1");
  EXPECT_EQ(list[0]["exclude_op_names"][0].as<std::string>(), "fc2");
  EXPECT_EQ(list[1]["sparse_ratio"].as<double>(), 0.5);
  // What it prints reads back as the same plan.
  write_file(dir.file("v3.yaml"), v2.output);
  models::Graph g(models::zoo_spec("lenet", {1, 28, 28}, 10));
  auto a = resolve(config::load_plan(dir.file("v3.yaml")), g);
  auto b = resolve(config::load_plan(std::string(SPARQ_SOURCE_DIR) + "/examples/nni/lenet_v2.yaml"), g);
  for (const char* name : {"conv1", "conv2", "fc1", "fc2"})
    EXPECT_EQ(a.find(name)->targets.at("weight").mask, b.find(name)->targets.at("weight").mask) << name;
  EXPECT_EQ(b.find("fc1")->targets.at("weight").mask->sparse_ratio, 0.7);
  EXPECT_FALSE(b.find("fc2")->targets.at("weight").mask);
  auto pquant = run_sparq("convert --to nni-v3 " + std::string(SPARQ_SOURCE_DIR) + "/examples/lenet_pdp.yaml");
  EXPECT_EQ(pquant.exit_code, 2);
  EXPECT_NE(pquant.output.find("a pquantml config has no NNI form"), std::string::npos) << pquant.output;
  auto other = run_sparq("convert --to sparseml " + std::string(SPARQ_SOURCE_DIR) + "/examples/nni/lenet_v3.yaml");
  EXPECT_EQ(other.exit_code, 2);
  EXPECT_NE(other.output.find("'sparseml' is not a dialect sparq writes"), std::string::npos) << other.output;
}

TEST(ConfigCli, RunTrainsWithTheNniPrunerTheJobNames) {
  TempDir dir("nni_run");
  const std::string job = "model: mlp\ndata: {dataset: random}\ntraining: {epochs: 2, batch_size: 64}\noutput: " +
                          dir.file("run") + "\ncompression:\n  PRUNER\n  config_list:\n"
                          "    - {op_types: [Linear], exclude_op_names: [fc3], sparse_ratio: 0.5}\n";
  write_file(dir.file("job.yaml"), std::regex_replace(job, std::regex("PRUNER"), "pruner: {type: TaylorPruner, training_steps: 5}"));
  auto r = run_sparq("run " + dir.file("job.yaml"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pruning TaylorPruner (nni-v3 config list)"), std::string::npos) << r.output;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  auto m = nlohmann::json::parse(last);
  EXPECT_EQ(m["layers"]["fc1"]["nonzero_weights"], 2048);  // half of 16 x 256
  EXPECT_EQ(m["layers"]["fc2"]["nonzero_weights"], 16384);
  EXPECT_FALSE(m["layers"].contains("fc3"));  // excluded: stays a float Linear
  // Without the pruner: one line, exit 2, nothing trained.
  write_file(dir.file("no_pruner.yaml"), std::regex_replace(job, std::regex("PRUNER"), ""));
  auto none = run_sparq("run " + dir.file("no_pruner.yaml"));
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_NE(none.output.find("an NNI config list needs the pruner that reads it"), std::string::npos) << none.output;
  // A schedule longer than the run: an error before the first step.
  write_file(dir.file("long.yaml"), std::regex_replace(job, std::regex("PRUNER"), "pruner: {type: TaylorPruner, training_steps: 500}"));
  auto long_run = run_sparq("run " + dir.file("long.yaml"));
  EXPECT_EQ(long_run.exit_code, 2);
  EXPECT_NE(long_run.output.find("its schedule needs 500 optimizer step(s)"), std::string::npos) << long_run.output;
}
