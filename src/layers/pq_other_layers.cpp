// PQAvgPool, PQBatchNorm and PQActivation.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"

namespace sparq::layers {

// ---- PQAvgPool ----

PQAvgPoolImpl::PQAvgPoolImpl(int dims, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                             std::vector<int64_t> padding, QuantTargets targets)
    : dims_(dims), kernel_(kernel), stride_(stride.empty() ? kernel : stride), padding_(padding) {
  targets.weight.reset(), targets.bias.reset();
  make_quantizers(targets, {}, {});
}

torch::Tensor PQAvgPoolImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = quantize(input_q, x_in);
  auto y = dims_ == 1 ? torch::avg_pool1d(x, kernel_, stride_, padding_)
                      : torch::avg_pool2d(x, kernel_, stride_, padding_);
  return quantize(output_q, y);
}

torch::Tensor PQAvgPoolImpl::ebops(bool) {
  // Σ B_in over the input shape (spec §3.6).
  if (input_shape_.empty()) return zero_cost();
  return lane_bits(input_q).sum();
}

// ---- PQBatchNorm ----

PQBatchNormImpl::PQBatchNormImpl(int64_t num_features, double eps_, double momentum_, QuantTargets targets)
    : eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", torch::ones({num_features}));
  bias = register_parameter("bias", torch::zeros({num_features}));
  running_mean = register_buffer("running_mean", torch::zeros({num_features}));
  running_var = register_buffer("running_var", torch::ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kInt64));
  targets.output.reset();  // batch norm has no output quantizer
  make_quantizers(targets, {num_features}, {num_features});
}

PQBatchNormImpl::PQBatchNormImpl(const torch::nn::Module& bn, double eps_, double momentum_, QuantTargets targets)
    : PQBatchNormImpl(bn.named_parameters()["weight"].size(0), eps_, momentum_, targets) {
  // Copy everything the float layer learned, running statistics included.
  torch::NoGradGuard no_grad;
  auto params = bn.named_parameters(false);
  auto buffers = bn.named_buffers(false);
  weight.copy_(params["weight"]);
  bias.copy_(params["bias"]);
  running_mean.copy_(buffers["running_mean"]);
  running_var.copy_(buffers["running_var"]);
  num_batches_tracked.copy_(buffers["num_batches_tracked"]);
}

torch::Tensor PQBatchNormImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = quantize(input_q, x_in);
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked += 1;
  }
  return torch::batch_norm(x, quantize(weight_q, weight), quantize(bias_q, bias), running_mean, running_var,
                           is_training(), momentum, eps, /*cudnn_enabled=*/true);
}

LayerCost PQBatchNormImpl::cost() {
  torch::NoGradGuard no_grad;
  LayerCost c = PQLayer::cost();
  c.weights = weight.numel();
  c.nonzero = (weight != 0).sum().item<int64_t>();
  c.weight_bits = param_bits(weight_q, weight.sizes()).mul(weight != 0).sum().item<double>();
  return c;
}

torch::Tensor PQBatchNormImpl::ebops(bool) {
  // Σ B_in·B_w[c] over the input shape + mean(B_b)·prod(input shape) (spec §3.6).
  if (input_shape_.empty()) return zero_cost();
  auto bits_in = lane_bits(input_q);
  std::vector<int64_t> channel_shape(bits_in.dim(), 1);
  channel_shape[1] = weight.size(0);
  auto bits_w = param_bits(weight_q, weight.sizes()).reshape(channel_shape);
  return (bits_in * bits_w).sum() + param_bits(bias_q, bias.sizes()).mean() * static_cast<double>(bits_in.numel());
}

// ---- PQActivation ----

PQActivationImpl::PQActivationImpl(std::string function, QuantTargets targets, bool use_relu_multiplier)
    : function_(std::move(function)) {
  static const std::vector<std::string> known = {"relu", "tanh", "hard_tanh", "leaky_relu", "sigmoid", "gelu", "softmax"};
  if (std::find(known.begin(), known.end(), function_) == known.end())
    throw Error(fmt::format("PQActivation: unknown function '{}', expected one of {}", function_, fmt::join(known, ", ")));
  targets.weight.reset(), targets.bias.reset();
  make_quantizers(targets, {}, {});
  // The multiplier is an exponent: the ReLU input is scaled by 2^round(m), -1 halves it.
  if (use_relu_multiplier && function_ == "relu") multiplier = register_parameter("multiplier", torch::full({}, -1.0));
}

torch::Tensor PQActivationImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  torch::Tensor x = x_in;
  if (multiplier.defined()) {
    auto shift = multiplier + (torch::round(multiplier) - multiplier).detach();  // half-to-even, straight through
    x = x * torch::exp2(shift);
  }
  x = quantize(input_q, x);
  torch::Tensor y;
  // An unsigned saturating input quantizer already maps negatives to 0 (and stops their
  // gradient): ReLU is then the identity and its pass is skipped.
  bool unsigned_input = input_q && input_q->enabled && input_q->spec().k == 0 &&
                        (input_q->spec().overflow == quant::OverflowMode::SAT ||
                         input_q->spec().overflow == quant::OverflowMode::SAT_SYM);
  if (function_ == "relu") y = unsigned_input ? x : torch::relu(x);
  else if (function_ == "tanh") y = torch::tanh(x);
  else if (function_ == "hard_tanh") y = torch::clamp(x, min_val, max_val);
  else if (function_ == "leaky_relu") y = torch::leaky_relu(x, negative_slope);
  else if (function_ == "sigmoid") y = torch::sigmoid(x);
  else if (function_ == "gelu") y = torch::gelu(x);
  else y = torch::softmax(x, softmax_dim);
  return quantize(output_q, y);
}

torch::Tensor PQActivationImpl::ebops(bool) {
  // A lookup table per input value: 1e-4·Σ 2^B_in·B_out (spec §3.6). Without an output quantizer
  // the value leaves at its input width (PQuantML counts its idle output quantizer's bits).
  if (input_shape_.empty() || !input_q || !input_q->enabled) return zero_cost();
  auto bits_in = lane_bits(input_q);
  auto bits_out = output_q && output_q->enabled ? lane_bits(output_q) : bits_in;
  return 1e-4 * (torch::exp2(bits_in) * bits_out).sum();
}

}  // namespace sparq::layers
