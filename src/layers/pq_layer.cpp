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

quant::Quantizer PQLayer::quantizer(const std::string& target) const {
  for (const auto& [name, q] : quantizers())
    if (name == target && q->enabled) return q;
  return quant::Quantizer{nullptr};
}

void PQLayer::set_quantization(bool enabled) {
  for (auto& [name, q] : quantizers()) q->enabled = enabled;
}

void PQLayer::make_quantizers(const QuantTargets& t, const std::vector<int64_t>& weight_shape,
                              const std::vector<int64_t>& bias_shape) {
  if (t.input) input_q = register_module("input_quantizer", quant::make_quantizer(*t.input, t.input_shape, true));
  if (t.weight && !weight_shape.empty())
    weight_q = register_module("weight_quantizer", quant::make_quantizer(*t.weight, weight_shape, false));
  if (t.bias && !bias_shape.empty())
    bias_q = register_module("bias_quantizer", quant::make_quantizer(*t.bias, bias_shape, false));
  if (t.output) output_q = register_module("output_quantizer", quant::make_quantizer(*t.output, t.output_shape, true));
  set_quantization(t.enable_quantization);
}

torch::Tensor PQLayer::quantize(const quant::Quantizer& q, const torch::Tensor& x) {
  if (!q) return x;
  quant::Quantizer holder = q;  // forward may update dynamic bit widths
  return holder->forward(x);
}

void PQLayer::record_input(const torch::Tensor& x) { set_input_shape({x.sizes().begin() + 1, x.sizes().end()}); }

void PQLayer::set_input_shape(std::vector<int64_t> sample_shape) {
  if (input_shape_.empty()) input_shape_ = std::move(sample_shape);
}

std::vector<int64_t> PQLayer::lane_shape() const {
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), input_shape_.begin(), input_shape_.end());
  return shape;
}

torch::Tensor PQLayer::lane_bits(const quant::Quantizer& q) const { return param_bits(q, lane_shape()); }

namespace {
/// The device of a module's state (its quantizers' buffers, its parameters); CPU without state.
torch::Device device_of(const torch::nn::Module& m) {
  for (const auto& b : m.buffers()) return b.device();
  for (const auto& p : m.parameters()) return p.device();
  return torch::kCPU;
}
}  // namespace

torch::Tensor PQLayer::param_bits(const quant::Quantizer& q, at::IntArrayRef shape) const {
  if (q && q->enabled) return q->total_bits().expand(shape);
  return torch::full(shape, 32.0f, torch::TensorOptions().device(device_of(*this)));  // a float lane
}

torch::Tensor PQLayer::zero_cost() const { return torch::zeros({}, torch::TensorOptions().device(device_of(*this))); }

bool PQLayer::has_hgq() const {
  for (const auto& [name, q] : quantizers())
    if (q->trains_widths() && q->enabled) return true;
  return false;
}

torch::Tensor PQLayer::hgq_loss(double beta) { return hgq_loss(torch::tensor(beta, torch::kFloat32)); }

torch::Tensor PQLayer::hgq_loss(const torch::Tensor& beta) {
  if (!has_hgq()) return {};
  auto fused = fused_hgq_loss(beta);
  return fused.defined() ? fused : composed_hgq_loss(beta);
}

torch::Tensor PQLayer::composed_hgq_loss(const torch::Tensor& beta) {
  if (!has_hgq()) return {};
  torch::Tensor loss = beta * ebops(/*deployed=*/false);
  for (const auto& [name, q] : quantizers()) {
    auto term = q->enabled ? q->bits_loss() : torch::Tensor();
    if (term.defined()) loss = loss + term;
  }
  return loss;
}

