// Trainer v2: events at fractional epochs fire at their step (also in a resumed run), callbacks see
// every phase in order, loss terms are added and reported, parameter groups change mid-run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sparq/compress/compress.h"
#include "sparq/train/trainer.h"
#include "test_util.h"

using namespace sparq;

namespace {

train::TrainOptions options(int64_t batch, int64_t epochs) {
  train::TrainOptions o;
  o.batch_size = batch, o.epochs = epochs, o.seed = 2, o.progress = train::Progress::None;
  return o;
}

Event event(Event::Kind kind, double at_epoch, double value, std::string groups = "") {
  Event e;
  e.kind = kind, e.at_epoch = at_epoch, e.value = value, e.groups = std::move(groups);
  return e;
}

/// Records the learning rate of the first group at every step's begin (after the events fired).
struct LrLog : train::Callback {
  std::vector<std::pair<int64_t, double>> steps;
  std::vector<double> epochs_at;  ///< the fractional epoch of each step
  void on_step_begin(train::Trainer& t, const train::TrainContext& ctx) override {
    steps.emplace_back(ctx.global_step, t.optimizer().param_groups()[0].options().get_lr());
    epochs_at.push_back(ctx.epoch);
  }
  /// The first global step that ran with `lr`.
  int64_t first_with(double lr) const {
    for (const auto& [step, value] : steps)
      if (value == lr) return step;
    return -1;
  }
};

}  // namespace

TEST(Events, FireAtTheStepOfTheirFractionalEpochAlsoWhenResumed) {
  // 400 samples in batches of 4: 100 steps per epoch; an LR event at epoch 1.5 is due at step 150.
  auto train = test::blobs(400, 1), eval = test::blobs(16, 2);
  const std::vector<Event> events = {event(Event::Kind::LearningRate, 1.5, 0.25)};
  auto run = [&](const std::string& dir, int64_t stop, bool resume) {
    train::seed_everything(2);
    models::Graph model(test::blobs_mlp());
    test::RunTrainer trainer(model, options(4, 3), dir, std::nullopt, events);
    auto log = std::make_shared<LrLog>();
    trainer->add_callback(log);
    trainer.fit(train, eval, resume, stop);
    return log;
  };
  test::TempDir straight("events"), split("events_split"), late("events_late");
  auto full = run(straight.path().string(), -1, false);
  ASSERT_EQ(full->steps.size(), 300u);
  EXPECT_EQ(full->first_with(0.25), 150);
  EXPECT_EQ(full->steps[149].second, 1e-3);  // the step before still had the initial rate
  EXPECT_DOUBLE_EQ(full->epochs_at[150], 1.5);
  // Stopped after epoch 1 and resumed: the event fires at the same step.
  run(split.path().string(), 1, false);
  auto resumed = run(split.path().string(), -1, true);
  EXPECT_EQ(resumed->steps.front().first, 100);
  EXPECT_EQ(resumed->first_with(0.25), 150);
  // Stopped after epoch 2 (past the event) and resumed: the event's setting is replayed.
  run(late.path().string(), 2, false);
  auto after = run(late.path().string(), -1, true);
  EXPECT_EQ(after->steps.front(), (std::pair<int64_t, double>{200, 0.25}));
}

TEST(Events, StepEventsGroupsTrainabilityAndQuantization) {
  auto train = test::blobs(64, 3), eval = test::blobs(16, 4);
  train::seed_everything(2);
  models::Graph model(test::blobs_mlp());
  compress(model, test::pquant_plan("quantization_parameters: {}"));
  Event freeze = event(Event::Kind::Trainable, 0, 0, "fc1");
  Event off = event(Event::Kind::Quantization, 0, 0);
  off.at_step = 3;  // steps, not epochs
  test::RunTrainer trainer(model, options(16, 2), "", std::nullopt, {freeze, off});
  EXPECT_EQ(trainer->group_names(), (std::vector<std::string>{"fc1", "fc2"}));
  auto fc1 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc1"));
  auto fc2 = std::dynamic_pointer_cast<layers::PQWeightLayer>(pq_layer(model, "fc2"));
  auto fc1_before = fc1->weight.detach().clone(), fc2_before = fc2->weight.detach().clone();
  trainer.fit(train, eval);
  EXPECT_TRUE(fc1->weight.equal(fc1_before));   // frozen from step 0
  EXPECT_FALSE(fc2->weight.equal(fc2_before));  // trained
  for (const auto& [target, q] : fc2->quantizers()) EXPECT_FALSE(q->enabled) << target;
  trainer->set_lr("fc2", 0.5);
  EXPECT_EQ(trainer->optimizer().param_groups()[1].options().get_lr(), 0.5);
  EXPECT_EQ(trainer->optimizer().param_groups()[0].options().get_lr(), 1e-3);
}

