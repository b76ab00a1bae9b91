// Configured compression that cannot take effect is said once, before training; nothing is said
// where compression does act.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"

using sparq::test::run_sparq;
using sparq::test::TempDir;
using sparq::test::write_file;

namespace {
size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(what, p)) != std::string::npos; p += what.size()) ++n;
  return n;
}
const char* kJob = R"(model: {zoo: mlp, widths: [16]}
data: {dataset: random, shape: [16], samples: 512, num_classes: 5}
training: {batch_size: 64, progress: lines}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: EPOCHS, fine_tuning_epochs: 1}
  pruning_parameters: {pruning_method: wanda, sparsity: 0.5, t_start_collecting_batch: 1, t_delta: 12}
)";
std::string job(int epochs) {
  std::string text = kJob;
  text.replace(text.find("EPOCHS"), 6, std::to_string(epochs));
  return text;
}
}  // namespace

TEST(Warnings, PruningThatNeverStartsIsSaidOnce) {
  TempDir dir("warn");
  // 512 samples / 64 = 8 batches per epoch: wanda waits 1 epoch, then needs 12 batches (2 epochs):
  // its mask comes at the end of training epoch 3.
  write_file(dir.file("short.yaml"), job(2));
  auto r = run_sparq("run " + dir.file("short.yaml") + " --output " + dir.file("short"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string warning =
      "sparq: warning: pruning method wanda first prunes at the end of training epoch 3 (8 batches per epoch), but "
      "the training stage ends after epoch 2 (global epoch 3 of 4): nothing will be pruned";
  EXPECT_EQ(count(r.output, warning), 1u) << r.output;
  EXPECT_LT(r.output.find(warning), r.output.find("epoch 1/4")) << "said before training";
  // Long enough: no warning, and the run prunes.
  write_file(dir.file("long.yaml"), job(3));
  r = run_sparq("run " + dir.file("long.yaml") + " --device auto --output " + dir.file("long"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // What auto picked, and why ("cpu (auto: no CUDA device)" here, "cuda (auto: CUDA is available)" on a GPU).
  EXPECT_NE(r.output.find(" (auto: "), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("warning"), std::string::npos) << r.output;
  std::ifstream metrics(dir.file("long/metrics.jsonl"));
  std::string line, last;
  while (std::getline(metrics, line)) last = line;
  EXPECT_GT(nlohmann::json::parse(last)["sparsity"].get<double>(), 0.45) << last;  // it did prune
  // --epochs overrides the schedule's epochs per round: the same check applies.
  r = run_sparq("run " + dir.file("long.yaml") + " --epochs 1 --output " + dir.file("one"));
  EXPECT_EQ(count(r.output, "nothing will be pruned"), 1u) << r.output;
}

TEST(Warnings, NoTrainingStageHgqInPretrainingAndSearchUnderRun) {
  TempDir dir("warn2");
  write_file(dir.file("job.yaml"), R"(model: {zoo: mlp, widths: [16]}
data: {dataset: random, shape: [16], samples: 128, num_classes: 5}
training: {batch_size: 64, progress: none}
compression:
  training_parameters: {pretraining_epochs: 1, epochs: 0, fine_tuning_epochs: 0}
  pruning_parameters: {pruning_method: pdp}
  quantization_parameters: {use_hgq: true}
  hpo_parameters: {experiment_name: sweep, num_trials: 20}
)");
  auto r = run_sparq("run " + dir.file("job.yaml") + " --output " + dir.file("run"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(count(r.output, "sparq: warning: pruning method pdp prunes in the training stage, but the schedule has "
                            "none (1 pretraining, 0 fine-tuning epoch(s)): nothing will be pruned"),
            1u)
      << r.output;
  EXPECT_EQ(count(r.output, "HGQ's loss terms start after pretraining, but all 1 epoch(s) are pretraining"), 1u);
  EXPECT_EQ(count(r.output, "the config's search section ('sweep', 20 trial(s)) is not run by `sparq run`"), 1u);
  EXPECT_EQ(count(r.output, "sparq: warning:"), 3u) << r.output;
}