LayerCost PQLayer::cost() {
  torch::NoGradGuard no_grad;
  LayerCost c;
  c.ebops = ebops(/*deployed=*/true).item<double>();
  return c;
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

void PQLayer::set_mask(const std::string& target, std::shared_ptr<prune::TargetMask> mask) {
  const std::string child = "mask_" + target;
  if (masks_.count(target)) unregister_module(child);
  masks_[target] = mask;
  register_module(child, mask);
}

std::shared_ptr<prune::TargetMask> PQLayer::mask(const std::string& target) const {
  auto it = masks_.find(target);
  return it == masks_.end() ? nullptr : it->second;
}

torch::Tensor PQLayer::masked(const std::string& target, const torch::Tensor& x) const {
  auto it = masks_.find(target);
  return it == masks_.end() || !x.defined() ? x : it->second->apply(x);
}

torch::Tensor PQWeightLayer::bn_factor() const {
  std::vector<int64_t> view(static_cast<size_t>(weight.dim()), 1);
  view[0] = -1;
  return (bn_weight / torch::sqrt(bn_var + bn_eps)).view(view);
}

void PQWeightLayer::fold_batchnorm(const torch::Tensor& gamma, const torch::Tensor& beta, const torch::Tensor& mean,
                                   const torch::Tensor& var, double eps, double momentum) {
  torch::NoGradGuard no_grad;
  bn_weight = register_parameter("bn_weight", gamma.detach().clone());
  bn_bias = register_parameter("bn_bias", beta.detach().clone());
  bn_mean = register_buffer("bn_mean", mean.detach().clone());
  bn_var = register_buffer("bn_var", var.detach().clone());
  bn_eps = eps, bn_momentum = momentum;
}

void PQWeightLayer::track_batchnorm(const torch::Tensor& float_output) {
  if (!folds_batchnorm() || !fold_active || !is_training()) return;
  torch::NoGradGuard no_grad;
  torch::batch_norm(float_output, bn_weight, bn_bias, bn_mean, bn_var, /*training=*/true, bn_momentum, bn_eps, false);
}

torch::Tensor PQWeightLayer::float_weight() {
  torch::NoGradGuard no_grad;
  return masked("weight", pruning_ && enable_pruning ? pruning_->apply(weight) : weight);
}

torch::Tensor PQWeightLayer::effective_weight() {
  auto prune = [&](const torch::Tensor& w) { return pruning_ && enable_pruning ? pruning_->apply(w) : w; };
  const auto w = folds_batchnorm() && fold_active ? weight * bn_factor() : weight;
  // pruning first: the mask too comes before the quantizer (its observer sees the zeros, as SparseML's QAT does)
  if (pruning_first) return quantize(weight_q, masked("weight", prune(w)));
  return masked("weight", prune(quantize(weight_q, w)));
}

torch::Tensor PQWeightLayer::effective_bias() {
  if (folds_batchnorm() && fold_active) {
    auto b = bias.defined() ? bias : torch::zeros_like(bn_mean);
    auto folded = (b - bn_mean) * bn_factor().reshape({-1}) + bn_bias;
    return masked("bias", quantize(bias_q, folded));
  }
  return bias.defined() ? masked("bias", quantize(bias_q, bias)) : bias;
}

std::pair<torch::Tensor, torch::Tensor> PQWeightLayer::deployed_parameters() {
  torch::NoGradGuard no_grad;
  bool was_training = is_training();
  eval();
  std::pair<torch::Tensor, torch::Tensor> out{effective_weight(), effective_bias()};
  train(was_training);
  return out;
}

torch::Tensor PQWeightLayer::alive_weights() { return (deployed_parameters().first != 0).to(torch::kFloat32); }

LayerCost PQWeightLayer::cost() {
  torch::NoGradGuard no_grad;
  auto alive = alive_weights();
  LayerCost c;
  c.weights = alive.numel();
  c.nonzero = alive.sum().item<int64_t>();
  c.weight_bits = (param_bits(weight_q, weight.sizes()) * alive).sum().item<double>();
  c.ebops = ebops(/*deployed=*/true).item<double>();
  return c;
}

torch::Tensor PQWeightLayer::ebops(bool deployed) {
  if (input_shape_.empty()) return zero_cost();
  auto bits_w = param_bits(weight_q, weight.sizes());
  if (deployed) bits_w = bits_w * alive_weights();  // pruned and zero-quantized weights cost nothing
  auto mean_b = bias.defined() ? param_bits(bias_q, bias.sizes()).mean() : zero_cost();
  return ebops_of(bits_w, lane_bits(input_q), mean_b);
}

// ---- PQDense ----

PQDenseImpl::PQDenseImpl(const PQDenseOptions& o)
    : PQDenseImpl(torch::nn::Linear(torch::nn::LinearOptions(o.in_features(), o.out_features()).bias(o.bias())),
                  o.targets()) {}

PQDenseImpl::PQDenseImpl(const torch::nn::Linear& linear, QuantTargets targets)
    : options_(PQDenseOptions(linear->options.in_features(), linear->options.out_features())
                   .bias(linear->options.bias())
                   .targets(targets)) {
  init_parameters(linear->weight, linear->options.bias() ? linear->bias : torch::Tensor());
  make_quantizers(targets, weight.sizes().vec(), bias.defined() ? bias.sizes().vec() : std::vector<int64_t>{});
}

torch::Tensor PQDenseImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = lane_in(x_in);
  if (folds_batchnorm() && fold_active && is_training())
    track_batchnorm(torch::linear(x.detach(), float_weight().detach(), bias.defined() ? bias.detach() : bias));
  auto w = effective_weight();
  if (pruning_) pruning_->collect_input(x, w.detach());
  auto y = finish(torch::linear(x, w, effective_bias()));
  if (pruning_) pruning_->collect_output(y);
  return y;
}

