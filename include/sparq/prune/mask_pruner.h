// Model-wide pruners: one object per run that sees every target the Plan gives mask settings to,
// computes its metric (|w|, block norms, FPGM distances, Slim factors, Taylor scores, Movement
// scores), and writes one mask generation into the layers' TargetMasks at the steps its schedule
// says. NNI's pruner classes (spec nni-config §2) are the registered ones, one file each in
// src/prune/pruners/; the job chooses one (`compression: {pruner: {type: ...}}`). A pruner is a
// training callback: it counts optimizer steps from its start epoch, may train its own factors
// with a private optimizer before the main step, and may add a loss term.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "sparq/compress/resolve.h"
#include "sparq/models/graph.h"
#include "sparq/plan.h"
#include "sparq/prune/masks.h"
#include "sparq/prune/methods.h"
#include "sparq/prune/target_mask.h"
#include "sparq/train/trainer.h"

namespace sparq::prune {

/// One target of a pruner: the layer parameter and its mask holder.
struct PrunerTarget {
  std::string module, target;
  MaskSetting setting;          ///< granularity resolved to the pruner's default
  std::vector<int64_t> kernel;  ///< its block kernel
  torch::Tensor tensor;         ///< the raw (unmasked) parameter; undefined for inputs/outputs
  std::shared_ptr<TargetMask> mask;
  /// The target's shape (inputs/outputs: [1, sample shape]), as its installed mask has it.
  std::vector<int64_t> shape() const { return mask->mask.sizes().vec(); }
  std::string what() const { return module + "." + target; }
};

class MaskPruner : public train::LossTerm {
 public:
  MaskPruner(PruningSpec spec, std::vector<PrunerTarget> targets);
  std::string name() const override { return "pruner_loss"; }

  /// One mask generation from the current metrics, with the goals (ratios, thresholds) scaled by
  /// the goal factor; written into the targets' masks.
  void generate();
  /// The scheduled pruners' knob: this generation's goals are factor x the configured ones.
  void set_goal_factor(double factor) { goal_factor_ = factor; }
  const std::vector<PrunerTarget>& targets() const { return targets_; }
  const PruningSpec& spec() const { return spec_; }
  /// The optimizer step (counted from start_epoch) of this run's context; < 0 before the start.
  int64_t local_step(const train::TrainContext& ctx) const;

  // The pruner's schedule, in its own steps (s: the 0-based step about to run or just run).
  /// Before step s; the one-shot pruners generate at s = 0.
  virtual void before_step(int64_t s) {
    if (s == 0) generate();
  }
  /// After backward of step s (gradients present), before the main optimizer step.
  virtual void after_backward(int64_t s) {}
  /// After the optimizer step of step s (s + 1 steps done).
  virtual void after_step(int64_t s) {}
  /// The loss term at step s (undefined: none).
  virtual torch::Tensor loss(int64_t s) { return {}; }
  /// The block-space metric of an active target (smaller: pruned first).
  virtual torch::Tensor metric(const PrunerTarget& t) = 0;

  /// The steps the schedule needs to produce its final masks (training must have them).
  virtual int64_t steps_needed() const { return 1; }

  // Callback and LossTerm: translate the Trainer's steps into the pruner's.
  void on_train_begin(train::Trainer& trainer, const train::TrainContext& ctx) override;
  void on_step_begin(train::Trainer& trainer, const train::TrainContext& ctx) override;
  void on_after_backward(train::Trainer& trainer, const train::TrainContext& ctx) override;
  void on_step_end(train::Trainer& trainer, const train::TrainContext& ctx) override;
  torch::Tensor compute(train::Trainer& trainer, const train::TrainContext& ctx) override;
  std::string graph_blocker() const override { return "NNI pruners update their masks from the host each step"; }

 protected:
  PruningSpec spec_;
  std::vector<PrunerTarget> targets_;
  double goal_factor_ = 1.0;
  int64_t start_epoch_ = 0;  ///< spec_'s start_epoch, read once (the step hooks use it)
};

using PrunerFactory = std::function<std::shared_ptr<MaskPruner>(const PruningSpec& spec, std::vector<PrunerTarget> targets)>;

struct PrunerInfo {
  std::string name;                 ///< NNI's class name: "L1NormPruner"
  std::string summary;              ///< one line, for docs and errors
  std::vector<ParamInfo> params;    ///< the constructor arguments (plus the shared start_epoch)
  MaskGranularity::Kind default_granularity = MaskGranularity::Kind::OutChannel;
  bool wraps_pruner = false;        ///< Linear/AGP: `pruner: {type: ...}` is the pruner they schedule
  PrunerFactory make;
};

/// Registers a pruner (called once, by its file); adds the shared `start_epoch` argument.
bool register_pruner(PrunerInfo info);
const PrunerInfo* find_pruner(const std::string& name);
/// Every pruner name, sorted.
std::vector<std::string> pruner_names();

/// The plan's pruner for a compressed model: the targets with mask settings, each with a
/// TargetMask on its layer (install_masks() put them there). Throws ConfigError for settings the
/// pruner cannot use (FPGM without blocks, Slim with an `add` target, a granularity that does not
/// fit a tensor).
std::shared_ptr<MaskPruner> make_pruner(const PruningSpec& pruner, const Resolution& resolution,
                                        const models::Graph& graph);

/// Puts an all-ones TargetMask on every parameter target that has mask settings (compress() calls
/// it, so checkpoints find the buffers before training).
void install_masks(const Resolution& resolution, models::Graph& graph);

/// The spec's sparsity goal keys scaled by `factor` (ratios clamped to [0, 1]).
MaskSetting scaled_goals(const MaskSetting& s, double factor);

}  // namespace sparq::prune
