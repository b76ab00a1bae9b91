// The callbacks and loss terms the Trainer installs itself, from what the model holds:
// - StageHooks: the stage schedule (pretraining -> rounds with rewind -> fine-tuning) driving the
//   pruning methods' hooks, global budgets, rewinding, and the final hard masks; the hooks between
//   epochs run after the epoch's numbers are measured and before the checkpoint is written;
// - PruningLoss: the pruning methods' loss terms in the training stage ("extra_loss");
// - HgqLoss: beta·EBOPs + gamma·bits of the HGQ layers after pretraining ("hgq_loss"), beta
//   from the Plan's HgqBeta curve; freezes the widths after the last epoch;
// - EventFirer: the Plan's events at the step of their epoch.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "sparq/train/trainer.h"

namespace sparq::train {

struct WeightLayer {
  std::string name;
  std::shared_ptr<layers::PQWeightLayer> layer;
};

class StageHooks : public Callback {
 public:
  explicit StageHooks(std::vector<WeightLayer> layers) : layers_(std::move(layers)) {}
  void on_train_begin(Trainer& t, const TrainContext& ctx) override;
  void on_epoch_begin(Trainer& t, const TrainContext& ctx) override;
  void on_epoch_end(Trainer& t, const TrainContext& ctx, EpochMetrics& m) override;
  void on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) override;
  void save(torch::serialize::OutputArchive& root) override;
  void load(torch::serialize::InputArchive& root) override;

 private:
  /// The hooks due between global epochs b-1 and b (stage changes, post-round rule, snapshot).
  void boundary(const Schedule& s, int64_t b);
  void post_round_rule(const Schedule& s, int64_t round);
  void rewind();
  void apply_global_budget();
  void prune_weights();
  std::vector<WeightLayer> layers_;
  std::map<std::string, torch::Tensor> snapshot_;  ///< weights kept for rewinding, by layer
  int64_t done_boundary_ = -1;                     ///< the last boundary whose hooks ran
};

class PruningLoss : public LossTerm {
 public:
  explicit PruningLoss(std::vector<WeightLayer> layers) : layers_(std::move(layers)) {}
  std::string name() const override { return "extra_loss"; }
  torch::Tensor compute(Trainer& t, const TrainContext& ctx) override;

 private:
  std::vector<WeightLayer> layers_;
};

class HgqLoss : public LossTerm {
 public:
  HgqLoss(std::vector<std::shared_ptr<layers::PQLayer>> layers, std::vector<Event> beta_curve)
      : layers_(std::move(layers)), beta_curve_(std::move(beta_curve)) {}
  std::string name() const override { return "hgq_loss"; }
  void on_epoch_begin(Trainer& t, const TrainContext& ctx) override;
  torch::Tensor compute(Trainer& t, const TrainContext& ctx) override;
  void on_epoch_end(Trainer& t, const TrainContext& ctx, EpochMetrics& m) override { m.values["beta"] = beta_; }
  void on_epoch_report(Trainer& t, const TrainContext& ctx, const EpochMetrics& m) override;

 private:
  std::vector<std::shared_ptr<layers::PQLayer>> layers_;
  std::vector<Event> beta_curve_;
  bool active_ = false;
  double beta_ = 0;
  torch::Tensor beta_tensor_;
};

class EventFirer : public Callback {
 public:
  explicit EventFirer(std::vector<Event> events) : events_(std::move(events)) {}
  void on_train_begin(Trainer& t, const TrainContext& ctx) override;
  void on_step_begin(Trainer& t, const TrainContext& ctx) override;

 private:
  void fire(Trainer& t, const Event& e);
  std::vector<Event> events_;  ///< without HgqBeta (a curve HgqLoss reads)
  std::vector<std::pair<int64_t, size_t>> due_;  ///< (step, event) in firing order
  size_t next_ = 0;
};

}  // namespace sparq::train
