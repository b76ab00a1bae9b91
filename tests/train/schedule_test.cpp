// The staged Trainer: stage and hook order (PQuantML's train_model, spec §5.1-5.4), rewind
// policies, loss terms only in the training stage, and resume in the middle of a stage.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "sparq/compress/compress.h"
#include "sparq/error.h"
#include "sparq/train/trainer.h"
#include "test_util.h"

using namespace sparq;

namespace {

using test::blobs;

/// A method that writes every hook call to a shared log, keeps a counter buffer (state the
/// checkpoint must hold), masks weights below a threshold it tightens after every epoch, and adds a
/// loss term that depends on both.
class Recording : public prune::PruningMethod {
 public:
  Recording(std::string name, std::vector<std::string>* log) : name_(std::move(name)), log_(log) {
    epochs_seen = register_buffer("epochs_seen", torch::zeros({}, torch::kInt64));
  }
  torch::Tensor apply(const torch::Tensor& w) override {
    last_ = w;
    double cut = 0.02 * epochs_seen.item<int64_t>();
    return w * (w.abs() >= cut).to(w.scalar_type());
  }
  torch::Tensor hard_mask(const torch::Tensor& w) override { return torch::ones_like(w); }
  torch::Tensor loss() override {
    return 1e-3 * (1.0 + epochs_seen.item<int64_t>()) * last_.pow(2).mean();
  }
  void post_pretrain() override { note("post_pretrain"), PruningMethod::post_pretrain(); }
  void post_round() override { note("post_round"); }
  void pre_finetune() override { note("pre_finetune"), PruningMethod::pre_finetune(); }
  void pre_epoch(int64_t e, int64_t n) override { note(fmt::format("pre_epoch {}/{} {}", e, n, prune::to_string(stage()))); }
  void post_epoch(int64_t e, int64_t n) override {
    note(fmt::format("post_epoch {}/{}", e, n));
    epochs_seen += 1;
  }
  void update_mask(const torch::Tensor&) override { note("update_mask"); }

  torch::Tensor epochs_seen;

 private:
  void note(const std::string& what) {
    if (log_) log_->push_back(name_ + " " + what);
  }
  std::string name_;
  std::vector<std::string>* log_;
  torch::Tensor last_;
};

train::TrainOptions options() {
  train::TrainOptions o;
  o.lr = 0.01;
  o.batch_size = 32;
  o.seed = 3;
  o.progress = train::Progress::None;
  return o;
}

/// An MLP with quantized PQ layers and a Recording method on each weight layer (fc2's pruning off).
models::Graph recorded_model(std::vector<std::string>* log) {
  train::seed_everything(3);
  models::Graph model(test::blobs_mlp());
  compress(model, test::pquant_plan("quantization_parameters: {}"));
  for (const char* name : {"fc1", "fc2"}) {
    auto layer = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, name));
    layer->set_pruning(std::make_shared<Recording>(name, log));
    layer->enable_pruning = std::string(name) == "fc1";
  }
  return model;
}

Schedule schedule(int64_t pre, int64_t epochs, int64_t rounds, int64_t ft, Rewind rewind = Rewind::Never,
                  int64_t save = -1) {
  Schedule s;
  s.pretraining_epochs = pre, s.epochs = epochs, s.rounds = rounds, s.fine_tuning_epochs = ft;
  s.rewind = rewind, s.save_weights_epoch = save;
  return s;
}

std::vector<std::string> only(const std::vector<std::string>& log, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& l : log)
    if (l.rfind(prefix, 0) == 0) out.push_back(l.substr(prefix.size()));
  return out;
}

torch::Tensor weight_of(models::Graph& model, const std::string& name) {
  return std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, name))->weight.detach().clone();
}

}  // namespace

