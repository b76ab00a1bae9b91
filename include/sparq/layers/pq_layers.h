// The PQ layers: quantization-aware (and prunable) replacements of Linear, Conv1d/2d, AvgPool1d/2d,
// BatchNorm1d/2d and activations. Each owns a quantizer per target (input, weight, bias, output)
// and, for weight layers, an optional pruning method. Usable directly from C++ or put in place of
// float nodes by compress().
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparq/prune/pruning_method.h"
#include "sparq/quant/quantizer.h"

namespace sparq::layers {

using quant::QuantSpec;

/// Which targets a layer quantizes and how. An unset spec leaves that target in float.
struct QuantTargets {
  std::optional<QuantSpec> input, weight, bias, output;
  bool enable_quantization = true;  ///< global switch: false makes every quantizer the identity
  /// Sample shapes (no batch axis) of the layer's input and output: HGQ data lanes with
  /// per-channel or per-weight widths are built with them.
  std::vector<int64_t> input_shape, output_shape;
};

/// Cost figures of one layer for reports and the EBOPs penalty.
struct LayerCost {
  int64_t weights = 0;       ///< weight elements
  int64_t nonzero = 0;       ///< non-zero effective (pruned and quantized) weights
  double weight_bits = 0;    ///< sum of bit widths over non-zero weights
  double ebops = 0;          ///< effective bit operations (spec §3.6, pruned weights cost 0)
};

/// What all PQ layers share: their quantizers, the input shape seen at the first forward, costs.
class PQLayer : public torch::nn::Module {
 public:
  /// Effective bit operations (spec pquantml §3.6) as a 0-d tensor, differentiable in HGQ bit
  /// widths; 0 before the first forward. `deployed`: pruned weights and weights that quantize to
  /// zero cost nothing (the reported figure); otherwise every weight counts (the loss term).
  virtual torch::Tensor ebops(bool deployed) = 0;
  /// Weights, non-zero weights, weight bits and EBOPs of the deployed layer.
  virtual LayerCost cost();
  /// beta * EBOPs + gamma * (sum of bit widths) of the HGQ quantizers; undefined for a layer
  /// without HGQ quantizers.
  torch::Tensor hgq_loss(double beta);
  bool has_hgq() const;
  /// The quantizers that exist, by target name ("input", "weight", "bias", "output").
  std::vector<std::pair<std::string, quant::Quantizer>> quantizers() const;
  /// Turns every quantizer of the layer on or off.
  void set_quantization(bool enabled);
  const std::vector<int64_t>& input_shape() const { return input_shape_; }

 protected:
  void make_quantizers(const QuantTargets& targets, const std::vector<int64_t>& weight_shape,
                       const std::vector<int64_t>& bias_shape);
  torch::Tensor quantize(const quant::Quantizer& q, const torch::Tensor& x);
  void record_input(const torch::Tensor& x);
  /// Bit widths of a data lane at [1, *input shape] (32 for a float lane).
  torch::Tensor lane_bits(const quant::Quantizer& q) const;
  /// Bit widths of a parameter of `shape` (32 when it is not quantized).
  torch::Tensor param_bits(const quant::Quantizer& q, at::IntArrayRef shape) const;
  /// A 0-d zero on the layer's device (the EBOPs of a layer that has seen no input).
  torch::Tensor zero_cost() const;

  quant::Quantizer input_q{nullptr}, weight_q{nullptr}, bias_q{nullptr}, output_q{nullptr};
  std::vector<int64_t> input_shape_;
};

/// Dense and convolution layers: y = Q_out(op(Q_in(x), Q_w(P(W)) or P(Q_w(W)), Q_b(b))).
class PQWeightLayer : public PQLayer {
 public:
  torch::Tensor weight, bias;  ///< the trainable float parameters ("weight", "bias")
  bool pruning_first = false;  ///< true: quantize(prune(W)); false: prune(quantize(W))
  bool enable_pruning = true;

  /// The weight the layer computes with (pruned and quantized).
  torch::Tensor effective_weight();
  torch::Tensor effective_bias();
  /// Installs a pruning method (registered as child "pruning").
  void set_pruning(std::shared_ptr<prune::PruningMethod> method);
  std::shared_ptr<prune::PruningMethod> pruning() const { return pruning_; }
  LayerCost cost() override;
  torch::Tensor ebops(bool deployed) override;

 protected:
  void init_parameters(const torch::Tensor& w, const torch::Tensor& b);
  /// EBOPs from the weight bits, the input lane bits [1, *input shape] and the mean bias bits.
  virtual torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                                 const torch::Tensor& mean_bits_b) = 0;
  /// 1 where the deployed (evaluation-mode) weight is non-zero.
  torch::Tensor alive_weights();
  std::shared_ptr<prune::PruningMethod> pruning_;
};

class PQDenseImpl : public PQWeightLayer {
 public:
  PQDenseImpl(int64_t in_features, int64_t out_features, bool bias, QuantTargets targets);
  /// From a float Linear: copies its weight and bias.
  PQDenseImpl(const torch::nn::Linear& linear, QuantTargets targets);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                         const torch::Tensor& mean_bits_b) override;
};
TORCH_MODULE(PQDense);

/// PQConv1d and PQConv2d (dimension 1 or 2).
class PQConvImpl : public PQWeightLayer {
 public:
  /// `dims` 1 or 2; kernel/stride/padding/dilation have `dims` entries.
  PQConvImpl(int dims, int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
             std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
             int64_t groups, bool bias, QuantTargets targets);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                         const torch::Tensor& mean_bits_b) override;
  int dims_;
  std::vector<int64_t> stride_, padding_, dilation_;
  int64_t groups_ = 1;
};
TORCH_MODULE(PQConv);

/// Average pooling with quantized input and output (dims 1 or 2).
class PQAvgPoolImpl : public PQLayer {
 public:
  PQAvgPoolImpl(int dims, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                std::vector<int64_t> padding, QuantTargets targets);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor ebops(bool deployed) override;

 private:
  int dims_;
  std::vector<int64_t> kernel_, stride_, padding_;
};
TORCH_MODULE(PQAvgPool);

/// Batch normalisation with quantized input, scale (weight) and shift (bias); running statistics
/// stay float. No output quantizer.
class PQBatchNormImpl : public PQLayer {
 public:
  PQBatchNormImpl(int64_t num_features, double eps, double momentum, QuantTargets targets);
  /// From a float BatchNorm1d/2d: copies weight, bias and the running statistics.
  PQBatchNormImpl(const torch::nn::Module& batchnorm, double eps, double momentum, QuantTargets targets);
  torch::Tensor forward(const torch::Tensor& x);
  LayerCost cost() override;
  torch::Tensor ebops(bool deployed) override;

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  double eps, momentum;
};
TORCH_MODULE(PQBatchNorm);

/// An activation between a quantized input and a quantized output.
/// Functions: relu, tanh (real), hard_tanh (clip to [min, max]), leaky_relu, sigmoid, gelu, softmax.
class PQActivationImpl : public PQLayer {
 public:
  PQActivationImpl(std::string function, QuantTargets targets, bool use_relu_multiplier = false);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor ebops(bool deployed) override;

  const std::string& function() const { return function_; }
  double negative_slope = 0.1015625;   ///< leaky_relu (PQuantML's 13/128)
  double min_val = -1.0, max_val = 1.0;  ///< hard_tanh
  int64_t softmax_dim = 1;
  torch::Tensor multiplier;  ///< learned power-of-two ReLU input scale (exponent), when enabled

 private:
  std::string function_;
};
TORCH_MODULE(PQActivation);

}  // namespace sparq::layers
