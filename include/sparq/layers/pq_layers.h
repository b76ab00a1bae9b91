// The PQ layers: quantization-aware (and prunable) replacements of Linear, Conv1d/2d, AvgPool1d/2d,
// BatchNorm1d/2d and activations. Each owns a quantizer per target (input, weight, bias, output)
// and, for weight layers, an optional pruning method. Usable directly from C++ or put in place of
// float nodes by compress().
#pragma once

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sparq/layers/targets.h"
#include "sparq/prune/pruning_method.h"
#include "sparq/prune/target_mask.h"
#include "sparq/quant/quantizer.h"

namespace sparq::layers {

class HgqBits;  // the fused HGQ loss's view of a layer's bit widths (src/layers/hgq_loss.cpp)

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
  /// without HGQ quantizers. beta as a 0-d tensor: a captured step reads its current value.
  /// The loss and its gradient come from one pass over the widths (fused_hgq_loss: every layer
  /// kind on the CPU, Dense and activations on a GPU); otherwise, or for a quantizer kind it
  /// does not know, from LibTorch ops (composed_hgq_loss, also the fused one's test oracle).
  torch::Tensor hgq_loss(double beta);
  torch::Tensor hgq_loss(const torch::Tensor& beta);
  torch::Tensor composed_hgq_loss(const torch::Tensor& beta);
  /// Undefined where the fused path does not apply (widths that are not float32; on a GPU, the
  /// other layer kinds and widths that neither match their lane nor broadcast one number).
  torch::Tensor fused_hgq_loss(const torch::Tensor& beta);
  bool has_hgq() const;
  /// The quantizers that exist, by target name ("input", "weight", "bias", "output").
  std::vector<std::pair<std::string, quant::Quantizer>> quantizers() const;
  /// The quantizer of `target` when it exists and is enabled; a null holder otherwise.
  quant::Quantizer quantizer(const std::string& target) const;
  /// Turns every quantizer of the layer on or off.
  void set_quantization(bool enabled);
  const std::vector<int64_t>& input_shape() const { return input_shape_; }
  /// Records the sample shape of the input (the first one seen counts; the fused MLP, which runs
  /// the layer without its forward, tells it here).
  void set_input_shape(std::vector<int64_t> sample_shape);
  /// Installs the mask of a target ("weight", "bias", "_input_0", "_output_0") for a model-wide
  /// pruner (registered as child "mask_<target>"); the layer applies it after quantization.
  void set_mask(const std::string& target, std::shared_ptr<prune::TargetMask> mask);
  std::shared_ptr<prune::TargetMask> mask(const std::string& target) const;

 protected:
  /// `x` with the target's mask applied (x itself without one).
  torch::Tensor masked(const std::string& target, const torch::Tensor& x) const;
  /// The input / output lane: quantized, then masked (NNI's order).
  torch::Tensor lane_in(const torch::Tensor& x) { return masked("_input_0", quantize(input_q, x)); }
  torch::Tensor lane_out(const torch::Tensor& y) { return masked("_output_0", quantize(output_q, y)); }
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
  /// The EBOPs of ebops(false) from the bits `b` hands out, the derivative with respect to each
  /// bit added into its grad (the fused HGQ loss; src/layers/hgq_loss.cpp).
  virtual double ebops_gradient(HgqBits& b) = 0;
  /// [1, *input shape]: the shape lane_bits gives.
  std::vector<int64_t> lane_shape() const;

