// What all PQ layers share, and the weight layers (PQDense, PQConv1d/2d).
#include <fmt/format.h>
#include <torch/torch.h>

#include "sparq/error.h"
#include "sparq/layers/pq_layers.h"

namespace sparq::layers {

std::vector<std::pair<std::string, quant::Quantizer>> PQLayer::quantizers() const {
  std::vector<std::pair<std::string, quant::Quantizer>> out;
  if (input_q) out.emplace_back("input", input_q);
  if (weight_q) out.emplace_back("weight", weight_q);
  if (bias_q) out.emplace_back("bias", bias_q);
  if (output_q) out.emplace_back("output", output_q);
  return out;
}

void PQLayer::set_quantization(bool enabled) {
  for (auto& [name, q] : quantizers()) q->enabled = enabled;
}

void PQLayer::make_quantizers(const QuantTargets& t, const std::vector<int64_t>& weight_shape,
                              const std::vector<int64_t>& bias_shape) {
  if (t.input) input_q = register_module("input_quantizer", quant::Quantizer(*t.input, std::vector<int64_t>{}, true));
  if (t.weight && !weight_shape.empty())
    weight_q = register_module("weight_quantizer", quant::Quantizer(*t.weight, weight_shape, false));
  if (t.bias && !bias_shape.empty())
    bias_q = register_module("bias_quantizer", quant::Quantizer(*t.bias, bias_shape, false));
  if (t.output) output_q = register_module("output_quantizer", quant::Quantizer(*t.output, std::vector<int64_t>{}, true));
  set_quantization(t.enable_quantization);
}

torch::Tensor PQLayer::quantize(const quant::Quantizer& q, const torch::Tensor& x) {
  if (!q) return x;
  quant::Quantizer holder = q;  // forward may update dynamic bit widths
  return holder->forward(x);
}

void PQLayer::record_input(const torch::Tensor& x) {
  if (input_shape_.empty()) input_shape_.assign(x.sizes().begin() + 1, x.sizes().end());
}

double PQLayer::lane_bits(const quant::Quantizer& q) const {
  if (!q || !q->enabled) return 32.0;  // a float lane
  return q->total_bits().mean().item<double>();
}

void PQWeightLayer::init_parameters(const torch::Tensor& w, const torch::Tensor& b) {
  weight = register_parameter("weight", w.detach().clone());
  if (b.defined()) bias = register_parameter("bias", b.detach().clone());
}

void PQWeightLayer::set_pruning(std::shared_ptr<prune::PruningMethod> method) {
  if (pruning_) unregister_module("pruning");
  pruning_ = method;
  if (method) register_module("pruning", method);
}

torch::Tensor PQWeightLayer::effective_weight() {
  auto prune = [&](const torch::Tensor& w) { return pruning_ && enable_pruning ? pruning_->apply(w) : w; };
  return pruning_first ? quantize(weight_q, prune(weight)) : prune(quantize(weight_q, weight));
}

torch::Tensor PQWeightLayer::effective_bias() { return bias.defined() ? quantize(bias_q, bias) : bias; }

LayerCost PQWeightLayer::cost() {
  torch::NoGradGuard no_grad;
  bool was_training = is_training();
  eval();  // the deployed weight: frozen formats, hard masks
  auto w = effective_weight();
  train(was_training);
  LayerCost c;
  c.weights = w.numel();
  auto alive = (w != 0).to(torch::kFloat32);
  c.nonzero = alive.sum().item<int64_t>();
  torch::Tensor bits = weight_q && weight_q->enabled ? weight_q->total_bits().expand(w.sizes()).to(torch::kFloat32)
                                                     : torch::full(w.sizes(), 32.0f);
  auto bits_w = bits * alive;  // pruned and zero-quantized weights cost nothing
  c.weight_bits = bits_w.sum().item<double>();
  double mean_b = !bias.defined() ? 0.0 : bias_q && bias_q->enabled ? bias_q->total_bits().mean().item<double>() : 32.0;
  c.ebops = input_shape_.empty() ? 0.0 : ebops_of(bits_w, lane_bits(input_q), mean_b);
  return c;
}

// ---- PQDense ----

PQDenseImpl::PQDenseImpl(int64_t in_features, int64_t out_features, bool has_bias, QuantTargets targets)
    : PQDenseImpl(torch::nn::Linear(torch::nn::LinearOptions(in_features, out_features).bias(has_bias)), targets) {}

PQDenseImpl::PQDenseImpl(const torch::nn::Linear& linear, QuantTargets targets) {
  init_parameters(linear->weight, linear->options.bias() ? linear->bias : torch::Tensor());
  make_quantizers(targets, weight.sizes().vec(), bias.defined() ? bias.sizes().vec() : std::vector<int64_t>{});
}

torch::Tensor PQDenseImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = quantize(input_q, x_in);
  auto w = effective_weight();
  if (pruning_) pruning_->collect_input(x, w.detach());
  auto y = quantize(output_q, torch::linear(x, w, effective_bias()));
  if (pruning_) pruning_->collect_output(y);
  return y;
}

double PQDenseImpl::ebops_of(const torch::Tensor& bits_w, double bits_in, double mean_b) {
  // Σ_{pos,o,i} B_in·B_w + mean(B_b)·positions·out (spec §3.6); positions = all but the last axis.
  double positions = 1;
  for (size_t d = 0; d + 1 < input_shape_.size(); ++d) positions *= input_shape_[d];
  return positions * (bits_in * bits_w.sum().item<double>() + mean_b * weight.size(0));
}

// ---- PQConv ----

PQConvImpl::PQConvImpl(int dims, int64_t in_channels, int64_t out_channels, std::vector<int64_t> kernel,
                       std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation,
                       int64_t groups, bool has_bias, QuantTargets targets)
    : dims_(dims), stride_(stride), padding_(padding), dilation_(dilation), groups_(groups) {
  // Initial values as LibTorch's own convolution initialises them.
  torch::Tensor w, b;
  if (dims == 1) {
    torch::nn::Conv1d c(torch::nn::Conv1dOptions(in_channels, out_channels, kernel[0]).groups(groups).bias(has_bias));
    w = c->weight, b = has_bias ? c->bias : torch::Tensor();
  } else {
    torch::nn::Conv2d c(torch::nn::Conv2dOptions(in_channels, out_channels, {kernel[0], kernel[1]}).groups(groups).bias(has_bias));
    w = c->weight, b = has_bias ? c->bias : torch::Tensor();
  }
  init_parameters(w, b);
  make_quantizers(targets, weight.sizes().vec(), bias.defined() ? bias.sizes().vec() : std::vector<int64_t>{});
}

torch::Tensor PQConvImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = quantize(input_q, x_in);
  auto w = effective_weight(), b = effective_bias();
  if (pruning_) pruning_->collect_input(x, w.detach());
  auto y = dims_ == 1 ? torch::conv1d(x, w, b, stride_, padding_, dilation_, groups_)
                      : torch::conv2d(x, w, b, stride_, padding_, dilation_, groups_);
  y = quantize(output_q, y);
  if (pruning_) pruning_->collect_output(y);
  return y;
}

double PQConvImpl::ebops_of(const torch::Tensor& bits_w, double bits_in, double mean_b) {
  // Σ_{o,c} B_in[c]·Σ_kernel B_w[o,c] + mean(B_b)·prod(input shape) (spec §3.6).
  double positions = 1;
  for (auto d : input_shape_) positions *= d;
  return bits_in * bits_w.sum().item<double>() + (bias.defined() ? mean_b * positions : 0.0);
}

}  // namespace sparq::layers