namespace {

struct PhaseLog : train::Callback {
  std::vector<std::string> log;
  void on_train_begin(train::Trainer&, const train::TrainContext& c) override { add("train_begin", c.epoch_index); }
  void on_epoch_begin(train::Trainer&, const train::TrainContext& c) override { add("epoch_begin", c.epoch_index); }
  void on_step_begin(train::Trainer&, const train::TrainContext& c) override { add("step_begin", c.global_step); }
  void on_after_backward(train::Trainer& t, const train::TrainContext& c) override {
    // Gradients exist here, before the optimizer step.
    add(t.model()->parameters()[0].grad().defined() ? "after_backward" : "after_backward without grad", c.global_step);
  }
  void on_step_end(train::Trainer&, const train::TrainContext& c) override { add("step_end", c.global_step); }
  void on_epoch_end(train::Trainer&, const train::TrainContext& c, train::EpochMetrics&) override {
    add("epoch_end", c.epoch_index);
  }
  void on_epoch_report(train::Trainer&, const train::TrainContext& c, const train::EpochMetrics& m) override {
    add("epoch_report", c.epoch_index);
    constant = m.value("constant");
  }
  void on_train_end(train::Trainer&, const train::TrainContext& c) override { add("train_end", c.epoch_index); }
  void add(const std::string& what, int64_t n) { log.push_back(what + " " + std::to_string(n)); }
  double constant = 0;
};

/// A loss term that adds a constant (its gradient is zero, its mean is reported).
struct Constant : train::LossTerm {
  std::string name() const override { return "constant"; }
  torch::Tensor compute(train::Trainer& t, const train::TrainContext&) override {
    return torch::full({}, 0.75, torch::TensorOptions().device(t.device()));
  }
};

}  // namespace

TEST(Trainer, CallbacksSeeEveryPhaseInOrderAndLossTermsAreReported) {
  auto train = test::blobs(32, 5);
  train::seed_everything(2);
  models::Graph model(test::blobs_mlp());
  train::Trainer trainer(model, options(16, 2));
  auto phases = std::make_shared<PhaseLog>();
  trainer.add_callback(phases);
  trainer.add_loss_term(std::make_shared<Constant>());
  auto history = trainer.fit(train, data::Dataset{});
  const std::vector<std::string> one_epoch = {"step_begin", "after_backward", "step_end"};
  std::vector<std::string> expected = {"train_begin 0"};
  for (int64_t e = 0, step = 0; e < 2; ++e) {
    expected.push_back("epoch_begin " + std::to_string(e));
    for (int s = 0; s < 2; ++s, ++step)
      for (const auto& p : one_epoch) expected.push_back(p + " " + std::to_string(step));
    expected.push_back("epoch_end " + std::to_string(e));
    expected.push_back("epoch_report " + std::to_string(e));
  }
  expected.push_back("train_end 2");
  EXPECT_EQ(phases->log, expected);
  EXPECT_DOUBLE_EQ(phases->constant, 0.75);
  EXPECT_DOUBLE_EQ(history.back().value("constant"), 0.75);
  // The task loss is reported without the term: a run without it (the constant has no gradient,
  // so training is the same) reports the same train loss.
  train::seed_everything(2);
  models::Graph plain_model(test::blobs_mlp());
  train::Trainer plain(plain_model, options(16, 2));
  auto plain_history = plain.fit(train, data::Dataset{});
  EXPECT_EQ(history.back().train_loss, plain_history.back().train_loss);
  EXPECT_EQ(plain_history.back().value("constant"), 0.0);
}

TEST(Trainer, StepIsUsableOnItsOwn) {
  // What the bench times: begin_training / begin_epoch, then step() per batch.
  train::seed_everything(2);
  models::Graph model(test::blobs_mlp());
  train::Trainer trainer(model, options(8, 1));
  auto ds = test::blobs(64, 6);
  data::Batches batches(ds, 8, false);
  trainer.begin_training(batches.count());
  trainer.begin_epoch(0);
  auto first = trainer.step(batches.get(0).first, batches.get(0).second).loss.item<double>();
  for (int r = 0; r < 30; ++r)
    for (int64_t b = 0; b < batches.count(); ++b) trainer.step(batches.get(b).first, batches.get(b).second);
  EXPECT_EQ(trainer.context().global_step, 1 + 30 * batches.count());
  EXPECT_LT(trainer.step(batches.get(0).first, batches.get(0).second).loss.item<double>(), first / 2);
}
