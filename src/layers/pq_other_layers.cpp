// PQAvgPool, PQBatchNorm and PQActivation.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <cmath>

#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"

namespace sparq::layers {

// ---- PQAvgPool ----

PQAvgPoolImpl::PQAvgPoolImpl(const PQAvgPoolOptions& o) : options_(o) {
  auto targets = o.targets();
  targets.weight.reset(), targets.bias.reset();
  make_quantizers(targets, {}, {});
}

torch::Tensor PQAvgPoolImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = lane_in(x_in);
  const auto& o = options_;
  auto y = o.dims() == 1 ? torch::avg_pool1d(x, o.kernel_size(), o.stride(), o.padding())
                         : torch::avg_pool2d(x, o.kernel_size(), o.stride(), o.padding());
  return lane_out(y);
}

torch::Tensor PQAvgPoolImpl::ebops(bool) {
  // Σ B_in over the input shape (spec §3.6).
  if (input_shape_.empty()) return zero_cost();
  return lane_bits(input_q).sum();
}

// ---- PQBatchNorm ----

PQBatchNormImpl::PQBatchNormImpl(const PQBatchNormOptions& o) : options_(o) {
  const int64_t n = o.num_features();
  weight = register_parameter("weight", torch::ones({n}));
  bias = register_parameter("bias", torch::zeros({n}));
  running_mean = register_buffer("running_mean", torch::zeros({n}));
  running_var = register_buffer("running_var", torch::ones({n}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kInt64));
  auto targets = o.targets();
  targets.output.reset();  // batch norm has no output quantizer
  make_quantizers(targets, {n}, {n});
}

PQBatchNormImpl::PQBatchNormImpl(const torch::nn::Module& bn, PQBatchNormOptions o)
    : PQBatchNormImpl(o.num_features(bn.named_parameters()["weight"].size(0))) {
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
  auto x = lane_in(x_in);
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked += 1;
  }
  return torch::batch_norm(x, masked("weight", quantize(weight_q, weight)), masked("bias", quantize(bias_q, bias)),
                           running_mean, running_var,
                           is_training(), options_.momentum(), options_.eps(), /*cudnn_enabled=*/true);
}

LayerCost PQBatchNormImpl::cost() {
  torch::NoGradGuard no_grad;
  LayerCost c = PQLayer::cost();
  c.weights = weight.numel();
  auto alive = masked("weight", weight) != 0;
  c.nonzero = alive.sum().item<int64_t>();
  c.weight_bits = param_bits(weight_q, weight.sizes()).mul(alive).sum().item<double>();
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

PQActivationImpl::PQActivationImpl(const PQActivationOptions& o) : options_(o) {
  static const std::vector<std::string> known = {"relu", "tanh", "hard_tanh", "leaky_relu", "sigmoid", "gelu", "softmax"};
  const std::string& function = o.function();
  if (std::find(known.begin(), known.end(), function) == known.end())
    throw Error(fmt::format("PQActivation: unknown function '{}', expected one of {}", function, fmt::join(known, ", ")));
  if (o.min_val() > o.max_val())
    throw Error(fmt::format("PQActivation hard_tanh: min_val {} is above max_val {}", o.min_val(), o.max_val()));
  auto targets = o.targets();
  targets.weight.reset(), targets.bias.reset();
  make_quantizers(targets, {}, {});
  // The multiplier is an exponent: the ReLU input is scaled by 2^round(m), -1 halves it.
  if (o.relu_multiplier() && function == "relu") multiplier = register_parameter("multiplier", torch::full({}, -1.0));
}

torch::Tensor PQActivationImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  torch::Tensor x = x_in;
  if (multiplier.defined()) {
    auto shift = multiplier + (torch::round(multiplier) - multiplier).detach();  // half-to-even, straight through
    x = x * torch::exp2(shift);
  }
  const auto& o = options_;
  const std::string& function = o.function();
  // The ReLU inside the input quantizer's pass where its kind can (HGQ on the CPU); masks of the
  // input lane come between the two, so not with one.
  if (function == "relu" && input_q && input_q->enabled && !input_q->clips_negatives() && !masks_.count("_input_0"))
    return lane_out(input_q->forward_relu(x));
  x = lane_in(x);
  torch::Tensor y;
  // An unsigned saturating input quantizer already maps negatives to 0 (and stops their
  // gradient): ReLU is then the identity and its pass is skipped.
  bool unsigned_input = input_q && input_q->enabled && input_q->clips_negatives();
  if (function == "relu") y = unsigned_input ? x : torch::relu(x);
  else if (function == "tanh") y = torch::tanh(x);
  else if (function == "hard_tanh") y = torch::clamp(x, o.min_val(), o.max_val());
  else if (function == "leaky_relu") y = torch::leaky_relu(x, o.negative_slope());
  else if (function == "sigmoid") y = torch::sigmoid(x);
  else if (function == "gelu") y = torch::gelu(x);
  else y = torch::softmax(x, o.dim());
  return lane_out(y);
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
