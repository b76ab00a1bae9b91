// The interface every pruning method implements (PQuantML's cs, dst, pdp, wanda, autosparse,
// activation_pruning, mdmm; the magnitude family of NNI and SparseML). A method object belongs to
// one PQ weight layer; its state is registered as parameters/buffers of the method module, so
// optimizers see trainable thresholds and checkpoints hold masks. The Trainer calls the hooks
// (spec pquantml-pruning §1.4-1.5); the layer calls apply() and the data taps.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <optional>

namespace sparq::prune {

/// The stage of the staged training loop a method is in.
enum class Stage { Pretraining, Training, FineTuning };
const char* to_string(Stage stage);

class PruningMethod : public torch::nn::Module {
 public:
  /// The effective weight: `weight` with the method's (soft or hard) mask applied.
  virtual torch::Tensor apply(const torch::Tensor& weight) = 0;
  /// Extra loss term; the Trainer adds it in the training stage of pruning-enabled layers
  /// (undefined tensor: none).
  virtual torch::Tensor loss() { return {}; }
  /// The 0/1 mask a deployed model would use.
  virtual torch::Tensor hard_mask(const torch::Tensor& weight) = 0;

  // Stage changes, called once each: pretraining -> training (also with 0 pretraining epochs),
  // between rounds (by the rewind policy), training -> fine-tuning (also with 0 fine-tuning epochs).
  virtual void post_pretrain() { stage_ = Stage::Training; }
  virtual void post_round() {}
  virtual void pre_finetune() { stage_ = Stage::FineTuning; }
  // Every epoch of every stage; `e` is the stage-local epoch (restarting each round) of `epochs`.
  virtual void pre_epoch(int64_t e, int64_t epochs) {}
  virtual void post_epoch(int64_t e, int64_t epochs) {}
  /// After post_epoch, for pruning-enabled layers, with the raw (unpruned) weight.
  virtual void update_mask(const torch::Tensor& raw_weight) {}
  // Data taps for methods that look at layer inputs (Wanda) or outputs (activation pruning); called
  // in every forward of the layer, also when its pruning is disabled. `effective_weight` is the
  // (detached) weight this forward computes with.
  virtual void collect_input(const torch::Tensor& x, const torch::Tensor& effective_weight) {}
  virtual void collect_output(const torch::Tensor& y) {}

  /// Global budget (PDP, Wanda): the target sparsity over all layers, when the method wants one.
  virtual std::optional<double> budget_target() const { return std::nullopt; }
  /// This layer's share of the global budget: the fraction of its weights to prune.
  virtual void set_budget(double layer_sparsity) {}

  Stage stage() const { return stage_; }
  /// Puts the method in `stage` without running hooks (a resumed run: the checkpoint holds the
  /// state the hooks produced, not the stage).
  void set_stage(Stage stage) { stage_ = stage; }

 protected:
  Stage stage_ = Stage::Pretraining;
};

}  // namespace sparq::prune
