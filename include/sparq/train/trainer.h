// The Trainer: a public step() over one batch and the epoch loop around it, with callbacks at
// train/epoch/step begin and end and after backward, loss terms from a registered list, optimizer
// parameter groups per graph node (learning rate, weight decay and trainability can change
// mid-run), and the Plan's events fired at the step of their fractional epoch. What a run adds
// comes as callbacks: the stage schedule's hooks into pruning methods (train/stages.h), HGQ's
// loss terms, metrics.jsonl and checkpoints (train/callbacks.h); console output is the CLI's. The
// library never prints. Deterministic on CPU for a given seed and thread count.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

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
  /// Replays the training step as a CUDA graph (CUDA only): "auto" where the run allows it (else
  /// eager steps, the reason in Trainer::step_graph_note()), "on" (an error where it cannot),
  /// "off". CPU runs ignore it.
  std::string cuda_graph = "auto";
  /// Runs the training forward and backward of a chain of Dense, ReLU and quantizer layers in the
  /// fused MLP kernels (train/fused_mlp.h): "auto" on a GPU where the model allows it (else the
  /// layers' own ops, the reason in Trainer::fused_mlp_note(); the default), "on" (an error where
  /// it cannot; on the CPU it runs the kernels' CPU twin, slower than the layers' ops), "off".
  std::string fused_mlp = "auto";
  Progress progress = Progress::Auto;  ///< for the console callback of the CLI
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
/// "training round 2/3 epoch 1/4", "pretraining 1/2".
std::string slot_text(const Schedule& schedule, const EpochSlot& slot);

/// Where training is, as every callback sees it.
struct TrainContext {
  int64_t global_step = 0;      ///< optimizer steps done (0-based index of the step about to run)
  int64_t epoch_index = 0;      ///< 0-based global epoch
  double epoch = 0;             ///< fractional: epoch_index + step_in_epoch / steps_per_epoch
  int64_t step_in_epoch = 0;
  int64_t steps_per_epoch = 0;
  int64_t total_epochs = 0;
  int64_t start_epoch = 0;      ///< the first epoch of this fit() (> 0 when resumed)
  bool resumed = false;
  EpochSlot slot;               ///< stage, round, stage-local epoch
};

struct EpochMetrics {
  int64_t epoch = 0;               ///< 1-based global epoch
  EpochSlot slot;
  /// Loss terms (mean per batch, by the term's name: "extra_loss", "hgq_loss") and values the
  /// callbacks add ("beta").
  std::map<std::string, double> values;
  double train_loss = 0, train_accuracy = 0;
  EvalResult eval;
  double seconds = 0;              ///< training pass only
  double samples_per_second = 0;
  double lr = 0;
  /// Per PQ layer and in total: weights, non-zero weights, weight bits, EBOPs (compressed models).
  std::vector<std::pair<std::string, layers::LayerCost>> layer_costs;
  layers::LayerCost cost;
  double sparsity = 0;             ///< pruned (zero) fraction of the effective weights
  double value(const std::string& name) const;  ///< 0 when absent
};

class Trainer;
class FusedAdam;
class FusedMlp;
class StepGraph;

/// Hooks into training. Default: nothing. `save`/`load` put the callback's state in checkpoints.
class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(Trainer& trainer, const TrainContext& ctx) {}
  virtual void on_epoch_begin(Trainer& trainer, const TrainContext& ctx) {}
  virtual void on_step_begin(Trainer& trainer, const TrainContext& ctx) {}
  /// After backward, before the optimizer step: gradients are there (Taylor, movement).
  virtual void on_after_backward(Trainer& trainer, const TrainContext& ctx) {}
  virtual void on_step_end(Trainer& trainer, const TrainContext& ctx) {}
  /// After the training pass and evaluation; may change the model (masks).
  virtual void on_epoch_end(Trainer& trainer, const TrainContext& ctx, EpochMetrics& metrics) {}
  /// After costs are measured: the epoch's final numbers (reports, files, checkpoints).
  virtual void on_epoch_report(Trainer& trainer, const TrainContext& ctx, const EpochMetrics& metrics) {}
  virtual void on_train_end(Trainer& trainer, const TrainContext& ctx) {}
  virtual void save(torch::serialize::OutputArchive& root) {}
  virtual void load(torch::serialize::InputArchive& root) {}
  /// Why this callback keeps the Trainer from replaying its steps as a CUDA graph; empty: it does
  /// not. A replayed step runs on_step_begin/on_step_end on the host as always, but repeats the
  /// device work of on_after_backward and compute() as captured: a callback that decides on the
  /// host from step to step there names itself here. One whose device work changes at known
  /// points calls Trainer::invalidate_step_graph() then instead.
  virtual std::string graph_blocker() const { return {}; }
};

