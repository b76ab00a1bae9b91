// The sparq program: help, version, a real run, resume, and every bad input ending in one line
// on stderr with exit code 2.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

namespace {

const char* kTinyJob = R"(name: tiny
model: {zoo: mlp, widths: [16]}
data: {dataset: random, shape: [16], samples: 256, num_classes: 5}
training: {epochs: 2, batch_size: 32, lr: 0.01, threads: 1, progress: lines}
)";

int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(Cli, HelpAndVersion) {
  auto help = run_sparq("--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("run"), std::string::npos);
  auto version = run_sparq("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_NE(version.output.find("sparq 0.1.0"), std::string::npos);
  auto none = run_sparq("");
  EXPECT_EQ(none.exit_code, 2);
  auto bad_flag = run_sparq("run --epochz 3");
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_NE(bad_flag.output.find("sparq: error:"), std::string::npos);
}

TEST(Cli, RunsAJobWritesMetricsAndResumes) {
  TempDir dir("cli_run");
  write_file(dir.file("job.yaml"), kTinyJob);
  auto out = dir.file("run");
  auto r = run_sparq(dir.file("job.yaml") + " --output " + out);
  EXPECT_EQ(r.exit_code, 2) << "the job file must come after 'run'";
  r = run_sparq("run " + dir.file("job.yaml") + " --output " + out + " --epochs 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fc1"), std::string::npos);  // the per-layer table
  EXPECT_NE(r.output.find("test accuracy"), std::string::npos);
  EXPECT_NE(r.output.find("run folder: " + out), std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(out + "/checkpoint.pt"));
  EXPECT_TRUE(std::filesystem::exists(out + "/model.pt"));
  r = run_sparq("run " + dir.file("job.yaml") + " --output " + out + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("epoch 2/2"), std::string::npos);
  EXPECT_EQ(r.output.find("epoch 1/2 "), std::string::npos) << "a resumed run repeats no epoch";
  std::ifstream metrics(out + "/metrics.jsonl");
  std::string text((std::istreambuf_iterator<char>(metrics)), {});
  EXPECT_EQ(count_lines(text), 2);
}

TEST(Cli, BadJobFilesExitWith2AndOneLine) {
  TempDir dir("cli_bad");
  struct Case { std::string yaml, expected; };
  std::vector<Case> cases = {
      {"name: x\nmodel: lenet\ndata: {dataset: random}\ntraining:\n  epoch: 3\n",
       "job.yaml:5:3: training: unknown key 'epoch', did you mean 'epochs'?"},
      {"name: x\nmodel: lenet\ndata: {dataset: random}\ntraining:\n  lr: fast\n",
       "job.yaml:5:7: training.lr: expected a number, got 'fast'"},
      {"name: x\nmodel: lenet\ndata: {dataset: random}\ntraining:\n  batch_size: 0\n",
       "job.yaml:5:15: training.batch_size: 0 is out of range, expected >= 1"},
      {"name: x\nmodel: lenet\ndata: {dataset: random}\ntraining:\n  optimizer: adagrad\n",
       "job.yaml:5:14: training.optimizer: 'adagrad' is not one of adam, adamw, sgd"},
      {"name: x\nmodel: lenett\ndata: {dataset: random}\n",
       "job.yaml:2:8: model: unknown zoo model 'lenett', did you mean 'lenet'?"},
      {"name: x\nmodel: missing.yaml\ndata: {dataset: random}\n", "model: file '"},
      {"name: x\nmodel: mlp\ndata:\n  train: {csv: nowhere.csv}\n",
       "job.yaml:4:16: data.train.csv: file '"},
      {"name: x\nmodel: mlp\nmodle: mlp\ndata: {dataset: random}\n",
       "job.yaml:3:1: job: unknown key 'modle', did you mean 'model'?"},
      {"name: x\nmodel: mlp\ndata: {dataset: random\n", "job.yaml:4:1: invalid YAML"},
      {"name: x\nmodel: mlp\ndata: {dataset: random}\ntraining: {device: gpu}\n",
       "job.yaml:4:20: training.device: 'gpu' is not one of auto, cpu, cuda, cuda:N"},
      {"name: x\nmodel: mlp\ndata: {dataset: random}\ntraining: {epochs: 9223372036854775807}\n",
       "job.yaml:4:20: training.epochs: 9223372036854775807 is out of range"},
      {"name: x\nmodel: mlp\ndata: {dataset: random}\n---\nname: y\n",
       "job.yaml:5:1: a second YAML document (after '---'); a job, config or model file holds one"},
  };
  for (const auto& c : cases) {
    write_file(dir.file("job.yaml"), c.yaml);
    auto r = run_sparq("run " + dir.file("job.yaml"));
    EXPECT_EQ(r.exit_code, 2) << c.yaml << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << "expected: " << c.expected << "\ngot: " << r.output;
    EXPECT_EQ(count_lines(r.output), 1) << r.output;
  }
  // CLI numbers are checked as the job's keys are: no saturation into a run that never ends
  write_file(dir.file("job.yaml"), "name: x\nmodel: mlp\ndata: {dataset: random, shape: [4], samples: 8}\n");
  for (const char* arg : {"--epochs 99999999999999999999", "--epochs 100000001", "--epochs -1", "--epochs 2.5",
                          "--epochs abc", "--stop-after 0", "--stop-after 99999999999999999999"}) {
    auto r = run_sparq("run " + dir.file("job.yaml") + " " + arg);
    EXPECT_EQ(r.exit_code, 2) << arg << ": " << r.output;
    EXPECT_NE(r.output.find("is not a whole number from"), std::string::npos) << arg << ": " << r.output;
    EXPECT_EQ(count_lines(r.output), 1) << r.output;
  }
  auto missing = run_sparq("run " + dir.file("absent.yaml"));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_EQ(missing.output, "sparq: error: " + dir.file("absent.yaml") + ": does not exist\n");
}

TEST(Cli, BadDataAndModelFilesExitWith2) {
  TempDir dir("cli_data");
  write_file(dir.file("bad.csv"), "a,b,label\n1,2,0\n1,zz,1\n");
  write_file(dir.file("job.yaml"), "name: x\nmodel: mlp\ndata:\n  train: {csv: bad.csv}\n");
  auto r = run_sparq("run " + dir.file("job.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.csv:3: column 2 ('b'): 'zz' is not a number"), std::string::npos) << r.output;

  write_file(dir.file("m.yaml"), "layers:\n  - {name: fc, op: Linear, in_features: 3, out_features: 2}\n");
  write_file(dir.file("job2.yaml"), "name: x\nmodel: m.yaml\ndata: {dataset: random, shape: [16]}\n");
  r = run_sparq("run " + dir.file("job2.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("m.yaml:2:5: node 'fc' (Linear): in_features: is 3 but the input shape [16] gives 16"),
            std::string::npos)
      << r.output;

  r = run_sparq("run " + dir.file("job2.yaml") + " --resume --output " + dir.file("nothing"));
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, QuantizedJobReportsBitsAndEbops) {
  TempDir dir("cli_quant");
  write_file(dir.file("job.yaml"), R"(name: q
model: jet_tagger
data: {dataset: random, shape: [16], samples: 512, num_classes: 5, normalize: standardize}
training: {epochs: 1, batch_size: 64, threads: 1, progress: none}
compression:
  quantization_parameters:
    default_data_keep_negatives: 1
    default_data_integer_bits: 2
    default_data_fractional_bits: 5
    layer_specific:
      fc4: {weight: {integer_bits: 1, fractional_bits: 2}}
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("compression: 7 layer(s) replaced by PQ layers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ap_fixed<8,1,AP_RND,AP_SAT>"), std::string::npos) << r.output;  // default weights
  EXPECT_NE(r.output.find("ap_fixed<4,2,AP_RND,AP_SAT>"), std::string::npos) << r.output;  // fc4 override
  EXPECT_NE(r.output.find("EBOPs"), std::string::npos);
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::string line;
  std::getline(metrics, line);
  EXPECT_NE(line.find("\"ebops\":"), std::string::npos) << line;
  EXPECT_NE(line.find("\"fc4\":{"), std::string::npos) << line;

  write_file(dir.file("bad.yaml"), "name: q\nmodel: jet_tagger\ndata: {dataset: random}\ncompression:\n"
                                   "  quantization_parameters:\n    layer_specific:\n      fc9: {weight: {integer_bits: 1}}\n");
  r = run_sparq("run " + dir.file("bad.yaml") + " --output " + dir.file("run2"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.yaml:7:12: fc9: layer_specific names no layer of model 'jet_tagger', did you mean 'fc1'?"),
            std::string::npos)
      << r.output;
}

TEST(Cli, HgqRunLearnsWidthsFreezesThemAndResumes) {
  TempDir dir("cli_hgq");
  write_file(dir.file("job.yaml"), R"(name: hgq
model: jet_tagger
data: {dataset: random, shape: [16], samples: 2048, num_classes: 5, normalize: standardize}
training: {batch_size: 64, threads: 1, progress: none, lr: 0.03}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 0}
  quantization_parameters:
    use_high_granularity_quantization: true
    granularity: per_weight
    hgq_beta_schedule: [[1, 1.0e-5, linear], [2, 3.0e-5]]
    hgq_gamma: 1.0e-4
    default_data_keep_negatives: 1
    default_data_integer_bits: 2
    default_data_fractional_bits: 5
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("learned bit widths"), std::string::npos) << r.output;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  std::vector<nlohmann::json> epochs;
  for (std::string line; std::getline(metrics, line);) epochs.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(epochs.size(), 3u);
  // The HGQ terms are off in pretraining, then beta follows the schedule per global epoch.
  EXPECT_EQ(epochs[0]["hgq_loss"].get<double>(), 0.0);
  EXPECT_EQ(epochs[0]["beta"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(epochs[1]["beta"].get<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(epochs[2]["beta"].get<double>(), 3e-5);
  EXPECT_GT(epochs[1]["hgq_loss"].get<double>(), 0.0);
  EXPECT_LT(epochs[2]["ebops"].get<double>(), epochs[0]["ebops"].get<double>());  // the widths shrink

  // Frozen integer widths: one (k, i, f) per weight of fc1 (16 x 64) and per input feature.
  std::ifstream in(dir.file("run/precision.json"));
  auto precision = nlohmann::json::parse(in);
  auto fc1 = precision["layers"][0];
  EXPECT_EQ(fc1["name"], "fc1");
  EXPECT_EQ(fc1["targets"]["weight"]["kind"], "hgq");
  EXPECT_EQ(fc1["targets"]["weight"]["f"].size(), 64u * 16u);
  EXPECT_EQ(fc1["targets"]["input"]["shape"], nlohmann::json({1, 16}));
  int64_t counted = fc1["targets"]["weight"]["zero_width"].get<int64_t>();
  for (const auto& [type, n] : fc1["targets"]["weight"]["types"].items()) counted += n.get<int64_t>();
  EXPECT_EQ(counted, 64 * 16);
  r = run_sparq("inspect " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("fc1          weight   hgq per_weight     1024"), std::string::npos) << r.output;

  // Stopped after the first HGQ epoch and resumed: the learned widths are the same.
  r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("split") + " --stop-after 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("split") + " --resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in2(dir.file("split/precision.json"));
  EXPECT_EQ(nlohmann::json::parse(in2), precision);

  // A folder without precision.json, and a config without --model: exit 2, one line.
  r = run_sparq("inspect " + dir.path().string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no precision.json in this folder"), std::string::npos) << r.output;
  r = run_sparq("inspect " + dir.file("job.yaml"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--model is required"), std::string::npos) << r.output;
}

TEST(Cli, HgqWithPruningReachesTheSparsityTarget) {
  // HGQ per-channel widths and PDP pruning in one model: the masks still reach the global target.
  TempDir dir("cli_hgq_pdp");
  write_file(dir.file("job.yaml"), R"(name: combo
model: jet_tagger
data: {dataset: random, shape: [16], samples: 2048, num_classes: 5, normalize: standardize}
training: {batch_size: 64, threads: 1, progress: none, lr: 0.01}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 1, pruning_first: true}
  quantization_parameters: {use_hgq: true, granularity: per_channel, hgq_beta: 1.0e-6}
  pruning_parameters: {pruning_method: pdp, sparsity: 0.5, epsilon: 0.5}
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream metrics(dir.file("run/metrics.jsonl"));
  nlohmann::json last;
  for (std::string line; std::getline(metrics, line);) last = nlohmann::json::parse(line);
  EXPECT_GE(last["sparsity"].get<double>(), 0.5);
  EXPECT_LT(last["sparsity"].get<double>(), 0.6);
  std::ifstream in(dir.file("run/precision.json"));
  auto fc1 = nlohmann::json::parse(in)["layers"][0];
  EXPECT_EQ(fc1["targets"]["weight"]["shape"], nlohmann::json({64, 1}));  // one width per output channel
  EXPECT_EQ(fc1["targets"]["input"]["shape"], nlohmann::json({1, 16}));
}
