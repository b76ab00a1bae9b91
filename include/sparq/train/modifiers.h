// The runtime of the Plan's scheduled modifiers (SparseML recipes): SparseML's time model (spec
// sparseml §1.8) and one training callback per modifier, built by its type's registered factory
// (src/train/modifiers/ for learning rate, weight decay, parameters and QAT; src/prune/modifiers/
// for pruning). Within a step the modifiers act as SparseML's optimizer wrapper does (§3.2):
// after backward and before the optimizer step ("update", then "pre-step"), and after it
// ("post-step"), in the Plan's modifier order.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/compress/resolve.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/train/trainer.h"

namespace sparq::train {

/// The fractional epoch of 0-based step k: floor(k / spe) + (k mod spe) / spe.
double epoch_at(int64_t step, int64_t steps_per_epoch);

/// When a modifier acts (spec §1.8.2-1.8.5). `periodic` modifiers update every
/// `update_frequency` epochs (-1 or 0: every step) between start and end; the others only at
/// their start and end.
struct ModifierClock {
  double start = -1, end = -1, frequency = -1;
  bool periodic = false;
  bool started = false, ended = false;
  double last_update = -1;  ///< the actual epoch of the last update (the grid drifts, as in SparseML)

  bool start_pending(double e) const { return !started && !ended && ((start >= 0 && e >= start) || start == -1); }
  bool end_pending(double e) const { return started && !ended && end >= 0 && e >= end; }
  bool update_ready(double e) const;
  /// Records an update at `e` (call after it ran): started / ended flags, last update.
  void mark(double e, bool was_start_pending, bool was_end_pending);
};

class ModifierCallback;

/// What a modifier's factory gets: the modifier, the targets resolve() matched for it, the
/// compressed graph, and state shared by the run's modifiers (the mask composition).
struct ModifierSetup {
  const Modifier& modifier;
  const ModifierTargets& targets;
  models::Graph& graph;
  std::shared_ptr<void>& shared_masks;  ///< prune::ParamMasks, made by the first pruning modifier
};
using ModifierFactory = std::function<std::shared_ptr<ModifierCallback>(ModifierSetup& setup)>;

/// Registers the runtime of a modifier type (called once, by the file that defines it).
bool register_modifier(const std::string& type, ModifierFactory factory);

/// A modifier as a training callback. Subclasses implement the hooks they need; the base class
/// turns the Trainer's steps into SparseML epochs and runs update() when the clock is ready.
class ModifierCallback : public Callback {
 public:
  ModifierCallback(const Modifier& m, bool periodic);
  const Modifier& modifier() const { return m_; }
  const ModifierClock& clock() const { return clock_; }

  /// At the start of training (epoch: where training starts, 0 or the resume point).
  virtual void initialize(Trainer& t, double epoch) {}
  /// A scheduled update at `epoch` (start / end flags as the clock saw them before it).
  virtual void update(Trainer& t, double epoch, bool starting, bool ending) {}
  /// Every step, after update, before the optimizer step (gradients are there).
  virtual void pre_step(Trainer& t, double epoch) {}
  /// Every step, after the optimizer step.
  virtual void post_step(Trainer& t, double epoch) {}
  /// After the last step.
  virtual void finalize(Trainer& t) {}

  void on_train_begin(Trainer& t, const TrainContext& ctx) override;
  void on_after_backward(Trainer& t, const TrainContext& ctx) override;
  void on_step_end(Trainer& t, const TrainContext& ctx) override;
  void on_train_end(Trainer& t, const TrainContext& ctx) override;
  std::string graph_blocker() const override { return "SparseML modifiers act from the host each step"; }
  void save(torch::serialize::OutputArchive& root) override;
  void load(torch::serialize::InputArchive& root) override;

 protected:
  /// Extra state for checkpoints (the clock is saved by the base class).
  virtual void save_state(torch::serialize::OutputArchive& archive) {}
  virtual void load_state(torch::serialize::InputArchive& archive) {}
  Modifier m_;
  ModifierClock clock_;
  std::string key_;  ///< the checkpoint key ("modifier_<index>")
  friend std::vector<std::shared_ptr<Callback>> make_modifiers(const Plan&, const Resolution&, models::Graph&);
};

/// The callbacks of a plan's modifiers, in the plan's order (EpochRangeModifier has none).
/// Throws ConfigError for settings that do not fit the model (a SetParam value of another shape).
std::vector<std::shared_ptr<Callback>> make_modifiers(const Plan& plan, const Resolution& resolution,
                                                      models::Graph& graph);

/// The parameter tensor of (node, target) in a (compressed) graph; throws sparq::Error.
torch::Tensor parameter_of(const models::Graph& graph, const std::string& node, const std::string& target);

}  // namespace sparq::train