/// A term added to the task loss each step (its mean per batch is reported under name()).
class LossTerm : public Callback {
 public:
  virtual std::string name() const = 0;
  /// This step's term; undefined: none.
  virtual torch::Tensor compute(Trainer& trainer, const TrainContext& ctx) = 0;
};

/// What one step returns (detached).
struct StepResult {
  torch::Tensor loss;    ///< the task loss
  torch::Tensor output;  ///< the model's output
};

/// Seeds LibTorch's generators; call before building the model so initial weights repeat.
void seed_everything(uint64_t seed);

struct FitOptions {
  std::string resume_from;  ///< a checkpoint to continue from: the result equals an uninterrupted run
  int64_t stop_after = -1;  ///< > 0: stop after that many global epochs
};

class Trainer {
 public:
  /// Without a schedule the run is one training stage of options.epochs. `events`: the Plan's
  /// (learning rate, weight decay, trainability, quantization on/off, HGQ's beta curve).
  Trainer(models::Graph model, TrainOptions options, std::optional<Schedule> schedule = std::nullopt,
          std::vector<Event> events = {});
  ~Trainer();

  /// Runs after the built-in callbacks (stage hooks, HGQ, events), in the order added.
  void add_callback(std::shared_ptr<Callback> callback);
  /// Adds a term to the loss (after the built-in pruning and HGQ terms).
  void add_loss_term(std::shared_ptr<LossTerm> term);
  /// Trains parameters that live outside the model (a distiller's adapters) as one more optimizer
  /// group named `name`; call before fit() so checkpoints hold their optimizer state.
  void add_parameters(const std::string& name, std::vector<torch::Tensor> parameters);
  /// The task loss enters the objective times `weight` (NNI's origin_loss_lambda); the reported
  /// train loss stays the task loss itself.
  void set_task_loss_weight(double weight) { task_loss_weight_ = weight; }
  /// The input batch of the step in progress (loss terms that run a second model read it).
  const torch::Tensor& batch_input() const { return batch_input_; }

  /// Trains on `train` through the schedule, evaluating `eval` after every epoch.
  std::vector<EpochMetrics> fit(const data::Dataset& train, const data::Dataset& eval, const FitOptions& fit = {});
  /// Loss and accuracy of the model on `ds` (eval mode, no gradients).
  EvalResult evaluate(const data::Dataset& ds);

  // The pieces fit() is made of, for loops of one's own (the bench times step()).
  void begin_training(int64_t steps_per_epoch, int64_t start_epoch = 0, bool resumed = false);
  void begin_epoch(int64_t epoch_index);
  /// One optimizer step on a batch: zero gradients, forward, task loss + loss terms, backward,
  /// after-backward callbacks, optimizer step; the epoch's sums stay on the device.
  StepResult step(const torch::Tensor& x, const torch::Tensor& y);
  /// Metrics of the epoch's steps, evaluation on `eval` (if not empty), epoch-end callbacks, costs.
  EpochMetrics end_epoch(const data::Dataset& eval, double seconds);
  void end_training();

  /// Writes weights, optimizer state, generator state, callback state and the epochs done.
  void save_checkpoint(const std::string& path, int64_t epochs_done);
  /// Restores what save_checkpoint wrote; returns the number of completed epochs.
  int64_t load_checkpoint(const std::string& path);