TEST(Schedule, SlotsOfGlobalEpochs) {
  auto s = schedule(2, 3, 2, 1);
  EXPECT_EQ(s.total_epochs(), 9);
  auto slot = train::slot_of(s, 1);
  EXPECT_EQ(slot.stage, prune::Stage::Pretraining);
  EXPECT_EQ(slot.epoch, 1);
  slot = train::slot_of(s, 6);  // pretraining 0-1, round 0: 2-4, round 1: 5-7
  EXPECT_EQ(slot.stage, prune::Stage::Training);
  EXPECT_EQ(slot.round, 1);
  EXPECT_EQ(slot.epoch, 1);
  EXPECT_EQ(slot.stage_epochs, 3);
  slot = train::slot_of(s, 8);
  EXPECT_EQ(slot.stage, prune::Stage::FineTuning);
  EXPECT_EQ(slot.epoch, 0);
}

TEST(Schedule, HookOrderFollowsPQuantMLsTrainModel) {
  std::vector<std::string> log;
  auto model = recorded_model(&log);
  test::RunTrainer trainer(model, options(), "", schedule(1, 2, 2, 1));
  auto history = trainer.fit(blobs(64, 1), blobs(32, 2));
  ASSERT_EQ(history.size(), 6u);
  const std::vector<std::string> fc1 = {
      "pre_epoch 0/1 pretraining", "post_epoch 0/1", "update_mask", "post_pretrain",
      "pre_epoch 0/2 training",    "post_epoch 0/2", "update_mask", "pre_epoch 1/2 training",
      "post_epoch 1/2",            "update_mask",    "post_round",  "pre_epoch 0/2 training",
      "post_epoch 0/2",            "update_mask",    "pre_epoch 1/2 training", "post_epoch 1/2",
      "update_mask",               "pre_finetune",   "pre_epoch 0/1 fine-tuning", "post_epoch 0/1",
      "update_mask"};
  EXPECT_EQ(only(log, "fc1 "), fc1);
  // fc2 prunes nothing: every hook but update_mask still runs (as in PQuantML).
  std::vector<std::string> fc2;
  for (const auto& l : fc1)
    if (l != "update_mask") fc2.push_back(l);
  EXPECT_EQ(only(log, "fc2 "), fc2);
  // Stage, round and the loss term per epoch: the term only in the training stage.
  std::vector<std::string> stages;
  for (const auto& m : history) {
    stages.push_back(fmt::format("{}:{}:{}", prune::to_string(m.slot.stage), m.slot.round, m.slot.epoch));
    if (m.slot.stage == prune::Stage::Training) EXPECT_GT(m.value("extra_loss"), 0.0);
    else EXPECT_EQ(m.value("extra_loss"), 0.0);
  }
  EXPECT_EQ(stages, (std::vector<std::string>{"pretraining:0:0", "training:0:0", "training:0:1", "training:1:0",
                                              "training:1:1", "fine-tuning:0:0"}));
}

TEST(Schedule, StageChangesRunAlsoWithEmptyStages) {
  std::vector<std::string> log;
  auto model = recorded_model(&log);
  test::RunTrainer trainer(model, options(), "", schedule(0, 1, 1, 0));
  trainer.fit(blobs(64, 1), blobs(32, 2));
  EXPECT_EQ(only(log, "fc1 "), (std::vector<std::string>{"post_pretrain", "pre_epoch 0/1 training", "post_epoch 0/1",
                                                          "update_mask", "pre_finetune"}));
}

