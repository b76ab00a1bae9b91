// A target's mask on a PQ layer, for the model-wide pruners (NNI, SparseML): the 0/1 mask and
// how it applies (mul: x * mask; add: x + (0 kept, -1000 masked), NNI's mask before a softmax),
// plus the per-block factor Slim trains (x * gamma) or the score Movement trains (the mask's
// gradient passed straight through to it). All are buffers of the layer's child
// "mask_<target>", so checkpoints and model.pt hold them and the main optimizer does not see them.
#pragma once

#include <torch/nn/module.h>

#include <string>
#include <vector>

namespace sparq::prune {

class TargetMask : public torch::nn::Module {
 public:
  enum class Apply { Mul, Add, Bypass };
  /// `apply_method`: "mul", "add" or "bypass" (throws sparq::Error otherwise).
  TargetMask(const std::vector<int64_t>& shape, const std::string& apply_method);
  /// The masked tensor (the factor and the score take part when they exist).
  torch::Tensor apply(const torch::Tensor& x) const;
  /// A per-block factor, ones, of the shape `kernel` cuts the target into (Slim's gamma).
  void add_factor(const std::vector<int64_t>& kernel);
  /// A per-block score, zeros (Movement).
  void add_score(const std::vector<int64_t>& kernel);

  torch::Tensor mask, factor, score;
  std::vector<int64_t> kernel;  ///< of the factor or score
  Apply apply_method = Apply::Mul;
};

}  // namespace sparq::prune
