// The Trainer: the staged schedule (pretraining -> rounds of training with rewind -> fine-tuning)
// with the hook calls into pruning methods, losses, optimizers, progress, metrics.jsonl,
// checkpoints and resume. Deterministic on CPU for a given seed and thread count.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparq/data/dataset.h"
#include "sparq/layers/pq_layers.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/prune/pruning_method.h"

namespace sparq::train {

enum class Progress { Auto, Bar, Lines, None };

struct TrainOptions {
  std::string optimizer = "adam";  ///< adam | adamw | sgd
  double lr = 1e-3;
  double weight_decay = 0.0;
  double momentum = 0.0;           ///< sgd
  bool nesterov = false;           ///< sgd
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  ///< adam, adamw
  int64_t batch_size = 256;
  int64_t eval_batch_size = 0;     ///< 0: same as batch_size
  int64_t epochs = 5;                ///< used when the Trainer gets no Schedule
  uint64_t seed = 0;
  std::string loss = "cross_entropy";  ///< cross_entropy | mse
  std::string device = "cpu";      ///< "cpu", "cuda", "cuda:N"
  Progress progress = Progress::Auto;
  /// HGQ: beta per epoch of the EBOPs loss term (added with the gamma terms from the end of
  /// pretraining on, for models with HGQ quantizers).
  BetaSchedule hgq_beta;
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

/// Where a global epoch falls in a schedule.
struct EpochSlot {
  prune::Stage stage = prune::Stage::Training;
  int64_t round = 0;         ///< 0-based; 0 outside the training stage
  int64_t epoch = 0;         ///< stage-local (restarts each round), 0-based
  int64_t stage_epochs = 0;  ///< epochs of this stage (of one round in the training stage)
};
/// The slot of 0-based global epoch `g` (0 <= g < total_epochs()).
EpochSlot slot_of(const Schedule& schedule, int64_t g);

struct EpochMetrics {
  int64_t epoch = 0;               ///< 1-based global epoch
  EpochSlot slot;
  double extra_loss = 0;           ///< mean per batch of the pruning methods' loss terms
  double hgq_loss = 0;             ///< mean per batch of beta·EBOPs + gamma·bits (HGQ)
  double beta = 0;                 ///< HGQ beta of this epoch (0 while the terms are off)
  double train_loss = 0, train_accuracy = 0;
  EvalResult eval;
  double seconds = 0;              ///< training pass only
  double samples_per_second = 0;
  double lr = 0;
  /// Per PQ layer and in total: weights, non-zero weights, weight bits, EBOPs (compressed models).
  std::vector<std::pair<std::string, layers::LayerCost>> layer_costs;
  layers::LayerCost cost;
  double sparsity = 0;             ///< pruned (zero) fraction of the effective weights
};

/// Seeds LibTorch's generators; call before building the model so initial weights repeat.
void seed_everything(uint64_t seed);

class Trainer {
 public:
  /// `run_dir` receives metrics.jsonl and checkpoint.pt (created if missing; "" writes nothing).
  /// Without a schedule the run is one training stage of options.epochs.
  Trainer(models::Graph model, TrainOptions options, std::string run_dir,
          std::optional<Schedule> schedule = std::nullopt);
  ~Trainer();

  /// Trains on `train` through the schedule, evaluating `eval` after every epoch. With `resume`,
  /// continues from run_dir/checkpoint.pt: the result equals an uninterrupted run bit for bit.
  /// `stop_after` > 0 stops after that many global epochs (the checkpoint allows resuming).
  std::vector<EpochMetrics> fit(const data::Dataset& train, const data::Dataset& eval,
                                bool resume = false, int64_t stop_after = -1);
  /// Loss and accuracy of the model on `ds` (eval mode, no gradients).
  EvalResult evaluate(const data::Dataset& ds);

  /// Writes weights, optimizer state, generator state and the number of completed epochs.
  void save_checkpoint(const std::string& path, int64_t epochs_done);
  /// Restores what save_checkpoint wrote; returns the number of completed epochs.
  int64_t load_checkpoint(const std::string& path);

  models::Graph& model() { return model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const TrainOptions& options() const { return options_; }
  const Schedule& schedule() const { return schedule_; }

 private:
  struct WeightLayer {
    std::string name;
    std::shared_ptr<layers::PQWeightLayer> layer;
  };
  /// The hooks due between global epochs b-1 and b (stage changes, post-round rule, snapshot).
  void run_boundary(int64_t b);
  void post_round_rule(int64_t round);
  void rewind();
  /// PDP/Wanda: each layer's share of the global sparsity target (at the start of training).
  void apply_global_budget();
  /// Multiplies every pruning layer's weight by its hard mask (at the end of the schedule).
  void prune_weights();
  /// Sum of the pruning methods' loss terms of this step (undefined when there are none).
  torch::Tensor pruning_loss();
  /// Sum of the HGQ layers' beta·EBOPs + gamma·bits (undefined when there are none).
  torch::Tensor hgq_loss(double beta);

  void load_weights(torch::serialize::InputArchive& weights, const std::string& path);
  torch::Tensor loss_of(const torch::Tensor& output, const torch::Tensor& target) const;

  models::Graph model_;
  TrainOptions options_;
  std::string run_dir_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  Schedule schedule_;
  std::vector<WeightLayer> weight_layers_;
  std::vector<std::shared_ptr<layers::PQLayer>> hgq_layers_;  ///< PQ layers with HGQ quantizers
  std::map<std::string, torch::Tensor> snapshot_;  ///< weights kept for rewinding, by layer
};

/// The optimizer named by `options` over `parameters`; throws sparq::Error for unknown names.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options);

}  // namespace sparq::train