TEST(Schedule, RewindPolicies) {
  auto train = blobs(96, 4), eval = blobs(32, 5);
  // every-round: the snapshot (start of round-0 epoch 1) comes back after every round, and
  // post-round hooks never run.
  {
    std::vector<std::string> log;
    auto model = recorded_model(&log);
    test::RunTrainer trainer(model, options(), "", schedule(1, 3, 2, 0, Rewind::EveryRound, 1));
    // Weights at the snapshot: train the same run up to that point.
    std::vector<std::string> ignore;
    auto probe = recorded_model(&ignore);
    test::RunTrainer probe_trainer(probe, options(), "", schedule(1, 3, 2, 0, Rewind::EveryRound, 1));
    probe_trainer.fit(train, eval, false, /*stop_after=*/2);
    auto snapshot = weight_of(probe, "fc1");
    trainer.fit(train, eval);
    EXPECT_TRUE(weight_of(model, "fc1").equal(snapshot));
    EXPECT_TRUE(only(log, "fc1 post_round").empty());
  }
  // post-training-stage: post-round between rounds, the snapshot back after the last round only;
  // biases are not rewound.
  {
    std::vector<std::string> log;
    auto model = recorded_model(&log);
    test::RunTrainer trainer(model, options(), "", schedule(0, 2, 3, 1, Rewind::PostTrainingStage, 0));
    std::vector<std::string> ignore;
    auto probe = recorded_model(&ignore);
    auto initial = weight_of(probe, "fc2");
    auto bias_before = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc2"))->bias.detach().clone();
    trainer.fit(train, eval, false, /*stop_after=*/6);  // stops right after the rewind
    EXPECT_TRUE(weight_of(model, "fc2").equal(initial));  // epoch 0 of round 0 starts from the initial weights
    auto bias_after = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc2"))->bias.detach();
    EXPECT_FALSE(bias_after.equal(bias_before));
    EXPECT_EQ(only(log, "fc1 post_round").size(), 2u);
  }
  // never: post-round between rounds, no rewind even with a snapshot.
  {
    std::vector<std::string> log;
    auto model = recorded_model(&log);
    auto initial = weight_of(model, "fc2");
    test::RunTrainer trainer(model, options(), "", schedule(0, 2, 2, 0, Rewind::Never, 0));
    trainer.fit(train, eval);
    EXPECT_FALSE(weight_of(model, "fc2").equal(initial));
    EXPECT_EQ(only(log, "fc1 post_round").size(), 1u);
  }
}

TEST(Schedule, ResumeMidStageContinuesTheSameSchedule) {
  auto train = blobs(96, 6), eval = blobs(32, 7);
  // Stops inside round 0 after the snapshot, and inside fine-tuning: both must end where an
  // uninterrupted run ends (weights, quantizer and method state, metrics).
  auto s = schedule(1, 3, 2, 2, Rewind::PostTrainingStage, 1);
  auto run = [&](const std::string& dir, std::vector<int64_t> stops) {
    std::vector<torch::Tensor> state;
    std::vector<train::EpochMetrics> last;
    bool resume = false;
    stops.push_back(-1);
    for (int64_t stop : stops) {
      auto model = recorded_model(nullptr);
      test::RunTrainer trainer(model, options(), dir, s);
      last = trainer.fit(train, eval, resume, stop);
      resume = true;
      state.clear();
      for (const auto& p : model->parameters()) state.push_back(p.detach().clone());
      for (const auto& b : model->buffers()) state.push_back(b.detach().clone());
    }
    return std::make_pair(state, last.back());
  };
  test::TempDir full("sched_full"), split("sched_split");
  auto [straight, straight_last] = run(full.path().string(), {});
  auto [resumed, resumed_last] = run(split.path().string(), {3, 8});
  ASSERT_EQ(straight.size(), resumed.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_TRUE(straight[i].equal(resumed[i])) << i;
  EXPECT_EQ(straight_last.train_loss, resumed_last.train_loss);
  EXPECT_EQ(resumed_last.epoch, 9);
  // metrics.jsonl has one line per epoch with stage and round.
  std::ifstream in(split.file("metrics.jsonl"));
  std::vector<std::string> stages;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    stages.push_back(j["stage"].get<std::string>() + std::to_string(j["round"].get<int>()));
    EXPECT_TRUE(j.contains("sparsity"));
  }
  EXPECT_EQ(stages, (std::vector<std::string>{"pretraining1", "training1", "training1", "training1", "training2",
                                              "training2", "training2", "fine-tuning1", "fine-tuning1"}));
}

TEST(Schedule, BadSchedulesAreRejected) {
  auto model = recorded_model(nullptr);
  EXPECT_THROW(test::RunTrainer(model, options(), "", schedule(0, 2, 0, 0)), Error);
  EXPECT_THROW(test::RunTrainer(model, options(), "", schedule(0, 2, 1, 0, Rewind::Never, 2)), Error);
}