  // Parameter groups: one per graph node with parameters, named by the node.
  const std::vector<std::string>& group_names() const { return group_names_; }
  /// Sets the learning rate / weight decay of the groups whose name matches `regex` ("" all).
  void set_lr(const std::string& regex, double lr);
  void set_weight_decay(const std::string& regex, double weight_decay);
  /// The same by group index (empty: every group); throws sparq::Error for an index out of range.
  void set_lr(const std::vector<size_t>& groups, double lr);
  void set_weight_decay(const std::vector<size_t>& groups, double weight_decay);
  double lr(size_t group) const;
  double weight_decay(size_t group) const;
  /// Freezes (false) or unfreezes the parameters of the matching groups.
  void set_trainable(const std::string& regex, bool trainable);
  /// Turns every quantizer of the model on or off.
  void set_quantization(bool enabled);
  /// The device work of a step changes from the next step on (the set_* calls above do this
  /// themselves): a captured CUDA graph of the step is dropped and captured again.
  void invalidate_step_graph();
  /// How steps run on CUDA: "captured" once a graph replays, else why not (empty on the CPU and
  /// before the first steps).
  const std::string& step_graph_note() const { return graph_note_; }
  /// How the training forward and backward run: "fused MLP kernels" or, once a step declined
  /// them under auto on a GPU, why not (empty before the first step and on the CPU under auto).
  const std::string& fused_mlp_note() const { return fused_note_; }

  models::Graph& model() { return model_; }
  torch::optim::Optimizer& optimizer() { return *optimizer_; }
  const TrainOptions& options() const { return options_; }
  const Schedule& schedule() const { return schedule_; }
  const std::vector<Event>& events() const { return events_; }
  const TrainContext& context() const { return ctx_; }
  torch::Device device() const { return device_; }
  /// Whether some weight layer has a pruning method.
  bool prunes() const { return prunes_; }
  /// The task loss of `output` against `target` (the options' loss).
  torch::Tensor loss_of(const torch::Tensor& output, const torch::Tensor& target) const;

 private:
  /// Built-ins, then loss terms, then added callbacks: the order every hook is called in (kept as
  /// one list, so a step does not rebuild it).
  void list_callbacks();
  void load_weights(torch::serialize::InputArchive& weights, const std::string& path);
  /// The device work of one step (zero gradients through the epoch sums), run eagerly or captured.
  StepResult device_step(const torch::Tensor& x, const torch::Tensor& y);
  /// Replays, captures or declines (nullopt: run device_step eagerly) the step on this batch.
  std::optional<StepResult> graph_step(const torch::Tensor& x, const torch::Tensor& y);
  /// Why this run's steps cannot be captured (empty: they can).
  std::string graph_blocker() const;
  /// The model's training output for x: the fused MLP kernels where training.fused_mlp takes
  /// them, else the model's forward.
  torch::Tensor train_forward(const torch::Tensor& x);
  std::vector<size_t> matching_groups(const std::string& regex) const;

  models::Graph model_;
  TrainOptions options_;
  Schedule schedule_;
  std::vector<Event> events_;
  torch::Device device_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<std::string> group_names_;
  std::vector<torch::Tensor> extra_parameters_;  ///< add_parameters(): zeroed each step like the model's
  double task_loss_weight_ = 1.0;
  torch::Tensor batch_input_;
  std::vector<std::shared_ptr<Callback>> builtin_, callbacks_;
  std::vector<std::shared_ptr<LossTerm>> terms_;
  std::vector<Callback*> all_;
  bool prunes_ = false;
  TrainContext ctx_;
  // The epoch's sums, on the device (read once per epoch, so steps never wait for the host).
  torch::Tensor loss_sum_, correct_;
  std::vector<torch::Tensor> term_sums_;
  int64_t epoch_samples_ = 0, epoch_steps_ = 0;
  prune::Stage last_stage_ = prune::Stage::Pretraining;
  // The fused Adam (train/fused_adam.h; on CUDA its step counts on the device) and the captured
  // CUDA step (train/step_graph.h).
  std::unique_ptr<FusedAdam> fused_adam_;
  std::unique_ptr<StepGraph> graph_;
  std::string graph_note_;
  std::unique_ptr<FusedMlp> fused_mlp_;
  std::string fused_note_;
  int64_t graph_drops_ = 0;  ///< captured graphs dropped this epoch
};

/// The optimizer named by `options` over parameter groups (one options copy per group); throws
/// sparq::Error for unknown names.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<std::vector<torch::Tensor>> groups,
                                                        const TrainOptions& options);
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options);

/// The device a name asks for ("auto" picks CUDA when there is one); throws sparq::Error.
torch::Device resolve_device(const std::string& name);
/// The archive bytes of a checkpoint file after sparq's checks (its CRC-32 trailer, or an
/// archive's end for checkpoints written before checksums); throws sparq::Error for a damaged file.
std::string read_checkpoint_archive(const std::string& path);

}  // namespace sparq::train
