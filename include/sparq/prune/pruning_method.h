// The interface every pruning method implements (PQuantML's cs, dst, pdp, wanda, autosparse,
// activation_pruning, mdmm; the magnitude family of NNI and SparseML). A method object belongs to
// one PQ weight layer; its state is registered as parameters/buffers of the method module, so
// optimizers see trainable thresholds and checkpoints hold masks.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>

namespace sparq::prune {

/// The stage of the staged training loop a method is in.
enum class Stage { Pretraining, Training, FineTuning };

class PruningMethod : public torch::nn::Module {
 public:
  /// The effective weight: `weight` with the method's (soft or hard) mask applied.
  virtual torch::Tensor apply(const torch::Tensor& weight) = 0;
  /// Extra loss term of the training stage (undefined tensor: none).
  virtual torch::Tensor loss() { return {}; }
  /// The 0/1 mask a deployed model would use.
  virtual torch::Tensor hard_mask(const torch::Tensor& weight) = 0;

  // Hooks called by the Trainer (stage-local epoch `e` of `epochs`).
  virtual void set_stage(Stage stage) { stage_ = stage; }
  virtual void pre_epoch(int64_t e, int64_t epochs) {}
  virtual void post_epoch(int64_t e, int64_t epochs) {}
  virtual void post_round() {}
  // Data taps for methods that look at layer inputs (Wanda) or outputs (activation pruning).
  virtual void collect_input(const torch::Tensor& x) {}
  virtual void collect_output(const torch::Tensor& y) {}

  Stage stage() const { return stage_; }

 protected:
  Stage stage_ = Stage::Pretraining;
};

}  // namespace sparq::prune
