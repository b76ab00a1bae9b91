// FusedMlp: the training forward and backward of a chain of Dense, activation and quantizer
// layers (the hls4ml regime: widths <= 128) in a few kernels instead of a few hundred: one for the
// forward, one for the backward with every weight, bias and trained-width gradient, one to add the
// tiles' partial sums (src/train/fused_mlp_tile.h says how a tile is done). The weight and bias
// quantizers and the loss stay LibTorch ops; the kernels take the quantized weights and give
// their gradients back through autograd, so the rest of the step is unchanged.
// training.fused_mlp (off by default, auto, on) chooses it; on the CPU the same tile code runs
// thread after thread (with `on`: slower than the general path, it is the kernels' twin for tests).
#pragma once

#include <torch/types.h>

#include <string>

#include "sparq/models/graph.h"

namespace sparq::train {

class FusedMlp {
 public:
  explicit FusedMlp(models::Graph model) : model_(std::move(model)) {}
  /// Empty when the model's training forward of `x` runs fused, else why not: every node a Dense
  /// (PQDense or Linear) or ReLU activation (PQActivation or ReLU) taking the previous one's
  /// output, quantizers of the fixed-point kinds (fixed per-tensor data lanes; HGQ lanes per
  /// feature or per tensor, SAT or SAT_SYM; any weight and bias quantizer), no pruning, masks or
  /// folded batch norms, widths <= 128, float32 on a GPU (or on the CPU with `allow_cpu`).
  std::string refusal(const torch::Tensor& x, bool allow_cpu);
  /// The model's training output for x, with the gradients model->forward(x) gives to every
  /// parameter and trained width. Call it where refusal(x, ...) just gave nothing: it walks the
  /// graph once more for the weights, and is undefined only where those refuse (a weight of
  /// another dtype or device; the reason in `why`).
  torch::Tensor forward(const torch::Tensor& x, std::string* why = nullptr);

 private:
  struct Built;
  /// Walks the graph into `b` (with_tensors: also the quantized weights and the kernels'
  /// pointers); the refusal, or empty.
  std::string build(const torch::Tensor& x, bool with_tensors, Built& b);

  models::Graph model_;
};

}  // namespace sparq::train