  quant::Quantizer input_q{nullptr}, weight_q{nullptr}, bias_q{nullptr}, output_q{nullptr};
  std::vector<int64_t> input_shape_;
  std::map<std::string, std::shared_ptr<prune::TargetMask>> masks_;
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
  /// Weight and bias as the deployed layer holds them (evaluation mode: frozen formats, hard
  /// masks), without gradient; the bias undefined when the layer has none.
  std::pair<torch::Tensor, torch::Tensor> deployed_parameters();
  /// Folds the batch norm that follows the layer into it, for quantization (spec nni-config
  /// §3.7): the layer computes with w·γ/√(σ²+ε) and (b − μ)·γ/√(σ²+ε) + β (then quantized);
  /// γ and β train with the layer ("bn_weight", "bn_bias"), the running statistics ("bn_mean",
  /// "bn_var") follow the layer's float output in training.
  void fold_batchnorm(const torch::Tensor& gamma, const torch::Tensor& beta, const torch::Tensor& mean,
                      const torch::Tensor& var, double eps, double momentum);
  bool folds_batchnorm() const { return bn_weight.defined(); }
  torch::Tensor bn_weight, bn_bias, bn_mean, bn_var;
  double bn_eps = 1e-5, bn_momentum = 0.1;
  bool fused_relu = false;  ///< a ReLU follower folded in: applied before the output quantizer
  /// The folded nodes (skipped in the graph while folding is on); `fold_active` false: the layer
  /// and its followers compute unfused (SparseML folds at QAT's start; compress.h's
  /// activate_fusion turns it on).
  std::vector<std::string> fused_followers;
  bool fold_active = true;
  /// Installs a pruning method (registered as child "pruning").
  void set_pruning(std::shared_ptr<prune::PruningMethod> method);
  std::shared_ptr<prune::PruningMethod> pruning() const { return pruning_; }
  LayerCost cost() override;
  torch::Tensor ebops(bool deployed) override;

 protected:
  void init_parameters(const torch::Tensor& w, const torch::Tensor& b);
  /// The pruned, masked weight before folding and quantization (the folded batch norm's
  /// statistics see the output it gives).
  torch::Tensor float_weight();
  /// γ/√(σ²+ε) shaped to broadcast over the weight (dim 0).
  torch::Tensor bn_factor() const;
  /// Training with a folded batch norm: its running statistics see `float_output` (no gradient).
  void track_batchnorm(const torch::Tensor& float_output);
  /// The fused ReLU, then the output lane.
  torch::Tensor finish(const torch::Tensor& y) { return lane_out(fused_relu && fold_active ? torch::relu(y) : y); }
  /// EBOPs from the weight bits, the input lane bits [1, *input shape] and the mean bias bits.
  virtual torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                                 const torch::Tensor& mean_bits_b) = 0;
  /// 1 where the deployed (evaluation-mode) weight is non-zero.
  torch::Tensor alive_weights();
  std::shared_ptr<prune::PruningMethod> pruning_;
};

struct PQDenseOptions {
  PQDenseOptions(int64_t in_features, int64_t out_features) : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(QuantTargets, targets);
};

class PQDenseImpl : public PQWeightLayer {
 public:
  explicit PQDenseImpl(const PQDenseOptions& options);
  PQDenseImpl(int64_t in_features, int64_t out_features, bool bias, QuantTargets targets)
      : PQDenseImpl(PQDenseOptions(in_features, out_features).bias(bias).targets(std::move(targets))) {}
  /// From a float Linear: copies its weight and bias.
  PQDenseImpl(const torch::nn::Linear& linear, QuantTargets targets);
  torch::Tensor forward(const torch::Tensor& x);
  const PQDenseOptions& options() const { return options_; }

 private:
  torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                         const torch::Tensor& mean_bits_b) override;
  double ebops_gradient(HgqBits& b) override;
  PQDenseOptions options_;
};
TORCH_MODULE(PQDense);

/// PQConv1d and PQConv2d (dimension 1 or 2); kernel/stride/padding/dilation have `dims` entries.
struct PQConvOptions {
  PQConvOptions(int dims, int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel_size)
      : dims_(dims), in_channels_(in_channels), out_channels_(out_channels), kernel_size_(std::move(kernel_size)),
        stride_(dims, 1), padding_(dims, 0), dilation_(dims, 1) {}
  TORCH_ARG(int, dims);
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(std::vector<int64_t>, kernel_size);
  TORCH_ARG(std::vector<int64_t>, stride);
  TORCH_ARG(std::vector<int64_t>, padding);
  TORCH_ARG(std::vector<int64_t>, dilation);
  TORCH_ARG(int64_t, groups) = 1;
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(QuantTargets, targets);
};