torch::Tensor PQDenseImpl::ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                                    const torch::Tensor& mean_b) {
  // Σ_{pos,o,i} B_in[pos,i]·B_w[o,i] + mean(B_b)·positions·out (spec §3.6); positions = all but the
  // last axis of the sample.
  auto in_sum = bits_in.reshape({-1, weight.size(1)}).sum(0);  // Σ over positions, per input feature
  double positions = static_cast<double>(bits_in.numel() / weight.size(1));
  return (bits_w * in_sum).sum() + mean_b * (positions * weight.size(0));
}

// ---- PQConv ----

PQConvImpl::PQConvImpl(const PQConvOptions& o) : options_(o) {
  // Initial values as LibTorch's own convolution initialises them.
  const auto& kernel = o.kernel_size();
  torch::Tensor w, b;
  if (o.dims() == 1) {
    torch::nn::Conv1d c(torch::nn::Conv1dOptions(o.in_channels(), o.out_channels(), kernel[0]).groups(o.groups()).bias(o.bias()));
    w = c->weight, b = o.bias() ? c->bias : torch::Tensor();
  } else {
    torch::nn::Conv2d c(torch::nn::Conv2dOptions(o.in_channels(), o.out_channels(), {kernel[0], kernel[1]})
                            .groups(o.groups())
                            .bias(o.bias()));
    w = c->weight, b = o.bias() ? c->bias : torch::Tensor();
  }
  init_parameters(w, b);
  make_quantizers(o.targets(), weight.sizes().vec(), bias.defined() ? bias.sizes().vec() : std::vector<int64_t>{});
}

torch::Tensor PQConvImpl::forward(const torch::Tensor& x_in) {
  record_input(x_in);
  auto x = lane_in(x_in);
  const auto& o = options_;
  auto conv = [&](const torch::Tensor& in, const torch::Tensor& w, const torch::Tensor& b) {
    return o.dims() == 1 ? torch::conv1d(in, w, b, o.stride(), o.padding(), o.dilation(), o.groups())
                         : torch::conv2d(in, w, b, o.stride(), o.padding(), o.dilation(), o.groups());
  };
  if (folds_batchnorm() && fold_active && is_training())
    track_batchnorm(conv(x.detach(), float_weight().detach(), bias.defined() ? bias.detach() : bias));
  auto w = effective_weight(), b = effective_bias();
  if (pruning_) pruning_->collect_input(x, w.detach());
  auto y = finish(conv(x, w, b));
  if (pruning_) pruning_->collect_output(y);
  return y;
}

torch::Tensor PQConvImpl::ebops_of(const torch::Tensor& bits_w, const torch::Tensor& bits_in,
                                   const torch::Tensor& mean_b) {
  // Σ_{o,c} max_spatial(B_in)[c]·Σ_kernel B_w[o,c] + mean(B_b)·prod(input shape) (spec §3.6), per
  // group: output channel o of group g reads input channels g·C/g ... (g+1)·C/g - 1.
  const int64_t channels = bits_in.size(1), out = weight.size(0), groups_ = options_.groups();
  auto in_max = std::get<0>(bits_in.reshape({channels, -1}).max(1)).reshape({groups_, 1, channels / groups_});
  auto w_sum = bits_w.reshape({out, channels / groups_, -1}).sum(2).reshape({groups_, out / groups_, -1});
  auto ebops = (w_sum * in_max).sum();
  return bias.defined() ? ebops + mean_b * static_cast<double>(bits_in.numel()) : ebops;
}

}  // namespace sparq::layers
