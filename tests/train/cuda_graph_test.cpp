// CUDA graphs of the training step (training.cuda_graph; its Adam: tests/train/fused_adam_test.cpp). The
// option's checks run everywhere; the rest needs a GPU (scripts/gpu_build.sh test runs it).
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/train/trainer.h"
#include "test_util.h"
#include "train/step_graph.h"

using namespace sparq;

namespace {

using test::blobs;

train::TrainOptions options(const std::string& device, const std::string& graph) {
  train::TrainOptions o;
  o.lr = 0.01;
  o.batch_size = 64;
  o.epochs = 3;
  o.seed = 3;
  o.device = device;
  o.cuda_graph = graph;
  o.progress = train::Progress::None;
  return o;
}

const char* kFixed8 =
    "quantization_parameters: {default_weight_integer_bits: 1, default_weight_fractional_bits: 6, "
    "default_data_keep_negatives: 1, default_data_integer_bits: 3, default_data_fractional_bits: 4}";
// HGQ after one pretraining epoch, beta ramped per epoch: the stage change re-captures the step
// and the beta tensor changes under the captured graph.
const char* kHgq =
    "quantization_parameters: {use_high_granularity_quantization: true, granularity: per_weight, hgq_gamma: 1.0e-4,"
    " hgq_beta_schedule: [[1, 1.0e-6, log], [3, 1.0e-4, constant]], default_weight_integer_bits: 1,"
    " default_weight_fractional_bits: 6, default_data_keep_negatives: 1, default_data_integer_bits: 3,"
    " default_data_fractional_bits: 4}\n"
    "training_parameters: {pretraining_epochs: 1, epochs: 2, fine_tuning_epochs: 0}";

struct Run {
  std::vector<train::EpochMetrics> history;
  std::vector<torch::Tensor> params;
  std::string note;
};

Run train_run(const std::string& config, const std::string& graph, const std::string& optimizer = "adam",
              int64_t samples = 64 * 6 + 17) {
  train::seed_everything(3);
  models::Graph model(test::blobs_mlp());
  Plan plan = config.empty() ? Plan{} : test::pquant_plan(config);
  if (!config.empty()) compress(model, plan);
  auto o = options("cuda", graph);
  o.optimizer = optimizer;
  if (optimizer == "sgd") o.momentum = 0.9, o.lr = 0.05;
  train::Trainer trainer(model, o, plan.schedule, plan.events);
  Run r;
  r.history = trainer.fit(blobs(samples, 1), blobs(200, 2));  // a short last batch is launched
  for (const auto& p : model->parameters()) r.params.push_back(p.detach().cpu());
  r.note = trainer.step_graph_note();
  return r;
}

}  // namespace

TEST(CudaGraph, OptionIsCheckedAndIgnoredOnTheCpu) {
  models::Graph model(test::blobs_mlp());
  EXPECT_THROW(train::Trainer(model, options("cpu", "sometimes")), Error);
  train::Trainer trainer(model, options("cpu", "on"), std::nullopt);
  trainer.fit(blobs(100, 1), blobs(50, 2));
  EXPECT_EQ(trainer.step_graph_note(), "");  // CPU steps are launched, nothing to say
}

TEST(CudaGraph, CapturedRunsEqualLaunchedRuns) {
  // Float, fixed8 and HGQ (a stage change and a beta that moves each epoch), Adam and SGD with
  // momentum: the metrics and weights of captured steps equal the launched steps' up to the
  // GPU's reductions (1e-4).
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  // "hgq, full batches": every step of an epoch replayed, none launched in between.
  struct Case {
    std::string name, config, optimizer;
    int64_t samples = 64 * 6 + 17;
  };
  for (const auto& c : {Case{"float", "", "adam"}, Case{"fixed8", kFixed8, "adam"}, Case{"hgq", kHgq, "adam"},
                        Case{"hgq, full batches", kHgq, "adam", 64 * 6}, Case{"float sgd", "", "sgd"}}) {
    SCOPED_TRACE(c.name);
    auto launched = train_run(c.config, "off", c.optimizer, c.samples),
         captured = train_run(c.config, "on", c.optimizer, c.samples);
    EXPECT_EQ(launched.note, "");
    EXPECT_EQ(captured.note, "captured");
    test::expect_epochs_near(launched.history, captured.history);
    for (size_t e = 0; e < launched.history.size() && e < captured.history.size(); ++e) {
      const auto &l = launched.history[e], &g = captured.history[e];
      EXPECT_NEAR(l.train_accuracy, g.train_accuracy, 2.0 / 401) << "epoch " << e + 1;  // a tie may flip
      EXPECT_NEAR(l.value("hgq_loss"), g.value("hgq_loss"), 1e-4 * std::max(1e-3, std::abs(l.value("hgq_loss"))));
    }
    ASSERT_EQ(launched.params.size(), captured.params.size());
    for (size_t p = 0; p < launched.params.size(); ++p)
      EXPECT_TRUE(torch::allclose(launched.params[p], captured.params[p], 1e-4, 1e-4)) << "parameter " << p;
    EXPECT_LT(launched.history.back().train_loss, launched.history.front().train_loss);  // it trained
    if (c.config == kHgq) {  // the widths moved between evaluations (1%): a stale EBOPs (a cache of
      // rounded widths keyed on version counters, which a replay does not move) would not follow
      EXPECT_GT(std::abs(launched.history[1].cost.ebops - launched.history.back().cost.ebops),
                5e-3 * launched.history.back().cost.ebops);
    }
  }
}

TEST(CudaGraph, AutoFallsBackWithAReasonAndOnRefuses) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const std::string pdp = "pruning_parameters: {pruning_method: pdp, sparsity: 0.5, epsilon: 0.25}\n"
                          "training_parameters: {pretraining_epochs: 0, epochs: 2, fine_tuning_epochs: 0}";
  auto run = train_run(pdp, "auto");
  EXPECT_EQ(run.note, "launched: pruning methods decide on the host during steps");
  EXPECT_THROW(train_run(pdp, "on"), Error);
}

TEST(CudaGraph, ResumeOfACapturedRunContinuesItsStepCounts) {
  // The device step counts go into the checkpoint: a run stopped after epoch 1 and resumed equals
  // the straight run (up to the GPU's reductions).
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto weights = [](const std::string& dir, int64_t stop_after, bool resume) {
    train::seed_everything(3);
    models::Graph model(test::blobs_mlp());
    if (resume) torch::manual_seed(99);  // other initial weights: everything must come from the checkpoint
    models::Graph fresh = resume ? models::Graph(test::blobs_mlp()) : model;
    test::RunTrainer trainer(fresh, options("cuda", "on"), dir);
    trainer.fit(blobs(64 * 6, 1), blobs(100, 2), resume, stop_after);
    std::vector<torch::Tensor> w;
    for (const auto& p : fresh->parameters()) w.push_back(p.detach().cpu());
    return w;
  };
  test::TempDir full("cg_full"), split("cg_split");
  auto straight = weights(full.path().string(), -1, false);
  weights(split.path().string(), 1, false);
  auto resumed = weights(split.path().string(), -1, true);
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t p = 0; p < straight.size(); ++p) EXPECT_TRUE(torch::allclose(straight[p], resumed[p], 1e-5, 1e-5)) << p;
}