class PQConvImpl : public PQWeightLayer {
 public:
  explicit PQConvImpl(const PQConvOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  const PQConvOptions& options() const { return options_; }

 private:
  torch::Tensor ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                         const torch::Tensor& mean_bits_b) override;
  double ebops_gradient(HgqBits& b) override;
  PQConvOptions options_;
};
TORCH_MODULE(PQConv);

/// Average pooling with quantized input and output (dims 1 or 2); stride defaults to the kernel.
struct PQAvgPoolOptions {
  PQAvgPoolOptions(int dims, std::vector<int64_t> kernel_size)
      : dims_(dims), kernel_size_(kernel_size), stride_(std::move(kernel_size)), padding_(dims, 0) {}
  TORCH_ARG(int, dims);
  TORCH_ARG(std::vector<int64_t>, kernel_size);
  TORCH_ARG(std::vector<int64_t>, stride);
  TORCH_ARG(std::vector<int64_t>, padding);
  TORCH_ARG(QuantTargets, targets);
};

class PQAvgPoolImpl : public PQLayer {
 public:
  explicit PQAvgPoolImpl(const PQAvgPoolOptions& options);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor ebops(bool deployed) override;
  const PQAvgPoolOptions& options() const { return options_; }

 private:
  double ebops_gradient(HgqBits& b) override;
  PQAvgPoolOptions options_;
};
TORCH_MODULE(PQAvgPool);

/// Batch normalisation with quantized input, scale (weight) and shift (bias); running statistics
/// stay float. No output quantizer.
struct PQBatchNormOptions {
  explicit PQBatchNormOptions(int64_t num_features) : num_features_(num_features) {}
  TORCH_ARG(int64_t, num_features);
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, momentum) = 0.1;
  TORCH_ARG(QuantTargets, targets);
};

class PQBatchNormImpl : public PQLayer {
 public:
  explicit PQBatchNormImpl(const PQBatchNormOptions& options);
  /// From a float BatchNorm1d/2d: copies weight, bias and the running statistics.
  PQBatchNormImpl(const torch::nn::Module& batchnorm, PQBatchNormOptions options);
  torch::Tensor forward(const torch::Tensor& x);
  LayerCost cost() override;
  torch::Tensor ebops(bool deployed) override;
  const PQBatchNormOptions& options() const { return options_; }

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  double ebops_gradient(HgqBits& b) override;
  PQBatchNormOptions options_;
};
TORCH_MODULE(PQBatchNorm);

/// An activation between a quantized input and a quantized output.
/// Functions: relu, tanh (real), hard_tanh (clip to [min, max]), leaky_relu, sigmoid, gelu, softmax.
struct PQActivationOptions {
  explicit PQActivationOptions(std::string function) : function_(std::move(function)) {}
  TORCH_ARG(std::string, function);
  TORCH_ARG(double, negative_slope) = 0.1015625;   ///< leaky_relu (PQuantML's 13/128)
  TORCH_ARG(double, min_val) = -1.0;               ///< hard_tanh
  TORCH_ARG(double, max_val) = 1.0;
  TORCH_ARG(int64_t, dim) = 1;                     ///< softmax axis (counting the batch axis)
  TORCH_ARG(bool, relu_multiplier) = false;        ///< learned power-of-two scale before a ReLU
  TORCH_ARG(QuantTargets, targets);
};

class PQActivationImpl : public PQLayer {
 public:
  explicit PQActivationImpl(const PQActivationOptions& options);
  PQActivationImpl(std::string function, QuantTargets targets)
      : PQActivationImpl(PQActivationOptions(std::move(function)).targets(std::move(targets))) {}
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor ebops(bool deployed) override;
  const PQActivationOptions& options() const { return options_; }
  const std::string& function() const { return options_.function(); }

  torch::Tensor multiplier;  ///< learned power-of-two ReLU input scale (exponent), when enabled

 private:
  double ebops_gradient(HgqBits& b) override;
  PQActivationOptions options_;
};
TORCH_MODULE(PQActivation);

}  // namespace sparq::layers
